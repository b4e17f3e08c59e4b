/*
 * allproc.c - workloads for heaptrace --all (tests/integration/test_all.py),
 * with exact, prime-numbered allocations at named functions.
 *
 * Protocol (as workload.c): print "ready", wait for one byte on stdin, do
 * the work, print "done", then wait for stdin to close with every block it
 * did not free still live. Modes:
 *
 *   leak N S             N blocks of S bytes at leak_main()
 *   mmap N S P           leak, then P pages mapped at map_kept() (anonymous,
 *                        written, never unmapped)
 *   exec N S PROG M T    N x S at leak_before_exec(), print "leaked", wait for
 *                        one byte, then exec PROG leak M T (same PID: PROG
 *                        says "ready" again and follows this protocol)
 *   fork K N S GAP_US    K children one after the other, each N x S at
 *                        child_leak() then _exit(0) (no stdio in the child);
 *                        the parent prints "child PID" for each and waits
 *                        for it, GAP_US microseconds apart
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define MAX_BLOCKS 4096

static void *volatile kept[MAX_BLOCKS];
static int nkept;

static void keep(void *p)
{
    if (nkept < MAX_BLOCKS)
        kept[nkept++] = p;
}

NOINLINE void *leak_main(size_t s) { return malloc(s); }
NOINLINE void *leak_before_exec(size_t s) { return malloc(s); }
NOINLINE void *child_leak(size_t s) { return malloc(s); }

NOINLINE void *map_kept(size_t pages)
{
    char *p = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memset(p, 1, pages * 4096);
    return p;
}

static void say(const char *what)
{
    printf("%s\n", what);
    fflush(stdout);
}

static void wait_byte(void)
{
    char c;
    if (read(0, &c, 1) != 1)
        exit(3);
}

static void leak(void *(*site)(size_t), long n, long s)
{
    for (long i = 0; i < n; i++)
        keep(site(s));
}

static int usage(void)
{
    fprintf(stderr, "usage: allproc leak N S | mmap N S P | exec N S PROG M T | fork K N S GAP_US\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *mode = argv[1];
    say("ready");
    wait_byte();
    if (!strcmp(mode, "leak") && argc == 4) {
        leak(leak_main, atol(argv[2]), atol(argv[3]));
    } else if (!strcmp(mode, "mmap") && argc == 5) {
        leak(leak_main, atol(argv[2]), atol(argv[3]));
        if (!map_kept(atol(argv[4])))
            return 4;
    } else if (!strcmp(mode, "exec") && argc == 7) {
        leak(leak_before_exec, atol(argv[2]), atol(argv[3]));
        say("leaked");
        wait_byte();
        char *next[] = {argv[4], "leak", argv[5], argv[6], NULL};
        execv(argv[4], next);
        perror("execv");
        return 5;
    } else if (!strcmp(mode, "fork") && argc == 6) {
        long k = atol(argv[2]), n = atol(argv[3]), s = atol(argv[4]), gap = atol(argv[5]);
        for (long i = 0; i < k; i++) {
            pid_t pid = fork();
            if (pid < 0)
                return 6;
            if (pid == 0) {
                leak(child_leak, n, s);
                _exit(0);
            }
            printf("child %d\n", (int)pid);
            fflush(stdout);
            int status;
            if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
                return 7;
            if (gap)
                usleep(gap);
        }
    } else {
        return usage();
    }
    say("done");
    char c;
    while (read(0, &c, 1) > 0)
        ;
    return 0;
}
