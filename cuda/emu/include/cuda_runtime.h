// The emulated device: see cuda/emu/runtime_api.h.
#pragma once
#include "../runtime_api.h"
