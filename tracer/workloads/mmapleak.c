/*
 * mmapleak.c - thread stacks mapped by hand and never unmapped.
 *
 * Phase two starts 5 workers a second for SECONDS (argv[1], 0: until
 * killed), each on a 256 KiB stack that new_worker_stack() maps with mmap;
 * the worker is joined but its stack is never unmapped: 1.25 MiB/s that no
 * malloc-level tool sees.
 */
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include "common.h"

#define STACK (256 * 1024)

static void *work(void *arg) { return arg; }

__attribute__((noinline)) static void *new_worker_stack(void)
{
    void *s = mmap(NULL, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    return s == MAP_FAILED ? NULL : s;
}

__attribute__((noinline)) static void run_worker(void)
{
    void *stack = new_worker_stack();
    if (!stack)
        return;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstack(&a, stack, STACK);
    pthread_t t;
    if (pthread_create(&t, &a, work, NULL) == 0)
        pthread_join(t, NULL);
    pthread_attr_destroy(&a);
    /* the leak: munmap(stack, STACK) is missing */
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 0;
    ready_then_wait();
    struct timespec tick = {0, 200 * 1000 * 1000};
    for (long i = 0; seconds <= 0 || i < seconds * 5; i++) {
        run_worker();
        nanosleep(&tick, NULL);
    }
    done_then_idle();
}
