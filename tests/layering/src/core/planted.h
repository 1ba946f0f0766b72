// A planted violation for the layering check's own test: core may not include models.
#pragma once
#include "models/model.h"
