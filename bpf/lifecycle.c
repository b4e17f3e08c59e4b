/*
 * lifecycle.c - process fork, exec and exit, compiled after heaptrace.c.
 * Scheduler tracepoints, not syscall ones: free of the syscall slow path.
 *
 * Each process gets a new incarnation number (gens) at fork and at exec,
 * so that a program's blocks and sites are never merged with those of the
 * program before it under the same PID.
 *
 * With --all, a process's mode (the targets map) follows it into the
 * processes it forks (a --comm filter selects a pre-forking server's
 * workers too), and an entry ends with its task, so the map holds only
 * tasks that exist.
 */
BPF_RINGBUF_OUTPUT(vm_events, VM_RING_PAGES);

static __always_inline void lifecycle_event(__u32 tgid, __u32 kind)
{
    struct vm_event ev = {};
    ev.tgid = tgid;
    ev.kind = kind;
    /* Its name, in a0 and a1: a process may be gone before user space
     * reads /proc. */
    bpf_get_current_comm(&ev.a0, 16);
    if (vm_events.ringbuf_output(&ev, sizeof(ev), 0))
        stat_inc(STAT_LOST_VM_EVENT);
}

/* A new incarnation number: the clock's low bits (odd: never 0, the
 * number of processes that ran before heaptrace). */
static __always_inline __u32 new_gen(void)
{
    return (__u32)bpf_ktime_get_ns() | 1;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    __u32 gen = new_gen();
    gens.update(&tgid, &gen);
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    struct thread_state *ts = threads.task_storage_get(task, 0, 0);
    if (ts) {
        ts->gen = gen;
        ts->inited = 1;
    }
#ifdef ALL_PROCESSES
    lifecycle_event(tgid, VM_EXEC);  /* a filter may select it under its new name */
#else
    if (mode_of(tgid) != MODE_OFF)
        lifecycle_event(tgid, VM_EXEC);
#endif
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    /* The parent is current; the child a new thread or a new process. An
     * entry for a thread is never consulted, and goes with the thread. */
    __u32 child = args->child_pid;
    __u32 gen = new_gen();
    gens.update(&child, &gen);
#ifdef ALL_PROCESSES
    __u32 parent = bpf_get_current_pid_tgid() >> 32;
    __u8 *m = targets.lookup(&parent);
    if (m) {
        __u8 mode = *m;
        targets.update(&child, &mode);
    }
#endif
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u32 pid = id, tgid = id >> 32;
    if (pid != tgid) {  /* a thread: its entries (made at clone) end */
        gens.delete(&pid);
#ifdef ALL_PROCESSES
        targets.delete(&pid);
#endif
    }
    if (!args->group_dead) /* a thread, not the last one */
        return 0;
    if (mode_of(tgid) != MODE_OFF)
        lifecycle_event(tgid, VM_EXIT);
    gens.delete(&tgid);
#ifdef ALL_PROCESSES
    targets.delete(&tgid);  /* with --all the process's entry ends with it */
#endif
    return 0;
}
