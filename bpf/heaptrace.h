/*
 * heaptrace.h - the one header shared by the BPF programs (bpf/heaptrace.c)
 * and the Python front end (tracer/layout.py parses the #defines and mirrors
 * the structs; a test checks the sizes agree).
 *
 * Limits are defaults: the front end overrides them with -D at load time
 * (settings flow one way, before load). Each says why it is that size.
 */
#ifndef HEAPTRACE_H
#define HEAPTRACE_H

/* Frames stored per stack: the allocator's caller (the return address at
 * [sp] on entry, exact without frame pointers) plus a frame-pointer walk.
 * 16 covers the useful depth of most services; each frame costs one
 * bpf_probe_read_user on every traced allocation. */
#ifndef MAX_DEPTH
#define MAX_DEPTH 16
#endif

/* Live allocations tracked at once, over all targets. 4,194,304 >= the
 * 4,000,000 live blocks a busy service holds; the map is not preallocated,
 * so memory is used per live block (~100 B) plus 16 B per bucket at load. */
#ifndef MAX_ALLOCS
#define MAX_ALLOCS 4194304
#endif

/* Distinct (process, stack) pairs over the session (slots are not reused).
 * Call sites are few compared with blocks; 65536 leaves room for deep,
 * varied stacks in many processes. */
#ifndef MAX_SITES
#define MAX_SITES 65536
#endif

/* Possible CPUs: slots are handed out per CPU (the front end passes the
 * real number). */
#ifndef HT_NR_CPUS
#define HT_NR_CPUS 64
#endif
#define NO_SLOT 0xffffffff

/* The page size, for pvalloc's rounding (the front end passes the real
 * one from sysconf). */
#ifndef HT_PAGE_SIZE
#define HT_PAGE_SIZE 4096
#endif

/* A frame pointer further than this above the stack pointer is not a frame
 * of this thread's stack (8 MiB is the default main-thread stack limit). */
#define STACK_SPAN (8ULL << 20)

/* How far below the operator new frame an allocator entry may be and still
 * be the allocation that operator new made (its own frame is < 128 B). */
#define NEW_NEST_SPAN 512

/* Allocator entry points. The return handler is shared; the kind says how
 * to read the size and the pointer. */
#define K_MALLOC 1         /* malloc(size), valloc(size) */
#define K_CALLOC 2         /* calloc(n, size) */
#define K_REALLOC 3        /* realloc(ptr, size) */
#define K_REALLOCARRAY 4   /* reallocarray(ptr, n, size) */
#define K_MEMALIGN 5       /* memalign(align, size), aligned_alloc(align, size) */
#define K_POSIX_MEMALIGN 6 /* posix_memalign(&ptr, align, size) -> int */
#define K_PVALLOC 7        /* pvalloc(size): rounded up to a page */

/* Counters in the per-CPU stats array. The LOST_* ones are data heaptrace
 * could not keep and are always shown to the user. */
#define STAT_LOST_ALLOC_MAP_FULL 0 /* block not tracked: allocs map full */
#define STAT_LOST_SITE_MAP_FULL 1  /* block not charged: sites map full */
#define STAT_LOST_STACK_MAP_FULL 2 /* stack not stored: shown as [lost] */
#define STAT_LOST_INFLIGHT_FULL 3  /* call not seen: no thread storage */
#define STAT_UNKNOWN_FREE 4        /* free of a block from before attach */
#define STAT_FAILED_ALLOC 5        /* allocator returned NULL / error */
#define STAT_LOST_VM_EVENT 6       /* VM syscall not seen: ring buffer full */
#define STAT_NR 8

/* A process is (tgid, gen): gen tells its incarnations apart (see
 * owner_of in heaptrace.c); 0 in the stacks map's keys. */
struct alloc_key {
    __u32 tgid;
    __u32 gen;
    __u64 addr;
};

struct alloc_info {
    __u64 size;
    __u32 slot;   /* the site's slot in the counts array */
    __u32 weight; /* blocks it stands for: 1, or SAMPLE_EVERY in MODE_SAMPLED */
    __u64 ts;    /* bpf_ktime_get_ns() at allocation: only with TRACK_AGE (--min-age) */
};

struct site_key {
    __u32 tgid;
    __u32 gen;
    __u64 stack;
};

/* Live blocks of a site = allocs - frees (one atomic fewer per call). */
struct site_val {
    __s64 live_bytes;
    __u64 alloc_bytes;
    __u64 allocs;
    __u64 frees;
};

struct stack_val {
    __u32 depth;
    __u32 pad;
    __u64 ip[MAX_DEPTH];
};

/* Processes with a mode set by the front end (the targets map): a handful
 * with -p/-c; with --all, the processes a filter selects or excludes, and
 * the threads and children they fork (an entry ends with its task). */
#ifndef MAX_TARGETS
#define MAX_TARGETS 65536
#endif

/* What is traced of a process (value of the targets map). A process
 * without an entry has DEFAULT_MODE: MODE_OFF with -p/-c (only the given
 * processes), MODE_FULL with --all (every process), MODE_OFF with --all and
 * a filter (only the processes the filter selects). With -p/-c the uprobes
 * are attached per process and never consult the map; with --all they are
 * attached once per allocator file for every process (ALL_PROCESSES). */
#define MODE_OFF 0     /* not traced (the uprobes still fire: ~1.5 us a call) */
#define MODE_FULL 1    /* every call traced */
#define MODE_SAMPLED 2 /* one allocation in SAMPLE_EVERY traced, counted SAMPLE_EVERY times */
#ifndef DEFAULT_MODE
#define DEFAULT_MODE MODE_OFF
#endif

/* MODE_SAMPLED's period: a process moved there for its allocation rate
 * (the budget) makes thousands of calls a second, so 1 in 64 still gives
 * its sites within a few percent in a few intervals. */
#ifndef SAMPLE_EVERY
#define SAMPLE_EVERY 64
#endif

/* Pages of the ring buffer that carries VM syscall events to user space
 * (a power of two). User space empties it every 0.1 s; 1024 pages (4 MiB)
 * hold ~58,000 events (72 B + 8 B header), so up to ~500,000 VM calls a
 * second are kept; beyond, the lost ones are counted (STAT_LOST_VM_EVENT). */
#ifndef VM_RING_PAGES
#define VM_RING_PAGES 1024
#endif

/* VM syscalls streamed to user space (kind of struct vm_event). */
#define VM_MMAP 1     /* a0 addr, a1 len, a2 prot, a3 flags, a4 fd */
#define VM_MUNMAP 2   /* a0 addr, a1 len */
#define VM_MREMAP 3   /* a0 old addr, a1 old len, a2 new len, a3 flags, a4 new addr */
#define VM_MPROTECT 4 /* a0 addr, a1 len, a2 prot */
#define VM_BRK 5      /* a0 requested break */
#define VM_MADVISE 6  /* a0 addr, a1 len, a2 advice */
#define VM_EXEC 7     /* the process exec'd a new program (its mappings are new); a0-a1: its name */
#define VM_EXIT 8     /* the process exited (its last thread); a0-a1: its name */

struct vm_event {
    __u32 tgid;
    __u32 kind;
    __u64 a0, a1, a2, a3, a4; /* the syscall's arguments */
    __s64 ret;                /* its result */
    __u64 stack;              /* stack hash of the caller (in stacks) */
    __u64 caller;             /* the return address into the caller */
};

#endif /* HEAPTRACE_H */
