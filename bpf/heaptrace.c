/*
 * heaptrace.c - BPF programs for the malloc family (uprobes), compiled by bcc.
 *
 * Hot path design (see ../shared/DESIGN.md):
 *  - one entry probe and one return probe per allocation call, one entry
 *    probe per free; everything is aggregated here, per (tgid, stack):
 *    the front end reads per-site totals, never walks the live blocks;
 *  - a block's record (size, stack) is keyed by (tgid, address);
 *  - the caller is the return address at [sp] on entry: exact even when
 *    the caller has no frame pointer. Deeper frames come from a
 *    frame-pointer walk that stops at the first frame that does not lie
 *    above the previous one on this thread's stack;
 *  - an allocator function called from inside another (realloc(NULL, n)
 *    calling malloc, reallocarray tail-calling realloc) is one allocation:
 *    only the outermost call, recognised by its stack pointer, is counted.
 */
#include <uapi/linux/ptrace.h>
#include "heaptrace.h"

struct inflight {
    __u64 sp;     /* stack pointer at entry: [sp] is the return address */
    __u64 kind;
    __u64 size;
    __u64 ptr;    /* realloc: old block; posix_memalign: where to write */
    __u64 stack;
    __u64 skip;   /* outside --min-size/--max-size: seen, not counted */
};

struct new_frame {
    __u64 sp;     /* stack pointer at operator new entry */
    __u64 stack;  /* the stack of operator new's caller */
};

BPF_F_TABLE("hash", struct alloc_key, struct alloc_info, allocs, MAX_ALLOCS, BPF_F_NO_PREALLOC);
BPF_HASH(sites, struct site_key, struct site_val, MAX_SITES);
BPF_F_TABLE("hash", struct site_key, struct stack_val, stacks, MAX_SITES, BPF_F_NO_PREALLOC);
BPF_HASH(inflight, __u64, struct inflight, MAX_INFLIGHT);
BPF_HASH(newframes, __u64, struct new_frame, MAX_INFLIGHT);
BPF_PERCPU_ARRAY(stats, __u64, STAT_NR);
BPF_PERCPU_ARRAY(stackbuf, struct stack_val, 1);

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

static __always_inline __u64 collect_stack(struct pt_regs *ctx, __u32 tgid, __u64 sp)
{
    int zero = 0;
    struct stack_val *st = stackbuf.lookup(&zero);
    if (!st)
        return 0;
    __u64 ret = 0;
    bpf_probe_read_user(&ret, sizeof(ret), (void *)sp);
    st->ip[0] = ret;
    __u64 h = mix(0xcbf29ce484222325ULL, ret);
    __u64 fp = PT_REGS_FP(ctx);
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
    struct site_key key = {.tgid = tgid, .stack = h};
    if (!stacks.lookup(&key)) {
        int err = stacks.update(&key, st);
        if (err && err != -EEXIST)
            stat_inc(STAT_LOST_STACK_MAP_FULL);
    }
    return h;
}

/* The stack to charge: operator new's caller when this allocation is the
 * one operator new is making, else this call's own. */
static __always_inline __u64 charge_stack(struct pt_regs *ctx, __u64 id, __u64 sp)
{
    struct new_frame *nf = newframes.lookup(&id);
    if (nf) {
        __u64 stack = nf->stack;
        int nested = nf->sp > sp && nf->sp - sp < NEW_NEST_SPAN;
        newframes.delete(&id);
        if (nested)
            return stack;
    }
    return collect_stack(ctx, id >> 32, sp);
}

static __always_inline int alloc_enter(struct pt_regs *ctx, __u64 kind, __u64 size, __u64 ptr)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u64 sp = PT_REGS_SP(ctx);
    struct inflight *cur = inflight.lookup(&id);
    /* Called from inside an allocator call of this thread: the outer call
     * is the allocation. An entry left by a call whose return was never
     * seen lies above this one on the stack and is replaced. */
    if (cur && cur->sp >= sp && cur->sp - sp < STACK_SPAN)
        return 0;
    struct inflight in = {.sp = sp, .kind = kind, .size = size, .ptr = ptr};
#ifdef MIN_SIZE
    if (size < MIN_SIZE)
        in.skip = 1;
#endif
#ifdef MAX_SIZE
    if (size > MAX_SIZE)
        in.skip = 1;
#endif
    if (!in.skip)
        in.stack = charge_stack(ctx, id, sp);
    if (inflight.update(&id, &in))
        stat_inc(STAT_LOST_INFLIGHT_FULL);
    return 0;
}

static __always_inline void charge(struct site_key *sk, __s64 bytes, __s64 count,
                                   __u64 alloc_bytes, __u64 allocs, __u64 frees)
{
    struct site_val *sv = sites.lookup(sk);
    if (!sv) {
        struct site_val zero = {};
        sites.update(sk, &zero);
        sv = sites.lookup(sk);
        if (!sv) {
            stat_inc(STAT_LOST_SITE_MAP_FULL);
            return;
        }
    }
    if (bytes)
        __sync_fetch_and_add(&sv->live_bytes, bytes);
    if (count)
        __sync_fetch_and_add(&sv->live_allocs, count);
    if (alloc_bytes)
        __sync_fetch_and_add(&sv->alloc_bytes, alloc_bytes);
    if (allocs)
        __sync_fetch_and_add(&sv->allocs, allocs);
    if (frees)
        __sync_fetch_and_add(&sv->frees, frees);
}

