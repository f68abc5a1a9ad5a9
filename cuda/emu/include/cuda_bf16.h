// The emulated device: half types live in cuda/emu/emu.h.
#pragma once
#include "../emu.h"
