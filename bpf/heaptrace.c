/*
 * heaptrace.c - BPF programs for the malloc family (uprobes), compiled by bcc.
 *
 * Hot path design (see ../shared/DESIGN.md):
 *  - one entry probe and one return probe per allocation call, one entry
 *    probe per free; everything is aggregated here, per (process, stack):
 *    the front end reads per-site totals, never walks the live blocks;
 *  - a block's record (size, stack) is keyed by (process, address);
 *  - a process is its tgid and its incarnation (new at fork and exec): after an exec, or
 *    a PID used again, blocks and sites are new ones, never merged with
 *    the ones of the program before (stacks are keyed by tgid alone: a
 *    stack's hash stands for its frames, whoever made it);
 *  - the caller is the return address (taken in the return probe, where
 *    the kernel has restored it into ip; for operator new, read at [sp]
 *    on entry): exact even when the caller has no frame pointer. Deeper
 *    frames come from a frame-pointer walk that stops at the first frame
 *    that does not lie above the previous one on this thread's stack;
 *  - an allocator function called from inside another (realloc(NULL, n)
 *    calling malloc, reallocarray tail-calling realloc) is one allocation:
 *    only the outermost call, recognised by its stack pointer, is counted.
 */
#include <uapi/linux/ptrace.h>
#include "heaptrace.h"

/* Per-thread state, in task-local storage: cheaper than a hash keyed by
 * thread id, and freed by the kernel when the thread exits. */
struct thread_state {
    /* The allocator call in flight (entry seen, return not yet): sp == 0
     * when none. */
    __u64 sp;     /* stack pointer at entry: [sp] is the return address */
    __u64 kind;
    __u64 size;
    __u64 ptr;    /* realloc: old block; posix_memalign: where to write */
    __u64 stack;
    __u64 skip;   /* outside --min-size/--max-size: seen, not counted */
    /* The operator new in flight: its caller is charged for the malloc it
     * makes. new_sp == 0 when none. */
    __u64 new_sp;
    __u64 new_stack;
    /* The site this thread charged last: a loop allocating from one place
     * skips the stacks and sites lookups. */
    __u64 last_stack;
    __u64 last_owner;
    __u32 last_slot;
    __u32 gen;    /* the process's incarnation (see owner_of) */
    __u32 inited; /* gen is set */
    __u32 tick;   /* allocator calls of this thread in MODE_SAMPLED */
    __u32 weight; /* of the call in flight: blocks it stands for (0: not sampled) */
    __u32 pad;
    /* The VM syscall in flight (vmevents.c): vm.kind == 0 when none. One
     * task storage for everything: a second one slows the malloc path. */
    struct vm_event vm;
};

BPF_F_TABLE("hash", struct alloc_key, struct alloc_info, allocs, MAX_ALLOCS, BPF_F_NO_PREALLOC);
/* A site's counters live in an array slot: the hash is consulted once per
 * new (thread, site) pair, a free reaches its counters by the slot kept in
 * the block's record. Slots are handed out per CPU (uprobe programs run with
 * preemption off, so a per-CPU counter needs no atomics) and not reused. */
BPF_HASH(sites, struct site_key, __u32, MAX_SITES);
BPF_ARRAY(counts, struct site_val, MAX_SITES);
BPF_PERCPU_ARRAY(slot_next, __u32, 1);
/* Slots of sites the front end retired (a process that exited or exec'd),
 * zeroed, to be handed out again before new ones. */
BPF_QUEUE(free_slots, __u32, MAX_SITES);
BPF_F_TABLE("hash", struct site_key, struct stack_val, stacks, MAX_SITES, BPF_F_NO_PREALLOC);
BPF_TASK_STORAGE(threads, struct thread_state);
BPF_PERCPU_ARRAY(stats, __u64, STAT_NR);
BPF_PERCPU_ARRAY(stackbuf, struct stack_val, 1);
/* The mode of each process the front end set one for (see MODE_*). */
BPF_HASH(targets, __u32, __u8, MAX_TARGETS);

static __always_inline int mode_of(__u32 tgid)
{
    __u8 *m = targets.lookup(&tgid);
    return m ? *m : DEFAULT_MODE;
}

