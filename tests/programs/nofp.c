/*
 * nofp.c - built with -O2 -fomit-frame-pointer: %rbp holds data, so a
 * frame-pointer walk from the allocator yields garbage. Each site must be
 * one row with exact counts. Same protocol as workload.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *volatile sink;

__attribute__((noinline)) void *nofp_site(size_t n, long salt)
{
    /* %rbp points at data on this thread's stack, different every call:
     * the walk's next "frame" is {0, garbage return address}. */
    volatile long buf[4] = {0, 0x10000 + salt * 16, 0, 0};
    register volatile long *r asm("rbp") = buf;
    asm volatile("" : "+r"(r));
    void *p = malloc(n);
    asm volatile("" : : "r"(r));
    return p;
}

__attribute__((noinline)) void *nofp_caller_a(long i) { return nofp_site(53, i); }
__attribute__((noinline)) void *nofp_caller_b(long i) { return nofp_site(53, i * 7 + 1); }

int main(void)
{
    char c;
    printf("ready\n");
    fflush(stdout);
    if (read(0, &c, 1) != 1)
        return 1;
    for (long i = 0; i < 37; i++)
        sink = (i & 1) ? nofp_caller_a(i) : nofp_caller_b(i);
    printf("done\n");
    fflush(stdout);
    while (read(0, &c, 1) > 0)
        ;
    return 0;
}
