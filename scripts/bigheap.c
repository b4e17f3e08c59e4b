/*
 * bigheap.c - a big main (brk) heap for the census part of scripts/bench-kernel.
 * Usage: bigheap BLOCK_SIZE HEAP_MIB
 *   Allocates malloc(BLOCK_SIZE) blocks (each written in full) until their
 *   chunks fill HEAP_MIB MiB, frees every other one (free chunks that cannot
 *   merge), prints
 *     "ready blocks <n> freed <n> heap_bytes <n> outside_brk <n> ns_per_alloc <f>"
 *   and waits for stdin to close.
 * Every block comes from brk: M_MMAP_MAX 0 turns malloc's mmap path off
 * (BLOCK_SIZE must stay below the default mmap threshold anyway), and the
 * array of pointers is mmapped, not malloc'd, so it is not in the heap.
 * outside_brk counts blocks not inside [initial brk, final brk): it must be 0.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: bigheap BLOCK_SIZE HEAP_MIB\n");
        return 2;
    }
    long size = atol(argv[1]), mib = atol(argv[2]);
    if (size <= 0 || size >= 128 * 1024 || mib <= 0) {
        fprintf(stderr, "bigheap: BLOCK_SIZE must be in 1..131071 (below the mmap threshold), HEAP_MIB > 0\n");
        return 2;
    }
    mallopt(M_MMAP_MAX, 0);                    /* nothing from mmap */
    mallopt(M_TRIM_THRESHOLD, 1 << 30);        /* keep the heap as built */
    size_t chunk = ((size_t)size + 8 + 15) & ~(size_t)15; /* request2size */
    if (chunk < 32)
        chunk = 32;
    long n = (long)(((size_t)mib << 20) / chunk);
    void **blocks = mmap(NULL, n * sizeof(void *), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (blocks == MAP_FAILED) {
        perror("bigheap: mmap of the pointer array");
        return 1;
    }
    char *brk0 = sbrk(0);
    double a = now_ns();
    for (long i = 0; i < n; i++) {
        blocks[i] = malloc(size);
        if (!blocks[i]) {
            fprintf(stderr, "bigheap: malloc failed after %ld blocks\n", i);
            return 1;
        }
        memset(blocks[i], 0xab, size);
    }
    double per = (now_ns() - a) / n;
    char *brk1 = sbrk(0);
    long outside = 0, freed = 0;
    for (long i = 0; i < n; i++)
        if ((char *)blocks[i] < brk0 || (char *)blocks[i] >= brk1)
            outside++;
    for (long i = 1; i < n; i += 2) {
        free(blocks[i]);
        freed++;
    }
    printf("ready blocks %ld freed %ld heap_bytes %ld outside_brk %ld ns_per_alloc %.1f\n",
           n, freed, (long)(brk1 - brk0), outside, per);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) == 1)
        ;
    return 0;
}
