/*
 * soakload.c - the workloads of scripts/soak (built there with gcc -O1
 * -fno-omit-frame-pointer -fno-optimize-sibling-calls -pthread).
 *
 *   soakload leak HZ        a leak at a known call site: HZ times a second
 *                           leak_request() mallocs LEAK_SIZE bytes and never
 *                           frees them; each tick it also replaces one of a
 *                           ring of RING blocks of TEMP_SIZE bytes allocated
 *                           in the same function (so the site sees frees too).
 *   soakload churn RATE T   T threads making RATE malloc/free pairs a second
 *                           in all, over four call sites (churn_malloc,
 *                           churn_calloc, churn_memalign, churn_realloc) into
 *                           a pool of POOL live blocks per thread; and 20
 *                           mmap+munmap of 64 KiB a second (churn_map) into
 *                           a ring of MAPS mappings.
 *   soakload spawn RATE     process churn: RATE short-lived children a second
 *                           (posix_spawn of this program as "child"), reaped;
 *                           prints "spawned N failed F" every 5 s.
 *   soakload child          mallocs (small, and one mmap-served 256 KiB),
 *                           mmaps, mprotects, madvises, munmaps, and exits.
 *
 * leak, churn and spawn print "ready" (stdout's buffer is allocated by that
 * first printf, before any tracer attaches) and start when one byte arrives
 * on stdin ('g'). Then on stdin: 's' stops the work and prints the exact
 * state ("stopped ..."): nothing is allocated or freed (or spawned) after it;
 * end of stdin (or SIGTERM) exits. The totals count only what was allocated after 'g', with
 * requested sizes (calloc: n * size), the way heaptrace counts live bytes.
 *
 *   leak:  "stopped ticks T leaked_blocks K leaked_bytes B"
 *          (the ring is freed at 's': leak_request() holds exactly B bytes)
 *   churn: "stopped ops N live_blocks K live_bytes B map_bytes M"
 *          (the churn_* sites hold exactly K blocks and B bytes through
 *          malloc; churn_map holds M bytes of its own anonymous mappings)
 *   spawn: "stopped spawned N failed F" (children spawned since 'g'; the
 *          running ones are reaped before the line is printed)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LEAK_SIZE 1031   /* bytes leaked per tick (prime) */
#define TEMP_SIZE 4099   /* bytes of each transient ring block (prime) */
#define RING 7
#define POOL 4096        /* live blocks per churn thread */
#define MAPS 8
#define MAP_SIZE (64 << 10)
#define MAP_HZ 20

extern char **environ;
static volatile sig_atomic_t quit;
static void on_term(int sig) { (void)sig; quit = 1; }

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* One command byte from stdin within ms milliseconds: the byte, 0 for none,
 * -1 at end of stdin (or an error). */
static int command(int ms)
{
    struct pollfd p = {.fd = 0, .events = POLLIN};
    char c;
    int r = poll(&p, 1, ms);
    if (r < 0)
        return errno == EINTR ? 0 : -1;
    if (r == 0)
        return 0;
    r = read(0, &c, 1);
    if (r < 0)
        return errno == EINTR ? 0 : -1;
    return r == 0 ? -1 : (unsigned char)c;
}

/* The next command byte (as command()), waiting until the work is due at
 * `next` (now_s() time), or up to 1 s once the work is stopped. */
static int command_until(double next, int stopped)
{
    double left = next - now_s();
    return command(stopped ? 1000 : (left > 0 ? (int)(left * 1000) + 1 : 0));
}

static int wait_go(void)
{
    int c;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    while ((c = command(1000)) == 0 && !quit)
        ;
    return c > 0 && !quit;
}


/* -- leak ------------------------------------------------------------------- */

static void *ring[RING];
static void *volatile sink;

/* The leak's call site: both blocks come from here (noinline; the build has
 * -fno-optimize-sibling-calls, so no malloc is a tail call). The LEAK_SIZE
 * block is never freed; the TEMP_SIZE one replaces the ring's oldest. */
static __attribute__((noinline)) void leak_request(long tick)
{
    void *p = malloc(LEAK_SIZE);
    void *t = malloc(TEMP_SIZE);
    if (!p || !t) {
        fprintf(stderr, "soakload: malloc failed\n");
        exit(1);
    }
    memset(p, 0x5a, 64);
    memset(t, 0xa5, 64);
    sink = p;
    free(ring[tick % RING]);
    ring[tick % RING] = t;
}

