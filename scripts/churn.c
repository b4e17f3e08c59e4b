/*
 * churn.c - malloc/free pairs as fast as possible, for scripts/bench.
 * Usage: churn SECONDS_OR_PAIRS MODE
 *   churn 2000000 pairs  -> prints "ns_per_pair <float>" after N pairs
 *   churn 4000037 hold   -> keeps N live 32-byte blocks, prints "held",
 *                           then waits for stdin to close.
 * Waits for one byte on stdin before starting (so probes attach first).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void *volatile sink;

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    const char *mode = argc > 2 ? argv[2] : "pairs";
    char c;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    if (read(0, &c, 1) != 1)
        return 1;
    if (!strcmp(mode, "hold")) {
        void **blocks = malloc(n * sizeof(void *));
        for (long i = 0; i < n; i++)
            blocks[i] = malloc(32);
        sink = blocks;
        printf("held\n");
        while (read(0, &c, 1) > 0)
            ;
        return 0;
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        void *p = malloc(16 + (i & 63));
        sink = p;
        free(p);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("ns_per_pair %.2f\n", ns / n);
    return 0;
}
