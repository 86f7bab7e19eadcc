#ifndef CLINUXKVM_H
#define CLINUXKVM_H

#include <linux/kvm.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The ioctl request numbers of <linux/kvm.h> are function-like macros
 * (_IO, _IOW, _IOWR) that Swift cannot import; each shim returns the value
 * the macro computes. */
#define CK_REQ(name) static inline unsigned long ck_##name(void) { return name; }
CK_REQ(KVM_GET_API_VERSION)
CK_REQ(KVM_CREATE_VM)
CK_REQ(KVM_CHECK_EXTENSION)
CK_REQ(KVM_GET_VCPU_MMAP_SIZE)
CK_REQ(KVM_GET_SUPPORTED_CPUID)
CK_REQ(KVM_SET_USER_MEMORY_REGION)
CK_REQ(KVM_CREATE_VCPU)
CK_REQ(KVM_SET_CPUID2)
CK_REQ(KVM_GET_SREGS)
CK_REQ(KVM_SET_SREGS)
CK_REQ(KVM_GET_REGS)
CK_REQ(KVM_SET_REGS)
CK_REQ(KVM_RUN)
CK_REQ(KVM_GET_DIRTY_LOG)
CK_REQ(KVM_CLEAR_DIRTY_LOG)
CK_REQ(KVM_ENABLE_CAP)
CK_REQ(KVM_RESET_DIRTY_RINGS)
CK_REQ(KVM_GET_STATS_FD)
#undef CK_REQ

/* Capabilities, flags and layout constants, as values. */
static inline int ck_cap_manual_dirty_log_protect2(void) { return KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2; }
static inline int ck_cap_dirty_log_ring(void) { return KVM_CAP_DIRTY_LOG_RING; }
static inline int ck_cap_dirty_log_ring_acq_rel(void) { return KVM_CAP_DIRTY_LOG_RING_ACQ_REL; }
static inline uint64_t ck_dirty_log_manual_protect_enable(void) { return KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE; }
static inline uint64_t ck_dirty_log_initially_set(void) { return KVM_DIRTY_LOG_INITIALLY_SET; }
/* MAP_HUGETLB | MAP_HUGE_1GB (30 << MAP_HUGE_SHIFT), for mmap(2). */
static inline int ck_map_hugetlb_1gb(void) { return 0x40000 | (30 << 26); }
static inline uint32_t ck_mem_log_dirty_pages(void) { return KVM_MEM_LOG_DIRTY_PAGES; }
static inline long ck_dirty_log_page_offset(void) { return KVM_DIRTY_LOG_PAGE_OFFSET; }
static inline uint32_t ck_dirty_gfn_f_dirty(void) { return KVM_DIRTY_GFN_F_DIRTY; }
static inline uint32_t ck_dirty_gfn_f_reset(void) { return KVM_DIRTY_GFN_F_RESET; }
static inline uint32_t ck_exit_hlt(void) { return KVM_EXIT_HLT; }
static inline uint32_t ck_exit_dirty_ring_full(void) { return KVM_EXIT_DIRTY_RING_FULL; }
static inline uint32_t ck_exit_intr(void) { return KVM_EXIT_INTR; }

/* ioctl(2) is variadic in C; these are its two fixed forms. */
static inline int ck_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
static inline int ck_ioctl_val(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }

/* memfd_create(2) */
static inline int ck_memfd_create(const char *name, unsigned int flags) { return (int)syscall(SYS_memfd_create, name, flags); }

/* A deadline for a KVM_RUN loop: a POSIX timer that sends SIGUSR1 to the
 * calling thread after `first_ns`, then every `repeat_ns`, to a handler that
 * does nothing, installed without SA_RESTART: a KVM_RUN in progress returns
 * EINTR (KVM_EXIT_INTR), and the loop can look at the clock. SIGUSR1 is
 * unblocked in the thread until disarmed (thread pools block it). Returns 0,
 * or -1 with errno set. */
typedef struct { timer_t timer; int armed; sigset_t saved; } ck_deadline;
int ck_deadline_arm(ck_deadline *d, uint64_t first_ns, uint64_t repeat_ns);
void ck_deadline_disarm(ck_deadline *d);

/* A dirty-ring entry's flags, with the acquire/release ordering
 * KVM_CAP_DIRTY_LOG_RING_ACQ_REL asks of user space. */
static inline uint32_t ck_load_acquire_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void ck_store_release_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

#endif
