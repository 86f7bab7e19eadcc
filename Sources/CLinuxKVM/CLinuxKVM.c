#include "CLinuxKVM.h"
