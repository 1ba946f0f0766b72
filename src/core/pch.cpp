// Translation unit that owns the precompiled header (see cmake/FoldtronTargets.cmake).
#include "core/pch.h"
