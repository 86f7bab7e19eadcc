#include <linux/kvm.h>
