/*
 * workload.c - allocation patterns with exact, prime-numbered counts for
 * heaptrace's integration tests. Usage: workload MODE
 *
 * Protocol: prints "ready" and waits for one byte on stdin (so the test can
 * attach first), runs MODE, prints "done", then waits for stdin to close
 * with every block it did not free still live.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile sink[64];

#define NOINLINE __attribute__((noinline))

NOINLINE void *site_malloc_kept(size_t n) { return malloc(n); }
NOINLINE void site_malloc_freed(size_t n) { void *p = malloc(n); sink[0] = p; free(p); }
NOINLINE void *site_calloc(size_t n, size_t s) { return calloc(n, s); }
NOINLINE void *site_posix_memalign(size_t s) { void *p = NULL; return posix_memalign(&p, 64, s) ? NULL : p; }
NOINLINE void *site_aligned_alloc(size_t s) { return aligned_alloc(64, s); }
NOINLINE void *site_memalign(size_t s) { return memalign(128, s); }
NOINLINE void *site_valloc(size_t s) { return valloc(s); }
NOINLINE void *site_pvalloc(size_t s) { return pvalloc(s); }
NOINLINE void *site_realloc_origin(size_t s) { return malloc(s); }
NOINLINE void *site_realloc_grow(void *p, size_t s) { return realloc(p, s); }
NOINLINE void *site_realloc_fresh(size_t s) { return realloc(NULL, s); }
NOINLINE void *site_reallocarray(void *p, size_t n, size_t s) { return reallocarray(p, n, s); }
NOINLINE void *site_large(size_t s) { return malloc(s); }
NOINLINE void *site_before(size_t s) { return malloc(s); }
NOINLINE void *site_many(size_t s) { return malloc(s); }

/* Direct anonymous mappings made by the program's own code. */
NOINLINE void *site_mmap_kept(size_t pages)
{
    return mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}
NOINLINE void *site_mmap_freed(size_t pages)
{
    void *p = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(p, pages * 4096);
    return p;
}
NOINLINE void *site_mmap_trimmed(size_t pages, size_t unmap)
{
    char *p = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(p + (pages - unmap) * 4096, unmap * 4096); /* a partial munmap of the tail */
    return p;
}

/* A mapping grown and moved by mremap into a hole made elsewhere. */
NOINLINE void *reserve_hole(size_t pages)
{
    void *h = mmap(NULL, pages * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(h, pages * 4096);
    return h;
}
NOINLINE void *site_mmap_moved(size_t pages, size_t grown)
{
    void *p = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *hole = reserve_hole(grown);
    return mremap(p, pages * 4096, grown * 4096, MREMAP_MAYMOVE | MREMAP_FIXED, hole);
}

static void mappings(void)
{
    for (int i = 0; i < 7; i++) sink[17] = site_mmap_kept(13);        /* 7 x 13 pages live */
    for (int i = 0; i < 3; i++) site_mmap_freed(5);                   /* 3 made, 3 unmapped */
    sink[18] = site_mmap_trimmed(11, 4);                              /* 7 pages live */
    sink[20] = site_mmap_moved(3, 17);                                /* 17 pages live, moved */
    for (int i = 0; i < 3; i++) sink[12] = site_large(1 << 20);       /* malloc's own mmaps */
    /* A failed mmap (MAP_FAILED) is not a mapping. */
    sink[19] = mmap(NULL, (size_t)1 << 62, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

static void wait_go(void)
{
    char c;
    printf("ready\n");
    fflush(stdout);
    if (read(0, &c, 1) != 1)
        exit(1);
}

static void wait_end(void)
{
    char c;
    printf("done\n");
    fflush(stdout);
    while (read(0, &c, 1) > 0)
        ;
}

/* The malloc family, each with its own site and exact counts. */
static void family(void)
{
    for (int i = 0; i < 23; i++) sink[1] = site_malloc_kept(1009);          /* 23 x 1009 live */
    for (int i = 0; i < 29; i++) site_malloc_freed(31);                      /* 29 allocs, 29 frees */
    for (int i = 0; i < 11; i++) sink[2] = site_calloc(7, 13);               /* 11 x 91 */
    for (int i = 0; i < 5; i++) sink[3] = site_posix_memalign(2003);         /* 5 x 2003 */
    for (int i = 0; i < 3; i++) sink[4] = site_aligned_alloc(128);           /* 3 x 128 */
    for (int i = 0; i < 7; i++) sink[5] = site_memalign(211);                /* 7 x 211 */
    for (int i = 0; i < 2; i++) sink[6] = site_valloc(101);                  /* 2 x 101 */
    for (int i = 0; i < 2; i++) sink[7] = site_pvalloc(5);                   /* 2 x page */
    /* 13 blocks of 100 grown to 300: all 300 each charged to the origin. */
    for (int i = 0; i < 13; i++) {
        void *p = site_realloc_origin(100);
        sink[8] = site_realloc_grow(p, 300);
    }
    /* realloc(NULL, n) is a fresh block of the realloc site: 17 x 59. */
    for (int i = 0; i < 17; i++) sink[9] = site_realloc_fresh(59);
    /* reallocarray(NULL, 3, 37): 19 x 111. */
    for (int i = 0; i < 19; i++) sink[10] = site_reallocarray(NULL, 3, 37);
    /* Failed realloc: the block stays live and counted. 1 x 4001. */
    void *keep = site_malloc_kept(4001);
    void *fail = site_realloc_grow(keep, (size_t)1 << 62);
    sink[11] = fail ? fail : keep;
    /* Large blocks served by mmap: 3 x 1 MiB, charged once each. */
    for (int i = 0; i < 3; i++) sink[12] = site_large(1 << 20);
    /* Failed calls are not blocks. */
    sink[13] = malloc((size_t)1 << 62);
    sink[14] = calloc((size_t)1 << 40, (size_t)1 << 40);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "family";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(mode, "family")) {
        wait_go();
        family();
    } else if (!strcmp(mode, "mappings")) {
        wait_go();
        mappings();
    } else if (!strcmp(mode, "before")) {
        /* 41 blocks allocated before tracing, freed and reallocated after. */
        static void *old[41];
        for (int i = 0; i < 41; i++) old[i] = site_before(64);
        wait_go();
        for (int i = 0; i < 41; i++) free(old[i]);
        for (int i = 0; i < 41; i++) old[i] = site_before(64);
        for (int i = 0; i < 41; i++) old[i] = realloc(old[i], 128);
        for (int i = 0; i < 41; i += 2) { free(old[i]); old[i] = NULL; }  /* 21 freed, 20 kept */
        sink[15] = old;
    } else if (!strcmp(mode, "many")) {
        long n = argc > 2 ? atol(argv[2]) : 4000037;
        void **blocks = malloc(n * sizeof(void *)); /* one more block: the array */
        wait_go();
        for (long i = 0; i < n; i++) blocks[i] = site_many(32);
        sink[16] = blocks;
    } else if (!strcmp(mode, "exit")) {
        /* Two steps, then exit at once (no wait for stdin to close): the
         * second step's site is new to the tracer when the process is gone.
         * "ready", byte, 23 x 1009 at site_malloc_kept, "step", byte,
         * 11 x 91 at site_calloc, "done", exit 0. */
        char c;
        wait_go();
        for (int i = 0; i < 23; i++) sink[1] = site_malloc_kept(1009);
        printf("step\n");
        fflush(stdout);
        if (read(0, &c, 1) != 1)
            exit(1);
        for (int i = 0; i < 11; i++) sink[2] = site_calloc(7, 13);
        printf("done\n");
        fflush(stdout);
        return 0;
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    wait_end();
    return 0;
}