static int leak_main(int hz)
{
    double period = 1.0 / hz, next;
    long ticks = 0;
    int c, stopped = 0;
    if (!wait_go())
        return 0;
    next = now_s() + period;
    while (!quit) {
        c = command_until(next, stopped);
        if (c < 0)
            break;
        if (c == 's' && !stopped) {
            for (int i = 0; i < RING; i++) {
                free(ring[i]);
                ring[i] = NULL;
            }
            stopped = 1;
            printf("stopped ticks %ld leaked_blocks %ld leaked_bytes %ld\n", ticks, ticks,
                   ticks * (long)LEAK_SIZE);
        }
        while (!stopped && now_s() >= next) {
            leak_request(ticks++);
            next += period;
        }
    }
    return 0;
}

/* -- churn ------------------------------------------------------------------ */

struct worker {
    pthread_t th;
    double rate;            /* ops a second */
    void *pool[POOL];
    size_t size[POOL];
    long ops, live_blocks, live_bytes;
    unsigned long rng;
};

static atomic_int stop_work, parked, leave;

static __attribute__((noinline)) void *churn_malloc(size_t n) { void *p = malloc(n); sink = p; return p; }
static __attribute__((noinline)) void *churn_calloc(size_t k, size_t n) { void *p = calloc(k, n); sink = p; return p; }
static __attribute__((noinline)) void *churn_memalign(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n))
        p = NULL;
    sink = p;
    return p;
}
static __attribute__((noinline)) void *churn_realloc(void *old, size_t n) { void *p = realloc(old, n); sink = p; return p; }

static unsigned long next_rand(unsigned long *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void churn_op(struct worker *w)
{
    unsigned long r = next_rand(&w->rng);
    int i = r % POOL;
    size_t n = 16 + (r >> 12) % 4081;   /* 16..4096 bytes */
    void *p;
    if ((r >> 24) % 2000 == 0)
        n = 200 << 10;                     /* now and then one the allocator mmaps */
    switch (w->ops % 4) {
    case 0:
    case 1:
    case 2:
        if (w->pool[i]) {
            free(w->pool[i]);
            w->live_blocks--;
            w->live_bytes -= w->size[i];
            w->pool[i] = NULL;
        }
        if (w->ops % 4 == 0)
            p = churn_malloc(n);
        else if (w->ops % 4 == 1) {
            n = (n + 7) / 8 * 8;
            p = churn_calloc(n / 8, 8);
        } else
            p = churn_memalign(n);
        if (!p)
            goto oom;
        w->pool[i] = p;
        w->size[i] = n;
        w->live_blocks++;
        w->live_bytes += n;
        break;
    default:
        p = churn_realloc(w->pool[i], n);
        if (!p)
            goto oom;
        if (w->pool[i]) {
            w->live_bytes -= w->size[i];
        } else {
            w->live_blocks++;
        }
        w->pool[i] = p;
        w->size[i] = n;
        w->live_bytes += n;
    }
    ((char *)p)[0] = 1;
    w->ops++;
    return;
oom:
    fprintf(stderr, "soakload: allocation of %zu bytes failed\n", n);
    exit(1);
}

static void *churn_thread(void *arg)
{
    struct worker *w = arg;
    double t0 = now_s();
    struct timespec nap = {0, 5 * 1000 * 1000};
    while (!quit && !atomic_load(&stop_work)) {
        long due = (long)((now_s() - t0) * w->rate);
        for (int k = 0; w->ops < due && k < 20000 && !atomic_load(&stop_work); k++)
            churn_op(w);
        nanosleep(&nap, NULL);
    }
    atomic_fetch_add(&parked, 1);
    /* Parked, not ended: a thread's exit frees its tcache through free(),
     * which a tracer would count as frees of blocks it never saw. */
    while (!quit && !atomic_load(&leave))
        nanosleep(&nap, NULL);
    return NULL;
}

static void *maps[MAPS];

static __attribute__((noinline)) void *churn_map(void)
{
    void *p = mmap(NULL, MAP_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "soakload: mmap failed: %s\n", strerror(errno));
        exit(1);
    }
    sink = p;
    return p;
}

static void map_op(long k)
{
    int i = k % MAPS;
    char *p;
    if (maps[i])
        munmap(maps[i], MAP_SIZE);
    p = maps[i] = churn_map();
    memset(p, 1, MAP_SIZE);
    mprotect(p, 4096, PROT_READ);                     /* splits the mapping */
    madvise(p + 8192, 8192, MADV_DONTNEED);           /* still mapped */
}

