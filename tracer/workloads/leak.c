/*
 * leak.c - a real leak next to a cache that levels off.
 *
 * Phase two handles 50 "requests" a second for SECONDS (argv[1], 0: until
 * killed): each remembers 1031 bytes in remember_request() and never frees
 * them (the leak: 50.3 KiB/s), puts 2 KiB into a 64-slot cache (cache_put:
 * grows to 128 KiB, then levels off: not a leak) and churns scratch buffers.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "common.h"

#define SLOTS 64
static char *cache[SLOTS];
static void *volatile history;

__attribute__((noinline)) static void remember_request(int req)
{
    char *r = malloc(1031);
    memset(r, req, 1031);
    *(void **)r = history; /* linked, never freed */
    history = r;
}

__attribute__((noinline)) static void cache_put(int req)
{
    free(cache[req % SLOTS]);
    cache[req % SLOTS] = malloc(2048);
    memset(cache[req % SLOTS], req, 2048);
}

__attribute__((noinline)) static void handle(int req)
{
    for (int i = 0; i < 20; i++) {
        char *scratch = malloc(64 + i);
        scratch[0] = (char)req;
        free(scratch);
    }
    cache_put(req);
    remember_request(req);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 0;
    ready_then_wait();
    struct timespec tick = {0, 20 * 1000 * 1000};
    for (long req = 0; seconds <= 0 || req < seconds * 50; req++) {
        handle((int)req);
        nanosleep(&tick, NULL);
    }
    done_then_idle();
}
