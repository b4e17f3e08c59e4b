/*
 * vmevents.c - syscall tracepoints for brk/mmap/munmap/mremap/mprotect/
 * madvise of traced processes, compiled after heaptrace.c and lifecycle.c
 * (which holds the ring buffer). These calls are rare: each is streamed to
 * user space, which keeps an exact map of every traced process's anonymous
 * mappings (tracer/vmmap.py).
 *
 * The caller: libc's syscall wrappers are frameless, so at syscall entry
 * the return address into the caller is at the user stack pointer.
 */

static __always_inline int vm_enter(__u32 kind, __u64 a0, __u64 a1, __u64 a2, __u64 a3, __u64 a4)
{
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (mode_of(tgid) == MODE_OFF)
        return 0;
    struct thread_state *ts = thread();
    if (!ts)
        return 0;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    struct vm_event *ev = &ts->vm;
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
    __u64 sp = 0, fp = 0, ret = 0;
    bpf_probe_read_kernel(&sp, sizeof(sp), &regs->sp);
    bpf_probe_read_kernel(&fp, sizeof(fp), &regs->bp);
    bpf_probe_read_user(&ret, sizeof(ret), (void *)sp);
    ev->tgid = tgid;
    ev->kind = kind;
    ev->a0 = a0;
    ev->a1 = a1;
    ev->a2 = a2;
    ev->a3 = a3;
    ev->a4 = a4;
    ev->caller = ret;
    ev->stack = collect_stack(ts, tgid, ret, fp, sp);
    return 0;
}

static __always_inline int vm_exit(long ret)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    struct thread_state *ts = threads.task_storage_get(task, 0, 0);
    if (!ts || !ts->vm.kind)
        return 0;
    struct vm_event *ev = &ts->vm;
    ev->ret = ret;
    if (vm_events.ringbuf_output(ev, sizeof(*ev), 0))
        stat_inc(STAT_LOST_VM_EVENT);
    ev->kind = 0;
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_mmap)
{
    return vm_enter(VM_MMAP, args->addr, args->len, args->prot, args->flags, args->fd);
}
TRACEPOINT_PROBE(syscalls, sys_exit_mmap) { return vm_exit(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_munmap)
{
    return vm_enter(VM_MUNMAP, args->addr, args->len, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_munmap) { return vm_exit(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_mremap)
{
    return vm_enter(VM_MREMAP, args->addr, args->old_len, args->new_len, args->flags, args->new_addr);
}
TRACEPOINT_PROBE(syscalls, sys_exit_mremap) { return vm_exit(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_mprotect)
{
    return vm_enter(VM_MPROTECT, args->start, args->len, args->prot, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_mprotect) { return vm_exit(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_brk)
{
    return vm_enter(VM_BRK, args->brk, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_brk) { return vm_exit(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_madvise)
{
    return vm_enter(VM_MADVISE, args->start, args->len_in, args->behavior, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_madvise) { return vm_exit(args->ret); }
