// cxx.cc - operator new is charged to its caller, not to libstdc++.
#include <cstdio>
#include <new>
#include <unistd.h>

static void *volatile sink;

__attribute__((noinline)) void cxx_new_site() { sink = new char[1013]; }
__attribute__((noinline)) void cxx_nothrow_site() { sink = new (std::nothrow) char[409]; }
struct alignas(64) Wide { char b[192]; };
__attribute__((noinline)) void cxx_aligned_site() { sink = new Wide; }

int main()
{
    char c;
    std::printf("ready\n");
    std::fflush(stdout);
    if (read(0, &c, 1) != 1)
        return 1;
    for (int i = 0; i < 13; i++) cxx_new_site();
    for (int i = 0; i < 7; i++) cxx_nothrow_site();
    for (int i = 0; i < 5; i++) cxx_aligned_site();
    std::printf("done\n");
    std::fflush(stdout);
    while (read(0, &c, 1) > 0)
        ;
    return 0;
}
