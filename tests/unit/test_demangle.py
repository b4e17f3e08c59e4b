from tracer.demangle import demangle


def test_cxx_names_are_demangled():
    assert demangle("_Z12cxx_new_sitev") == "cxx_new_site()"
    assert demangle("_ZnwmRKSt9nothrow_t") == "operator new(unsigned long, std::nothrow_t const&)"


def test_c_names_and_garbage_are_unchanged():
    assert demangle("malloc") == "malloc"
    assert demangle("_Zgarbage!!") == "_Zgarbage!!"
    assert demangle("_Z\udcff") == "_Z\udcff"