/* With --all the uprobes fire in every process mapping the allocator: the
 * ones not traced leave at once. (With -p/-c the kernel fires them only in
 * the given processes, all traced in full: no lookup.) */
#ifdef ALL_PROCESSES
#define MODE(tgid) mode_of(tgid)
#else
#define MODE(tgid) MODE_FULL
#endif

static __always_inline void stat_inc(int idx)
{
    __u64 *v = stats.lookup(&idx);
    if (v)
        (*v)++;
}


/* FNV-1a over 64-bit words: cheap, and collisions between two stacks of
 * one process are vanishingly rare at this width. */
static __always_inline __u64 mix(__u64 h, __u64 v)
{
    return (h ^ v) * 0x100000001b3ULL;
}

/* A process's incarnation: a new one at fork and at exec (lifecycle.c
 * sets it, per tgid), 0 for processes that ran before heaptrace. A thread
 * takes it when its state is made; an exec sets it in the one thread left. */
BPF_HASH(gens, __u32, __u32, MAX_TARGETS);

static __always_inline struct thread_state *thread(void)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    struct thread_state *ts = threads.task_storage_get(task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (ts && !ts->inited) {
        __u32 tgid = bpf_get_current_pid_tgid() >> 32;
        __u32 *g = gens.lookup(&tgid);
        ts->gen = g ? *g : 0;
        ts->inited = 1;
    }
    return ts;
}

/* A process: tgid in the low half, its incarnation in the high half. Keys
 * hold it as {tgid, gen}: after an exec, or a PID used again, blocks and
 * sites are new ones. */
static __always_inline __u64 owner_of(struct thread_state *ts, __u32 tgid)
{
    return (__u64)tgid | ((__u64)ts->gen << 32);
}

/* The incarnation in a block's key. With --all, blocks of an ended
 * incarnation must never match a free (their sites' counter slots are used
 * again). With -p/-c slots are never used again, so a stale block charges
 * only a retired slot: keys carry no incarnation, and free needs no thread
 * state lookup (~50 ns a call). */
#ifdef ALL_PROCESSES
#define BLOCK_GEN(owner) ((__u32)((owner) >> 32))
#else
#define BLOCK_GEN(owner) 0
#endif

/* The stack of an allocation: ip0 is the allocator's caller (the return
 * address), fp its frame pointer register, sp the stack pointer at that
 * point. Frames are taken from the frame-pointer chain while it rises on
 * this thread's stack. */
static __always_inline __u64 collect_stack(struct thread_state *ts, __u32 tgid,
                                           __u64 ip0, __u64 fp, __u64 sp)
{
    int zero = 0;
    struct stack_val *st = stackbuf.lookup(&zero);
    if (!st)
        return 0;
    st->ip[0] = ip0;
    __u64 h = mix(0xcbf29ce484222325ULL, ip0);
    __u64 prev = sp;
    __u32 depth = 1;
#pragma clang loop unroll(disable)
    for (int i = 1; i < MAX_DEPTH; i++) {
        if (fp <= prev || fp - sp > STACK_SPAN || (fp & 7))
            break;
        __u64 frame[2] = {};
        if (bpf_probe_read_user(frame, sizeof(frame), (void *)fp))
            break;
        if (frame[1] < 4096)
            break;
        st->ip[i] = frame[1];
        h = mix(h, frame[1]);
        depth++;
        prev = fp;
        fp = frame[0];
    }
    st->depth = depth;
    if (ts->last_stack == h && (__u32)ts->last_owner == tgid)
        return h;
    struct site_key key = {.tgid = tgid, .stack = h};
    if (!stacks.lookup(&key)) {
        int err = stacks.update(&key, st);
        if (err && err != -EEXIST) {
            stat_inc(STAT_LOST_STACK_MAP_FULL);
            return h;
        }
    }
    return h;
}

