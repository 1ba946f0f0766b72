// The recipe tasks by config (see tasks.h).
#include "tasks/tasks.h"

#include "tasks/unmt/translation_task.h"

namespace foldtron {

TaskFactory task_factory(const Config& config) {
  if (config.translation.enabled()) {
    return [](const Config& c) -> std::unique_ptr<Task> { return std::make_unique<TranslationTask>(c); };
  }
  return {};
}

}  // namespace foldtron
