/*
 * retention.c - allocator retention: the program frees, glibc keeps.
 *
 * Set-up (before "ready", so before any tracer attaches): load_batch()
 * allocates MIB MiB (argv[1], default 192) in 4000-byte records from the
 * brk heap, then one small block above them (keep_session: a live chunk
 * that pins the heap's top), then frees every record. RSS stays at MIB
 * MiB: the freed memory sits in one free chunk below the live one, which
 * brk cannot shrink past. Phase two calls malloc_trim(0), which gives it
 * back with madvise.
 */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include "common.h"

#define RECORD 4000

static void *volatile session;

__attribute__((noinline)) static void **load_batch(long n)
{
    void **records = malloc(n * sizeof(void *));
    for (long i = 0; i < n; i++) {
        records[i] = malloc(RECORD);
        memset(records[i], 1, RECORD);
    }
    return records;
}

__attribute__((noinline)) static void keep_session(void)
{
    session = malloc(64);
    memset(session, 2, 64);
}

int main(int argc, char **argv)
{
    long mib = argc > 1 ? atol(argv[1]) : 192;
    long n = mib * 1024 * 1024 / RECORD;
    void **records = load_batch(n);
    keep_session();
    for (long i = 0; i < n; i++)
        free(records[i]);
    free(records);
    ready_then_wait();
    malloc_trim(0);
    done_then_idle();
}