static __always_inline int alloc_enter(struct pt_regs *ctx, __u64 kind, __u64 size, __u64 ptr)
{
    int mode = MODE(bpf_get_current_pid_tgid() >> 32);
    if (mode == MODE_OFF)
        return 0;
    __u64 sp = PT_REGS_SP(ctx);
    struct thread_state *ts = thread();
    if (!ts) {
        stat_inc(STAT_LOST_INFLIGHT_FULL);
        return 0;
    }
    /* Called from inside an allocator call of this thread (deeper on the
     * same stack): the outer call is the allocation. A recorded call that
     * is not above this one (another stack, or below) is stale and is
     * replaced. (One whose return is never seen -- a longjmp out of a
     * signal handler inside malloc -- hides deeper calls until a call from
     * a shallower frame replaces it.) */
    if (ts->sp && ts->sp >= sp && ts->sp - sp < STACK_SPAN)
        return 0;
    /* MODE_SAMPLED: one call in SAMPLE_EVERY is traced and stands for
     * SAMPLE_EVERY blocks (the counts are estimates); a realloc is always
     * followed, so that a block traced stays right when it moves. */
    __u32 weight = 1;
    if (mode == MODE_SAMPLED) {
        weight = ++ts->tick % SAMPLE_EVERY ? 0 : SAMPLE_EVERY;
        if (!weight && !((kind == K_REALLOC || kind == K_REALLOCARRAY) && ptr))
            return 0;
    }
    ts->weight = weight;
    ts->kind = kind;
    ts->size = size;
    ts->ptr = ptr;
    ts->skip = 0;
#ifdef MIN_SIZE
    if (size < MIN_SIZE)
        ts->skip = 1;
#endif
#ifdef MAX_SIZE
    if (size > MAX_SIZE)
        ts->skip = 1;
#endif
    /* The stack to charge: operator new's caller when this is the
     * allocation operator new is making; else this call's own, taken at the
     * return, where the kernel hands over the return address for free. */
    ts->stack = 0;
    __u64 new_sp = ts->new_sp;
    ts->new_sp = 0;
    if (new_sp > sp && new_sp - sp < NEW_NEST_SPAN)
        ts->stack = ts->new_stack;
    ts->sp = sp;
    return 0;
}

/* The counters slot of (process, stack), allocated on first sight: a slot
 * the front end freed (a process that ended), else a new one. */
static __always_inline __u32 slot_of(struct thread_state *ts, __u64 owner, __u64 stack)
{
    if (ts->last_stack == stack && ts->last_owner == owner)
        return ts->last_slot;
    struct site_key k = {.tgid = (__u32)owner, .gen = owner >> 32, .stack = stack};
    __u32 slot;
    __u32 *found = sites.lookup(&k);
    if (found) {
        slot = *found;
    } else {
        int zero = 0;
        if (free_slots.pop(&slot) == 0) {
            /* a slot given back, zeroed by the front end */
        } else {
            __u32 *next = slot_next.lookup(&zero);
            if (!next)
                return NO_SLOT;
            slot = *next * HT_NR_CPUS + bpf_get_smp_processor_id();
            if (slot >= MAX_SITES) {
                stat_inc(STAT_LOST_SITE_MAP_FULL);
                return NO_SLOT;
            }
            *next += 1;
        }
        if (sites.insert(&k, &slot)) {
            free_slots.push(&slot, 0); /* unused: back in the queue */
            found = sites.lookup(&k); /* another CPU was first: its slot */
            if (!found) {
                stat_inc(STAT_LOST_SITE_MAP_FULL);
                return NO_SLOT;
            }
            slot = *found;
        }
    }
    ts->last_stack = stack;
    ts->last_owner = owner;
    ts->last_slot = slot;
    return slot;
}

/* Live blocks are allocs - frees: one atomic fewer on each side. */
static __always_inline void charge(__u32 slot, __s64 bytes,
                                   __u64 alloc_bytes, __u64 allocs, __u64 frees)
{
    struct site_val *sv = counts.lookup(&slot);
    if (!sv)
        return;
    if (bytes)
        __sync_fetch_and_add(&sv->live_bytes, bytes);
    if (alloc_bytes)
        __sync_fetch_and_add(&sv->alloc_bytes, alloc_bytes);
    if (allocs)
        __sync_fetch_and_add(&sv->allocs, allocs);
    if (frees)
        __sync_fetch_and_add(&sv->frees, frees);
}

