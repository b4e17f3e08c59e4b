/* churn.c - malloc+free pairs as fast as it can (tests/integration/
 * test_budget.py): every 100 ms it prints "ns N" (nanoseconds per pair over
 * the last 100 ms); it ends when stdin closes. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

__attribute__((noinline)) void churn(long n)
{
    for (long i = 0; i < n; i++) {
        void *volatile p = malloc(32);
        free(p);
    }
}

int main(void)
{
    printf("ready\n");
    fflush(stdout);
    fcntl(0, F_SETFL, O_NONBLOCK);
    for (;;) {
        double t0 = now(), t;
        long pairs = 0;
        do {
            churn(1000);
            pairs += 1000;
            t = now();
        } while (t - t0 < 0.1);
        printf("ns %.1f\n", (t - t0) * 1e9 / pairs);
        fflush(stdout);
        char c;
        if (read(0, &c, 1) == 0)
            return 0;
    }
}
