/*
 * common.h - the protocol of heaptrace's bundled workloads (demo and tests):
 * set up, print "ready", wait for one byte on stdin (EOF goes on too), run
 * phase two, print "done", then idle until killed, so that a session can
 * look at what the process keeps.
 */
#include <stdio.h>
#include <unistd.h>

static void ready_then_wait(void)
{
    printf("ready\n");
    fflush(stdout);
    char c;
    if (read(0, &c, 1) < 0)
        perror("read");
}

static void done_then_idle(void)
{
    printf("done\n");
    fflush(stdout);
    for (;;)
        pause();
}
