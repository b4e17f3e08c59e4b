"""Reading and sweeping BPF hash maps in bounded batches (tracer.kernel), on
real kernel maps with heaptrace's block key layout: every entry read once,
the sweep deletes exactly the blocks of the ended incarnations, keys gone
meanwhile are no error, and empty or tiny maps work."""
from __future__ import annotations

import pytest

from tracer import layout
from tracer.kernel import Kernel

pytestmark = pytest.mark.integration

SOURCE = """
struct alloc_key { u32 tgid; u32 gen; u64 addr; };
struct alloc_info { u64 size; u32 slot; u32 weight; };
BPF_F_TABLE("hash", struct alloc_key, struct alloc_info, allocs, 200000, BPF_F_NO_PREALLOC);
BPF_HASH(tiny, u32, u32, 3);
int unused(void *ctx) { return 0; }
"""

N = 100_000


@pytest.fixture
def maps():
    from bcc import BPF
    bpf = BPF(text=SOURCE.encode())
    try:
        table = bpf[b"allocs"]
        keys, vals = (table.Key * N)(), (table.Leaf * N)()
        for i in range(N):
            keys[i].tgid, keys[i].gen, keys[i].addr = 1000 + i % 40, i % 3, 0x10000 + 16 * i
            vals[i].size = i
        table.items_update_batch(keys, vals)
        kernel = Kernel.__new__(Kernel)   # its map readers only, on this program's maps
        kernel.bpf = bpf
        yield kernel, bpf
    finally:
        bpf.cleanup()


def entries(kernel, name):
    return {layout.KEY.unpack(k): int.from_bytes(v[:8], "little")
            for k, v in Kernel._items(kernel._map(name))}


def test_every_entry_read_once_in_batches(maps, monkeypatch):
    kernel, _ = maps
    monkeypatch.setattr(Kernel, "BATCH", 1000)   # a hundred batches
    got = list(Kernel._items(kernel._map("allocs")))
    assert len(got) == N
    read = {layout.KEY.unpack(k): int.from_bytes(v[:8], "little") for k, v in got}
    assert read == {(1000 + i % 40, i % 3, 0x10000 + 16 * i): i for i in range(N)}


def test_empty_and_tiny_maps(maps):
    kernel, bpf = maps
    assert list(Kernel._items(kernel._map("tiny"))) == []
    tiny = bpf[b"tiny"]
    for i in range(3):
        tiny[tiny.Key(i)] = tiny.Leaf(10 * i)
    assert sorted((int.from_bytes(k, "little"), int.from_bytes(v, "little"))
                  for k, v in Kernel._items(tiny)) == [(0, 0), (1, 10), (2, 20)]


def test_sweep_deletes_exactly_the_ended_incarnations(maps, monkeypatch):
    kernel, _ = maps
    monkeypatch.setattr(Kernel, "BATCH", 4096)
    dead = {(1000 + t, g) for t in range(0, 40, 3) for g in (0, 2)} | {(5, 5)}   # (5, 5): no blocks
    doomed = sum(1 for i in range(N) if (1000 + i % 40, i % 3) in dead)
    assert kernel.sweep_allocs(dead) == doomed
    left = entries(kernel, "allocs")
    assert len(left) == N - doomed
    assert not any((tgid, gen) in dead for tgid, gen, _ in left)
    assert kernel.sweep_allocs(dead) == 0


def test_sweep_with_keys_gone_meanwhile(maps, monkeypatch):
    """A block freed between the walk and the deletion: the batch stops at
    it, the rest are deleted one by one."""
    kernel, _ = maps
    table = kernel._map("allocs")
    real = Kernel._batches.__func__

    def walk_then_free(cls, t):
        for keys, vals, n in real(cls, t):
            yield keys, vals, n
        for i in (3, 123, 243):   # tgid 1003, gen 0: among the doomed
            del table[table.Key(1000 + i % 40, i % 3, 0x10000 + 16 * i)]

    monkeypatch.setattr(Kernel, "_batches", classmethod(walk_then_free))
    dead = {(1003, 0)}
    doomed = sum(1 for i in range(N) if (1000 + i % 40, i % 3) in dead)
    kernel.sweep_allocs(dead)
    monkeypatch.undo()
    left = entries(kernel, "allocs")
    assert len(left) == N - doomed
    assert not any((tgid, gen) in dead for tgid, gen, _ in left)