/* Forget a block; returns 1 if it was tracked. */
static __always_inline int release(__u32 tgid, __u64 addr, int count_unknown)
{
    struct alloc_key ak = {.tgid = tgid, .addr = addr};
    struct alloc_info *ai = allocs.lookup(&ak);
    if (!ai) {
        if (count_unknown)
            stat_inc(STAT_UNKNOWN_FREE);
        return 0;
    }
    struct site_key sk = {.tgid = tgid, .stack = ai->stack};
    __s64 size = ai->size;
    /* Delete first: of two racing frees of one block, one wins. */
    if (allocs.delete(&ak))
        return 0;
    charge(&sk, -size, -1, 0, 0, 1);
    return 1;
}

static __always_inline void track(__u32 tgid, __u64 addr, __u64 size, __u64 stack)
{
    struct alloc_key ak = {.tgid = tgid, .addr = addr};
    struct alloc_info ai = {.size = size, .stack = stack, .ts = bpf_ktime_get_ns()};
    struct site_key sk = {.tgid = tgid, .stack = stack};
    int err = allocs.insert(&ak, &ai);
    if (err == -EEXIST) {
        /* An address handed out again without its free being seen (a free
         * missed while probes were being attached): retire the old record. */
        release(tgid, addr, 0);
        err = allocs.insert(&ak, &ai);
    }
    if (err) {
        stat_inc(STAT_LOST_ALLOC_MAP_FULL);
        return;
    }
    charge(&sk, size, 1, size, 1, 0);
}

int alloc_return(struct pt_regs *ctx)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32;
    struct inflight *cur = inflight.lookup(&id);
    if (!cur)
        return 0;
    /* After the return instruction sp is 8 above its value at entry: an
     * inner call returning is not the outer allocation. */
    if (PT_REGS_SP(ctx) != cur->sp + 8)
        return 0;
    struct inflight in = *cur;
    inflight.delete(&id);
    __u64 ret = PT_REGS_RC(ctx);
    if (in.skip) {
        /* Out of the --min-size/--max-size range: not counted. A realloc
         * that succeeded (or freed, with size 0) still ends the old block. */
        if ((in.kind == K_REALLOC || in.kind == K_REALLOCARRAY) && in.ptr && (ret || in.size == 0))
            release(tgid, in.ptr, 0);
        return 0;
    }

    __u64 addr = ret;
    if (in.kind == K_POSIX_MEMALIGN) {
        if ((int)ret != 0) {
            stat_inc(STAT_FAILED_ALLOC);
            return 0;
        }
        addr = 0;
        bpf_probe_read_user(&addr, sizeof(addr), (void *)in.ptr);
    }

    if (in.kind == K_REALLOC || in.kind == K_REALLOCARRAY) {
        if (!addr) {
            if (in.size == 0 && in.ptr)
                release(tgid, in.ptr, 0); /* realloc(p, 0) frees p (glibc) */
            else
                stat_inc(STAT_FAILED_ALLOC); /* failed: old block stays live */
            return 0;
        }
        if (in.ptr) {
            struct alloc_key ak = {.tgid = tgid, .addr = in.ptr};
            struct alloc_info *ai = allocs.lookup(&ak);
            if (ai) {
                /* The block stays charged to the site that holds it:
                 * move its record, charge only the change in size. */
                struct alloc_info moved = *ai;
                __s64 delta = (__s64)in.size - (__s64)moved.size;
                struct site_key sk = {.tgid = tgid, .stack = moved.stack};
                moved.size = in.size;
                if (addr != in.ptr)
                    allocs.delete(&ak);
                struct alloc_key nk = {.tgid = tgid, .addr = addr};
                if (allocs.update(&nk, &moved)) {
                    stat_inc(STAT_LOST_ALLOC_MAP_FULL);
                    charge(&sk, -(__s64)(moved.size - delta), -1, 0, 0, 1);
                    return 0;
                }
                charge(&sk, delta, 0, delta > 0 ? delta : 0, 0, 0);
                return 0;
            }
            stat_inc(STAT_UNKNOWN_FREE);
        }
        /* realloc(NULL, n), or a block from before attach: a new block of
         * this call's site. */
    }
    if (!addr) {
        stat_inc(STAT_FAILED_ALLOC);
        return 0;
    }
    track(tgid, addr, in.size, in.stack);
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
    if (addr)
        release(bpf_get_current_pid_tgid() >> 32, addr, 1);
    return 0;
}

/* operator new and friends: remember the caller so that the malloc they
 * make is charged to it, not to libstdc++. A nested operator new (the
 * nothrow form calls the throwing one) keeps the outer caller. */
int new_enter(struct pt_regs *ctx)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u64 sp = PT_REGS_SP(ctx);
    struct new_frame *nf = newframes.lookup(&id);
    if (nf && nf->sp > sp && nf->sp - sp < NEW_NEST_SPAN)
        return 0;
    struct new_frame f = {.sp = sp, .stack = collect_stack(ctx, id >> 32, sp)};
    newframes.update(&id, &f);
    return 0;
}