/* Forget a block; returns 1 if it was tracked. */
static __always_inline int release(__u64 owner, __u64 addr, int count_unknown)
{
    struct alloc_key ak = {.tgid = (__u32)owner, .gen = BLOCK_GEN(owner), .addr = addr};
    struct alloc_info *ai = allocs.lookup(&ak);
    if (!ai) {
        if (count_unknown)
            stat_inc(STAT_UNKNOWN_FREE);
        return 0;
    }
    __u32 slot = ai->slot;
    __s64 size = ai->size;
    __u32 w = ai->weight;
    /* Delete first: of two racing frees of one block, one wins. */
    if (allocs.delete(&ak))
        return 0;
    charge(slot, -size * w, 0, 0, w);
    return 1;
}

static __always_inline void track(__u64 owner, __u64 addr, __u64 size, __u32 slot, __u32 w)
{
    if (slot == NO_SLOT)
        return; /* counted as lost by slot_of */
    struct alloc_key ak = {.tgid = (__u32)owner, .gen = BLOCK_GEN(owner), .addr = addr};
    struct alloc_info ai = {.size = size, .slot = slot, .weight = w};
#ifdef TRACK_AGE
    ai.ts = bpf_ktime_get_ns();
#endif
    int err = allocs.insert(&ak, &ai);
    if (err == -EEXIST) {
        /* An address handed out again without its free being seen (a free
         * missed while probes were being attached): retire the old record. */
        release(owner, addr, 0);
        err = allocs.insert(&ak, &ai);
    }
    if (err) {
        stat_inc(STAT_LOST_ALLOC_MAP_FULL);
        return;
    }
    charge(slot, size * w, size * w, w, 0);
}

int alloc_return(struct pt_regs *ctx)
{
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    struct thread_state *ts = threads.task_storage_get(task, 0, 0); /* made at entry */
    if (!ts || !ts->sp)
        return 0;
    __u64 owner = owner_of(ts, tgid);
    /* After the return instruction sp is 8 above its value at entry: an
     * inner call returning is not the outer allocation. */
    if (PT_REGS_SP(ctx) != ts->sp + 8)
        return 0;
    __u64 entry_sp = ts->sp;
    ts->sp = 0;
    __u64 ret = PT_REGS_RC(ctx);
    if (ts->skip) {
        /* Out of the --min-size/--max-size range: not counted. A realloc
         * that succeeded (or freed, with size 0) still ends the old block. */
        if ((ts->kind == K_REALLOC || ts->kind == K_REALLOCARRAY) && ts->ptr && (ret || ts->size == 0))
            release(owner, ts->ptr, 0);
        return 0;
    }
    __u64 addr = ret;
    if (ts->kind == K_POSIX_MEMALIGN) {
        if ((int)ret != 0) {
            stat_inc(STAT_FAILED_ALLOC);
            return 0;
        }
        addr = 0;
        bpf_probe_read_user(&addr, sizeof(addr), (void *)ts->ptr);
    }

    if (ts->kind == K_REALLOC || ts->kind == K_REALLOCARRAY) {
        if (!addr) {
            if (ts->size == 0 && ts->ptr)
                release(owner, ts->ptr, 0); /* realloc(p, 0) frees p (glibc) */
            else
                stat_inc(STAT_FAILED_ALLOC); /* failed: old block stays live */
            return 0;
        }
        if (ts->ptr) {
            struct alloc_key ak = {.tgid = tgid, .gen = BLOCK_GEN(owner), .addr = ts->ptr};
            struct alloc_info *ai = allocs.lookup(&ak);
            if (ai) {
                /* The block stays charged to the site that holds it:
                 * move its record, charge only the change in size. */
                struct alloc_info moved = *ai;
                __s64 w = moved.weight;
                __s64 delta = (__s64)ts->size - (__s64)moved.size;
                __u32 slot = moved.slot;
                moved.size = ts->size;
                if (addr != ts->ptr)
                    allocs.delete(&ak);
                struct alloc_key nk = {.tgid = tgid, .gen = BLOCK_GEN(owner), .addr = addr};
                if (allocs.update(&nk, &moved)) {
                    stat_inc(STAT_LOST_ALLOC_MAP_FULL);
                    charge(slot, -(__s64)(moved.size - delta) * w, 0, 0, w);
                    return 0;
                }
                charge(slot, delta * w, delta > 0 ? delta * w : 0, 0, 0);
                return 0;
            }
            if (!ts->weight)
                return 0; /* sampled mode: a block not traced, and this call not sampled */
            if (ts->weight == 1)
                stat_inc(STAT_UNKNOWN_FREE);
        }
        /* realloc(NULL, n), or a block from before attach: a new block of
         * this call's site. */
    }
    if (!addr) {
        stat_inc(STAT_FAILED_ALLOC);
        return 0;
    }
    if (!ts->stack)
        /* In a return probe the kernel has already put the original return
         * address in ip, and fp is restored (callee-saved): the caller's
         * stack without reading user memory for it. entry_sp is the stack
         * pointer at entry, as if taken there. */
        ts->stack = collect_stack(ts, tgid, PT_REGS_IP(ctx), PT_REGS_FP(ctx), entry_sp);
    track(owner, addr, ts->size, slot_of(ts, owner, ts->stack), ts->weight);
    return 0;
}

