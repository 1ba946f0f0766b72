// Allowed: training may include every layer below it.
#include "core/errors.h"
#include "models/model.h"
