/*
 * churn.c - malloc/free pairs as fast as possible, for scripts/bench.
 * Usage: churn N MODE
 *   churn 2000000 pairs  -> after each byte read on stdin, runs N
 *                           malloc+free pairs and prints
 *                           "ns_per_pair <float>"; exits at end of stdin.
 *                           (One byte, then EOF: one round, as before.)
 *   churn 4000037 hold   -> after one byte, makes exactly N malloc(32)
 *                           calls and keeps every block live, prints
 *                           "held N ns_per_alloc <float>", then waits for
 *                           stdin to close.
 * Prints "ready" first and waits for one byte on stdin before starting (so
 * probes attach first).
 *
 * Nothing else in the measured part calls the malloc family: stdout's buffer
 * is allocated by the "ready" printf, before any tracer attaches, and the
 * array of held pointers is static (.bss: untouched pages cost nothing), so
 * a tracer attached at "ready" must count exactly N live blocks in hold mode.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HOLD_MAX (16L << 20) /* 16 Mi pointers: 128 MiB of .bss, touched only as used */

static void *volatile sink;
static void *blocks[HOLD_MAX];

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

/* noinline: one fixed call site for every traced malloc, as in a service. */
static __attribute__((noinline)) double pairs(long n)
{
    double a = now_ns();
    for (long i = 0; i < n; i++) {
        void *p = malloc(16 + (i & 63));
        sink = p;
        free(p);
    }
    return (now_ns() - a) / n;
}

static __attribute__((noinline)) double hold(long n)
{
    double a = now_ns();
    for (long i = 0; i < n; i++) {
        blocks[i] = malloc(32);
        if (!blocks[i]) {
            fprintf(stderr, "churn: malloc failed after %ld blocks\n", i);
            exit(1);
        }
    }
    sink = blocks;
    return (now_ns() - a) / n;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    const char *mode = argc > 2 ? argv[2] : "pairs";
    char c;
    if (n <= 0 || (strcmp(mode, "pairs") && strcmp(mode, "hold"))) {
        fprintf(stderr, "usage: churn N pairs|hold\n");
        return 2;
    }
    if (!strcmp(mode, "hold") && n > HOLD_MAX) {
        fprintf(stderr, "churn: hold at most %ld blocks\n", HOLD_MAX);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    if (read(0, &c, 1) != 1)
        return 1;
    if (!strcmp(mode, "hold")) {
        double ns = hold(n);
        printf("held %ld ns_per_alloc %.2f\n", n, ns);
        while (read(0, &c, 1) > 0)
            ;
        return 0;
    }
    do {
        printf("ns_per_pair %.2f\n", pairs(n));
    } while (read(0, &c, 1) == 1);
    return 0;
}
