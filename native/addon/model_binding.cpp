#include "addon.h"
