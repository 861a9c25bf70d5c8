"""LRUCache against the LRUs users know: lru-dict, cachebox, cachetools, functools.lru_cache.

Each benchmark call does ``OPS`` operations in a plain ``for`` loop (the loop costs the same
for everybody), so a median divided by ``OPS`` is the cost of one operation
(``extra_info["ops"]``). Groups:

- ``lru-hit``: ``c[k]`` on a full cache of ``N`` entries (functools: a call of an
  ``lru_cache``-wrapped function that hits);
- ``lru-insert-evict``: ``c[k] = v`` of a new key into a full cache, evicting one entry;
- ``lru-insert-evict-bytes``: the same under a byte budget with real sizes (ours: default
  sizing; cachetools: ``getsizeof=sys.getsizeof``, what its users would write);
- ``lru-gdsf-hit`` / ``lru-gdsf-insert-evict``: our GDSF policy (no peer has one).

Run: ``python -m pytest benchmarks/bench_lru.py --benchmark-columns=median,iqr,rounds --benchmark-sort=name``.
"""

import functools
import sys

import pytest

from tnfr_fastcache import LRUCache

N = 1000
OPS = 1000
# Two disjoint key sets: inserting one into a cache full of the other evicts on every insert.
KEYS_A = [f"key-{i}" for i in range(OPS)]
KEYS_B = [f"other-{i}" for i in range(OPS)]


def _ours(**kwargs):
    return LRUCache(**kwargs)


def _lru_dict(n):
    lru = pytest.importorskip("lru")
    return lru.LRU(n)


def _cachebox(n):
    cachebox = pytest.importorskip("cachebox")
    return cachebox.LRUCache(n)


def _cachetools(n, getsizeof=None):
    cachetools = pytest.importorskip("cachetools")
    return cachetools.LRUCache(n, getsizeof=getsizeof)


MAKERS = {
    "ours": lambda: _ours(max_entries=N),
    "lru-dict": lambda: _lru_dict(N),
    "cachebox": lambda: _cachebox(N),
    "cachetools": lambda: _cachetools(N),
}


def _hits(cache, keys):
    for key in keys:
        cache[key]


def _inserts(cache, state):
    # Alternate the key sets so that every insert is a new key that evicts an old one.
    keys = KEYS_B if state[0] else KEYS_A
    state[0] = not state[0]
    for key in keys:
        cache[key] = 1.0


@pytest.mark.parametrize("subject", list(MAKERS))
def test_hit(benchmark, subject):
    cache = MAKERS[subject]()
    for key in KEYS_A:
        cache[key] = 1.0
    benchmark.group = "lru-hit"
    benchmark.extra_info.update(subject=subject, ops=OPS)
    benchmark(_hits, cache, KEYS_A)
    assert len(cache) == N


def test_hit_functools(benchmark):
    cached = functools.lru_cache(maxsize=N)(lambda key: 1.0)
    for key in KEYS_A:
        cached(key)

    def calls(keys):
        for key in keys:
            cached(key)

    benchmark.group = "lru-hit"
    benchmark.extra_info.update(subject="functools.lru_cache", ops=OPS)
    benchmark(calls, KEYS_A)
    assert cached.cache_info().hits >= OPS


@pytest.mark.parametrize("subject", list(MAKERS))
def test_insert_evict(benchmark, subject):
    cache = MAKERS[subject]()
    for key in KEYS_A:
        cache[key] = 1.0
    benchmark.group = "lru-insert-evict"
    benchmark.extra_info.update(subject=subject, ops=OPS)
    benchmark(_inserts, cache, [True])
    assert len(cache) == N


@pytest.mark.parametrize("subject", ["ours", "cachetools"])
def test_insert_evict_bytes(benchmark, subject):
    budget = N * sys.getsizeof(1.0)
    if subject == "ours":
        cache = _ours(max_bytes=budget)
    else:
        cache = _cachetools(budget, getsizeof=sys.getsizeof)
    for key in KEYS_A:
        cache[key] = 1.0
    benchmark.group = "lru-insert-evict-bytes"
    benchmark.extra_info.update(subject=subject, ops=OPS)
    benchmark(_inserts, cache, [True])
    assert len(cache) == N and cache.currsize <= budget


def test_gdsf_hit(benchmark):
    cache = _ours(max_entries=N, policy="gdsf")
    for key in KEYS_A:
        cache[key] = 1.0
    benchmark.group = "lru-gdsf-hit"
    benchmark.extra_info.update(subject="ours", ops=OPS)
    benchmark(_hits, cache, KEYS_A)


def test_gdsf_insert_evict(benchmark):
    cache = _ours(max_entries=N, policy="gdsf")
    for key in KEYS_A:
        cache[key] = 1.0
    benchmark.group = "lru-gdsf-insert-evict"
    benchmark.extra_info.update(subject="ours", ops=OPS)
    benchmark(_inserts, cache, [True])
    assert len(cache) == N
