/*
 * arenas.c - arena bloat: many threads, one glibc arena each, each keeping
 * the memory its thread freed.
 *
 * Set-up: THREADS threads (argv[1], default 12) start together; each
 * allocates MIB MiB (argv[2], default 16) in 512-byte blocks in its own
 * arena (fill_arena) and frees three blocks of every four; then all wait.
 * The free chunks (1.5 KiB runs between live blocks) are too small for
 * glibc to give back: each arena keeps 3/4 of MIB MiB resident that its
 * thread freed. Phase two does nothing: the memory stays.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"

#define BLOCK 512

static long mib = 16;
static pthread_barrier_t all_started, all_filled;
static void *pins[64];

__attribute__((noinline)) static void fill_arena(long id)
{
    long n = mib * 1024 * 1024 / BLOCK;
    void **blocks = malloc(n * sizeof(void *));
    for (long i = 0; i < n; i++) {
        blocks[i] = malloc(BLOCK);
        memset(blocks[i], 3, BLOCK);
    }
    for (long i = 0; i < n; i++)
        if (i % 4 != 3)
            free(blocks[i]);
    pins[id] = blocks; /* the live quarter stays reachable */
}

static void *worker(void *arg)
{
    long id = (long)arg;
    pthread_barrier_wait(&all_started); /* all alive at once: one arena each */
    fill_arena(id);
    pthread_barrier_wait(&all_filled);
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = argc > 1 ? atol(argv[1]) : 12;
    if (argc > 2)
        mib = atol(argv[2]);
    if (threads < 1 || threads > 64)
        threads = 12;
    pthread_barrier_init(&all_started, NULL, threads);
    pthread_barrier_init(&all_filled, NULL, threads + 1);
    pthread_t t;
    for (long i = 0; i < threads; i++)
        pthread_create(&t, NULL, worker, (void *)i);
    pthread_barrier_wait(&all_filled);
    ready_then_wait();
    done_then_idle();
}
