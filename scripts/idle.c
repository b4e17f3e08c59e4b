/*
 * idle.c - an idle, dynamically linked process, for scripts/bench-all.
 * Usage: idle
 * Allocates a few small blocks (so its libc's malloc has a heap), prints
 * "ready", then blocks reading stdin and exits at end of stdin: many copies
 * share one pipe, and closing its write end ends them all.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *volatile keep[8];

int main(void)
{
    char c;
    for (int i = 0; i < 8; i++)
        keep[i] = malloc(32 << i);
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n");
    while (read(0, &c, 1) > 0)
        ;
    return 0;
}