int malloc_enter(struct pt_regs *ctx)
{
    return alloc_enter(ctx, K_MALLOC, PT_REGS_PARM1(ctx), 0);
}

int calloc_enter(struct pt_regs *ctx)
{
    __u64 n = PT_REGS_PARM1(ctx), size = PT_REGS_PARM2(ctx);
    return alloc_enter(ctx, K_CALLOC, n * size, 0);
}

int realloc_enter(struct pt_regs *ctx)
{
    return alloc_enter(ctx, K_REALLOC, PT_REGS_PARM2(ctx), PT_REGS_PARM1(ctx));
}

int reallocarray_enter(struct pt_regs *ctx)
{
    __u64 n = PT_REGS_PARM2(ctx), size = PT_REGS_PARM3(ctx);
    return alloc_enter(ctx, K_REALLOCARRAY, n * size, PT_REGS_PARM1(ctx));
}

int memalign_enter(struct pt_regs *ctx)
{
    return alloc_enter(ctx, K_MEMALIGN, PT_REGS_PARM2(ctx), 0);
}

int posix_memalign_enter(struct pt_regs *ctx)
{
    return alloc_enter(ctx, K_POSIX_MEMALIGN, PT_REGS_PARM3(ctx), PT_REGS_PARM1(ctx));
}

int pvalloc_enter(struct pt_regs *ctx)
{
    __u64 size = (PT_REGS_PARM1(ctx) + HT_PAGE_SIZE - 1) & ~(HT_PAGE_SIZE - 1ULL);
    return alloc_enter(ctx, K_PVALLOC, size ? size : HT_PAGE_SIZE, 0);
}

int free_enter(struct pt_regs *ctx)
{
    __u64 addr = PT_REGS_PARM1(ctx);
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!addr)
        return 0;
    int mode = MODE(tgid);
    if (mode == MODE_OFF)
        return 0;
#ifdef ALL_PROCESSES
    struct thread_state *ts = thread();
    if (ts)
        release(owner_of(ts, tgid), addr, mode == MODE_FULL);
#else
    release(tgid, addr, 1); /* block keys carry no incarnation here (BLOCK_GEN) */
#endif
    return 0;
}

/* operator new and friends: remember the caller so that the malloc they
 * make is charged to it, not to libstdc++. A nested operator new (the
 * nothrow form calls the throwing one) keeps the outer caller. */
int new_enter(struct pt_regs *ctx)
{
    if (MODE(bpf_get_current_pid_tgid() >> 32) == MODE_OFF)
        return 0;
    __u64 sp = PT_REGS_SP(ctx);
    struct thread_state *ts = thread();
    if (!ts)
        return 0;
    if (ts->new_sp > sp && ts->new_sp - sp < NEW_NEST_SPAN)
        return 0;
    __u64 ret = 0;
    bpf_probe_read_user(&ret, sizeof(ret), (void *)sp);
    ts->new_stack = collect_stack(ts, bpf_get_current_pid_tgid() >> 32, ret, PT_REGS_FP(ctx), sp);
    ts->new_sp = sp;
    return 0;
}
