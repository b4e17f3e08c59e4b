/* releasable.c - a program whose own allocator-like function is probed by
 * tests/integration/test_release.py: pick(n) is called in a loop; after
 * each 's' on stdin it prints how many calls it made and a checksum of
 * their results (so a byte taken out wrongly would show). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>

__attribute__((noinline)) void *pick(unsigned long n)
{
    static char pool[4096];
    return pool + (n * 7) % 4000;
}

int main(void)
{
    printf("ready\n");
    fflush(stdout);
    fcntl(0, F_SETFL, O_NONBLOCK);
    unsigned long calls = 0, sum = 0;
    for (;;) {
        for (int i = 0; i < 1000; i++)
            sum += (unsigned long)pick(calls++) & 0xfff;
        char c;
        ssize_t r = read(0, &c, 1);
        if (r == 0)
            return 0;
        if (r == 1) {
            printf("calls %lu sum %lu\n", calls, sum);
            fflush(stdout);
        }
        usleep(1000);
    }
}
