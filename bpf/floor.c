/*
 * floor.c - the bare-probe floor for scripts/bench: the same function names
 * as bpf/heaptrace.c, each doing nothing. Attached at exactly the probes
 * heaptrace plans (tracer.targets.plan: same files, same offsets, entry and
 * return probes), it measures what the uprobes alone cost; heaptrace's own
 * work is what it adds on top of this.
 */
#include <uapi/linux/ptrace.h>
#include "heaptrace.h"


int malloc_enter(struct pt_regs *ctx) { return 0; }
int calloc_enter(struct pt_regs *ctx) { return 0; }
int realloc_enter(struct pt_regs *ctx) { return 0; }
int reallocarray_enter(struct pt_regs *ctx) { return 0; }
int memalign_enter(struct pt_regs *ctx) { return 0; }
int posix_memalign_enter(struct pt_regs *ctx) { return 0; }
int pvalloc_enter(struct pt_regs *ctx) { return 0; }
int free_enter(struct pt_regs *ctx) { return 0; }
int new_enter(struct pt_regs *ctx) { return 0; }
int alloc_return(struct pt_regs *ctx) { return 0; }
