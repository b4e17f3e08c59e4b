/*
 * leaky.c - a small service with a real leak, bundled so that a newcomer
 * sees heaptrace work on an idle machine (README's first command).
 *
 * Every tick it handles a "request": a session cache that levels off (not a
 * leak), scratch buffers that are freed (churn), and a request log whose
 * entries are never freed (the leak, 4 KiB per request).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CACHE_SLOTS 64

static char *cache[CACHE_SLOTS];
static void *volatile log_head;

__attribute__((noinline)) static void cache_put(int req)
{
    int slot = req % CACHE_SLOTS;
    free(cache[slot]);
    cache[slot] = malloc(2048);
    memset(cache[slot], req, 2048);
}

__attribute__((noinline)) static void log_request(int req)
{
    char *entry = malloc(4096);
    snprintf(entry, 4096, "request %d", req);
    *(void **)entry = log_head; /* linked, never freed */
    log_head = entry;
}

__attribute__((noinline)) static void handle(int req)
{
    for (int i = 0; i < 50; i++) {
        char *scratch = malloc(64 + i);
        scratch[0] = (char)req;
        free(scratch);
    }
    cache_put(req);
    log_request(req);
}

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 10.0;
    int rate = argc > 2 ? atoi(argv[2]) : 200; /* requests per second */
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    struct timespec tick = {0, 1000000000L / rate};
    long total = (long)(seconds * rate);
    for (long req = 0; req < total && !stop; req++) {
        handle((int)req);
        nanosleep(&tick, NULL);
    }
    return 0;
}
