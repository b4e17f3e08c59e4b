/*
 * hostile.c - a process and functions with hostile names, for heaptrace's
 * end-to-end test of name handling (tests/integration/test_hostile.py).
 *
 * Protocol (as workload.c): sets its process name, prints "ready", waits
 * for one byte on stdin, leaks one prime number of bytes from each
 * function below, prints "done", then waits for stdin to close.
 *
 * The process name (comm, at most 15 bytes): it starts with '=' (a
 * spreadsheet formula), holds an escape sequence, rich markup and a byte
 * that is not UTF-8.
 *
 * The function names are set with asm labels (quoted for the assembler,
 * which then takes any byte but a newline and NUL): terminal escapes (CSI,
 * OSC, BEL, the C1 CSI U+009B), rich markup, a bidi override, a ';' (the
 * folded-stack separator), bytes that are not UTF-8, and one name of about
 * 4 KiB. The assembler cannot put a newline in a name: the build renames
 * NL_PLACEHOLDER afterwards (see the programs fixture in
 * tests/integration/conftest.py):
 *   objcopy --redefine-sym "hostile_nl_placeholder=line1<LF>line2[bold]"
 *
 * Each function leaks one block whose size is its own prime (the test
 * checks each name's live bytes in the CSV). Larger blocks for the names
 * that matter most: the live view shows five call sites per process.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static void *volatile sink[16];

#define X16 "xxxxxxxxxxxxxxxx"
#define X256 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16 X16
#define X2K X256 X256 X256 X256 X256 X256 X256 X256

/* Sizes, largest first (the live view shows the top five per process). */
#define SIZE_ESC 7919
#define SIZE_LINK 7907
#define SIZE_NL 7901
#define SIZE_OSC 7883
#define SIZE_SEMI 6007
#define SIZE_BYTES 5003
#define SIZE_LONG 4001

NOINLINE void *f_esc(size_t n) __asm__("\"esc\x1b[2J\x1b[31m[bold]red\"");
NOINLINE void *f_link(size_t n) __asm__("\"[link=http://x]click[/link]\"");
NOINLINE void *f_nl(size_t n) __asm__("hostile_nl_placeholder");
NOINLINE void *f_osc(size_t n) __asm__("\"osc\x1b]0;pwned\x07" "\xe2\x80\xae" "rlo" "\xc2\x9b" "2Jc1\"");
NOINLINE void *f_semi(size_t n) __asm__("\"semi;colon;fn\"");
NOINLINE void *f_bytes(size_t n) __asm__("\"bytes\xff\xfe\xc0\x80" "end\"");
NOINLINE void *f_long(size_t n) __asm__("\"long" X2K "\x1b[2J" X2K "\"");

NOINLINE void *f_esc(size_t n) { void *p = malloc(n); sink[0] = p; return p; }
NOINLINE void *f_link(size_t n) { void *p = malloc(n); sink[1] = p; return p; }
NOINLINE void *f_nl(size_t n) { void *p = malloc(n); sink[2] = p; return p; }
NOINLINE void *f_osc(size_t n) { void *p = malloc(n); sink[3] = p; return p; }
NOINLINE void *f_semi(size_t n) { void *p = malloc(n); sink[4] = p; return p; }
NOINLINE void *f_bytes(size_t n) { void *p = malloc(n); sink[5] = p; return p; }
NOINLINE void *f_long(size_t n) { void *p = malloc(n); sink[6] = p; return p; }

int main(void)
{
    char c;
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* 14 bytes: '=', ESC [31m, rich markup, a byte that is not UTF-8. */
    if (prctl(PR_SET_NAME, "=x\x1b[31m[b]\xff" "end", 0, 0, 0) != 0)
        return 1;
    printf("ready\n");
    fflush(stdout);
    if (read(0, &c, 1) != 1)
        return 1;
    sink[8] = f_esc(SIZE_ESC);
    sink[9] = f_link(SIZE_LINK);
    sink[10] = f_nl(SIZE_NL);
    sink[11] = f_osc(SIZE_OSC);
    sink[12] = f_semi(SIZE_SEMI);
    sink[13] = f_bytes(SIZE_BYTES);
    sink[14] = f_long(SIZE_LONG);
    printf("done\n");
    fflush(stdout);
    while (read(0, &c, 1) > 0)
        ;
    return 0;
}