static int churn_main(double rate, int nthreads)
{
    struct worker *w = calloc(nthreads, sizeof *w);   /* before "ready": not traced */
    double next;
    long maps_done = 0;
    int c, stopped = 0;
    if (!w || !wait_go())
        return w ? 0 : 1;
    for (int t = 0; t < nthreads; t++) {
        w[t].rate = rate / nthreads;
        w[t].rng = 0x9e3779b97f4a7c15UL * (t + 1);
        if (pthread_create(&w[t].th, NULL, churn_thread, &w[t])) {
            fprintf(stderr, "soakload: pthread_create failed\n");
            return 1;
        }
    }
    next = now_s();
    while (!quit) {
        c = command_until(next, stopped);
        if (c < 0)
            break;
        if (c == 's' && !stopped) {
            long ops = 0, blocks = 0, bytes = 0, mapped = 0;
            atomic_store(&stop_work, 1);
            while (atomic_load(&parked) < nthreads) {
                struct timespec nap = {0, 1000 * 1000};
                nanosleep(&nap, NULL);
            }
            for (int t = 0; t < nthreads; t++) {
                ops += w[t].ops;
                blocks += w[t].live_blocks;
                bytes += w[t].live_bytes;
            }
            for (int i = 0; i < MAPS; i++)
                mapped += maps[i] ? MAP_SIZE : 0;
            stopped = 1;
            printf("stopped ops %ld live_blocks %ld live_bytes %ld map_bytes %ld\n", ops, blocks, bytes,
                   mapped);
        }
        while (!stopped && now_s() >= next) {
            map_op(maps_done++);
            next += 1.0 / MAP_HZ;
        }
    }
    atomic_store(&stop_work, 1);
    atomic_store(&leave, 1);
    for (int t = 0; t < nthreads; t++)
        pthread_join(w[t].th, NULL);
    return 0;
}

/* -- process churn ------------------------------------------------------------ */

static int child_main(void)
{
    void *small[20];
    char *big, *m;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        return 0;
    for (int i = 0; i < 20; i++) {
        small[i] = malloc(32 + i * 100);
        if (!small[i])
            return 3;
        memset(small[i], i, 32);
    }
    big = malloc(256 << 10);           /* served by mmap */
    if (!big)
        return 3;
    big[0] = 1;
    for (int i = 0; i < 20; i += 2)
        free(small[i]);
    free(big);
    big = malloc(100 << 10);           /* grows the brk heap */
    if (!big)
        return 3;
    memset(big, 2, 100 << 10);
    m = mmap(NULL, MAP_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 4;
    memset(m, 3, MAP_SIZE);
    mprotect(m, 4096, PROT_READ);
    madvise(m + 8192, 8192, MADV_DONTNEED);
    munmap(m, MAP_SIZE);
    return 0;                          /* the rest is left to exit */
}

static void reap(long *running, long *failed, int options)
{
    int status;
    while (*running > 0 && waitpid(-1, &status, options) > 0) {
        --*running;
        if (!WIFEXITED(status) || WEXITSTATUS(status))
            ++*failed;
    }
}

static int spawn_main(double rate)
{
    char self[4096];
    char *argv[] = {self, "child", NULL};
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    long spawned = 0, failed = 0, running = 0;
    double next, report;
    int stopped = 0;
    pid_t pid;
    if (n <= 0) {
        fprintf(stderr, "soakload: readlink /proc/self/exe: %s\n", strerror(errno));
        return 1;
    }
    self[n] = 0;
    if (!wait_go())
        return 0;
    next = report = now_s();
    while (!quit) {
        int c = command_until(next, stopped);
        if (c < 0)
            break;
        reap(&running, &failed, WNOHANG);
        if (c == 's' && !stopped) {
            reap(&running, &failed, 0);
            stopped = 1;
            printf("stopped spawned %ld failed %ld\n", spawned, failed);
        }
        while (!stopped && now_s() >= next && !quit) {
            if (running < 1000 && posix_spawn(&pid, self, NULL, NULL, argv, environ) == 0) {
                spawned++;
                running++;
            } else {
                failed++;
            }
            next += 1.0 / rate;
        }
        if (!stopped && now_s() >= report) {
            printf("spawned %ld failed %ld\n", spawned, failed);
            report += 5;
        }
    }
    reap(&running, &failed, 0);
    return 0;
}

int main(int argc, char **argv)
{
    struct sigaction sa = {.sa_handler = on_term};   /* no SA_RESTART: poll returns */
    const char *mode = argc > 1 ? argv[1] : "";
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(mode, "child"))
        return child_main();
    if (!strcmp(mode, "leak") && argc == 3 && atoi(argv[2]) > 0)
        return leak_main(atoi(argv[2]));
    if (!strcmp(mode, "churn") && argc == 4 && atof(argv[2]) > 0 && atoi(argv[3]) > 0)
        return churn_main(atof(argv[2]), atoi(argv[3]));
    if (!strcmp(mode, "spawn") && argc == 3 && atof(argv[2]) > 0)
        return spawn_main(atof(argv[2]));
    fprintf(stderr, "usage: soakload leak HZ | churn RATE THREADS | spawn RATE | child\n");
    return 2;
}
