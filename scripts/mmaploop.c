/*
 * mmaploop.c - syscall loops for scripts/bench-kernel.
 * Usage: mmaploop MODE [N]
 *   mmaploop mmap N     -> after each byte read on stdin, runs N times
 *                          mmap(4 KiB, anonymous, private), write one byte,
 *                          munmap, and prints "ns_per_iter <float>"
 *   mmaploop getppid N  -> the same with syscall(SYS_getppid) (the libc
 *                          wrapper is bypassed: one real syscall each)
 *   mmaploop idle       -> does nothing until stdin closes (a process that
 *                          links libc, for heaptrace to trace)
 * Prints "ready" first and waits for one byte on stdin before each round, so
 * timing starts only after a tracer has attached. Exits at end of stdin.
 * Nothing in a timed loop calls the malloc family.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static __attribute__((noinline)) double mmap_loop(long n)
{
    double a = now_ns();
    for (long i = 0; i < n; i++) {
        volatile char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            perror("mmaploop: mmap");
            exit(1);
        }
        p[0] = 1; /* fault the page in: a real mapping, not just a VMA */
        if (munmap((void *)p, 4096)) {
            perror("mmaploop: munmap");
            exit(1);
        }
    }
    return (now_ns() - a) / n;
}

static __attribute__((noinline)) double getppid_loop(long n)
{
    double a = now_ns();
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    return (now_ns() - a) / n;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "idle") && argc != 3)) {
        fprintf(stderr, "usage: mmaploop mmap|getppid N | mmaploop idle\n");
        return 2;
    }
    int idle = !strcmp(argv[1], "idle"), mm = !strcmp(argv[1], "mmap");
    if (!idle && !mm && strcmp(argv[1], "getppid")) {
        fprintf(stderr, "mmaploop: unknown mode %s\n", argv[1]);
        return 2;
    }
    long n = idle ? 0 : atol(argv[2]);
    if (!idle && n <= 0) {
        fprintf(stderr, "mmaploop: N must be positive\n");
        return 2;
    }
    printf("ready\n");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) == 1) {
        if (idle)
            continue;
        printf("ns_per_iter %.3f\n", mm ? mmap_loop(n) : getppid_loop(n));
        fflush(stdout);
    }
    return 0;
}
