// The tasks of the recipes, chosen by the config: the translation task when translation.data is
// set; otherwise none, and the trainer runs the language-model task.
#pragma once

#include "training/trainer.h"

namespace foldtron {

TaskFactory task_factory(const Config& config);

}  // namespace foldtron
