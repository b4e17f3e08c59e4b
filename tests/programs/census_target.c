/*
 * census_target.c - a process with known glibc allocator retention, for the
 * real test of tracer/census.py (which reads its heap through /proc/PID/mem).
 *
 *   1. A second thread (its own arena, a 64 MiB-aligned arena heap) mallocs
 *      ARENA_BLOCKS blocks of BLOCK bytes, frees all but the last, tells the
 *      main thread and blocks for ever (it must not exit: thread exit frees
 *      its tcache struct, which would merge into the free run).
 *   2. The main thread (main arena, the [heap]) mallocs MAIN_BLOCKS blocks of
 *      BLOCK bytes, writes every byte of each (so every page is resident),
 *      frees all but the last: the survivor pins the top chunk.
 *   3. It prints "ready FIRST LAST AFIRST ALAST" (the user pointers of the
 *      first and last blocks of each run, in hex) and waits on stdin.
 *   4. On a 't' it calls malloc_trim(0) and prints "trimmed"; it then waits
 *      until stdin closes.
 *
 * Output goes through write(2) and input through read(2), never stdio, so
 * no stdio buffer is malloc'ed into the middle of the freed run.  The thread
 * is created before the main run, so whatever pthread_create allocates in
 * the main arena (the new thread's DTV) lies below it.
 *
 * Build: gcc -O0 -pthread -o census_target census_target.c
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK 4096
#define MAIN_BLOCKS 1009 /* prime */
#define ARENA_BLOCKS 13  /* prime */

static void *main_blocks[MAIN_BLOCKS];
static void *arena_blocks[ARENA_BLOCKS];
static int to_main[2];

static void run(void **blocks, int n)
{
    for (int i = 0; i < n; i++) {
        blocks[i] = malloc(BLOCK);
        if (blocks[i] == NULL)
            _exit(2);
        memset(blocks[i], 0x5a, BLOCK);
    }
    for (int i = 0; i < n - 1; i++)
        free(blocks[i]);
}

static void *arena_thread(void *arg)
{
    (void)arg;
    run(arena_blocks, ARENA_BLOCKS);
    if (write(to_main[1], "x", 1) != 1)
        _exit(2);
    for (;;)
        pause();
    return NULL;
}

int main(void)
{
    pthread_t t;
    char c, line[128];
    int n;

    if (pipe(to_main) != 0 || pthread_create(&t, NULL, arena_thread, NULL) != 0)
        return 2;
    if (read(to_main[0], &c, 1) != 1)
        return 2;

    run(main_blocks, MAIN_BLOCKS);

    n = snprintf(line, sizeof line, "ready %lx %lx %lx %lx\n",
                 (unsigned long)main_blocks[0], (unsigned long)main_blocks[MAIN_BLOCKS - 1],
                 (unsigned long)arena_blocks[0], (unsigned long)arena_blocks[ARENA_BLOCKS - 1]);
    if (write(1, line, n) != n)
        return 2;

    while (read(0, &c, 1) == 1) {
        if (c == 't') {
            malloc_trim(0);
            if (write(1, "trimmed\n", 8) != 8)
                return 2;
        }
    }
    return 0;
}
