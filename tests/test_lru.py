"""LRUCache and the LRU/GDSF index twins: mapping behaviour, budgets, eviction order, sizing."""

import collections
import random
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tnfr_fastcache import InvalidArgumentError, LRUCache, UnhashableKeyError, ValueTooLargeError
from tnfr_fastcache import sizing
from tnfr_fastcache._impl import load_both

COMPILED, PURE = load_both("_lru")
TWINS = [pytest.param(PURE, id="pure")]
if COMPILED is not None:
    TWINS.append(pytest.param(COMPILED, id="compiled"))


@pytest.fixture(params=TWINS)
def twin(request):
    return request.param


# -- LRUCache as a mapping (cachetools / lru-dict drop-in) ----------------------------------


def test_lru_evicts_least_recently_used():
    c = LRUCache(max_entries=3)
    c["a"], c["b"], c["c"] = 1, 2, 3
    assert c["a"] == 1  # a is now the most recent
    c["d"] = 4
    assert "b" not in c
    assert list(c) == ["c", "a", "d"]
    assert c.currsize == 3 and c.maxsize == 3 and len(c) == 3


def test_mapping_api():
    c = LRUCache(max_entries=10)
    c.update({"x": 1, "y": 2})
    assert c.get("x") == 1 and c.get("nope") is None and c.get("nope", 5) == 5
    assert c.peek("y") == 2
    assert c.pop("x") == 1
    assert c.pop("x", "gone") == "gone"
    with pytest.raises(KeyError):
        c.pop("x")
    with pytest.raises(KeyError):
        c["x"]
    with pytest.raises(KeyError):
        del c["x"]
    assert c.setdefault("z", 3) == 3 and c.setdefault("z", 4) == 3
    assert c.popitem() == ("y", 2)
    assert c == {"z": 3}
    assert c.items() == [("z", 3)] and c.keys() == ["z"] and c.values() == [3]
    c.clear()
    assert len(c) == 0 and c.currsize == 0
    with pytest.raises(KeyError):
        c.popitem()
    assert "LRUCache(" in repr(c)


def test_peek_does_not_refresh():
    c = LRUCache(max_entries=2)
    c["a"], c["b"] = 1, 2
    c.peek("a")
    c["c"] = 3
    assert "a" not in c and "b" in c


def test_overwrite_refreshes_and_resizes():
    c = LRUCache(max_bytes=100, getsizeof=len)
    c["a"] = "x" * 40
    c["b"] = "y" * 40
    c["a"] = "z" * 50  # a becomes newest, total 90
    assert c.currsize == 90
    c["c"] = "w" * 20  # must evict b (oldest), not a
    assert list(c) == ["a", "c"] and c.currsize == 70


def test_byte_budget_with_default_sizes():
    c = LRUCache(max_bytes=1_000_000)
    for i in range(20):
        c[i] = np.zeros(10_000)  # 80 kB each
    assert c.currsize <= 1_000_000
    assert len(c) == 1_000_000 // sizing.sizeof(np.zeros(10_000))
    assert list(c) == list(range(20 - len(c), 20))


def test_value_too_large_leaves_cache_unchanged():
    c = LRUCache(max_bytes=100, getsizeof=len)
    c["a"] = "x" * 60
    with pytest.raises(ValueTooLargeError) as info:
        c["a"] = "y" * 101
    assert isinstance(info.value, ValueError)
    assert c["a"] == "x" * 60 and c.currsize == 60


def test_constructor_validation():
    with pytest.raises(InvalidArgumentError):
        LRUCache()
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(InvalidArgumentError):
            LRUCache(max_entries=bad)
        with pytest.raises(InvalidArgumentError):
            LRUCache(max_bytes=bad)
    with pytest.raises(InvalidArgumentError):
        LRUCache(max_entries=3, policy="fifo")
    with pytest.raises(InvalidArgumentError):
        LRUCache(max_entries=3, getsizeof=42)


@pytest.mark.parametrize("bad", [-1, 2.5, "3", None])
def test_getsizeof_must_return_int(bad):
    c = LRUCache(max_bytes=100, getsizeof=lambda v: bad)
    with pytest.raises(InvalidArgumentError):
        c["a"] = 1
    assert len(c) == 0


def test_unhashable_key():
    c = LRUCache(max_entries=3)
    with pytest.raises(UnhashableKeyError):
        c[["list"]] = 1
    with pytest.raises(TypeError):
        c[["list"]]
    assert len(c) == 0


def test_key_whose_eq_raises_propagates():
    class Weird:
        def __hash__(self):
            return 1

        def __eq__(self, other):
            raise RuntimeError("no comparing")

    c = LRUCache(max_entries=3)
    c[Weird()] = 1
    with pytest.raises(RuntimeError, match="no comparing"):
        c[Weird()]


def test_value_released_when_evicted():
    released = []

    class Tracked:
        def __init__(self, name):
            self.name = name

        def __del__(self):
            released.append(self.name)

    c = LRUCache(max_entries=1)
    c["a"] = Tracked("a")
    c["b"] = Tracked("b")
    assert released == ["a"]
    del c["b"]
    assert released == ["a", "b"]


def test_del_that_reenters_the_cache_sees_a_consistent_index():
    # A value's __del__ runs while an insert evicts it; it may use the cache itself.
    c = LRUCache(max_entries=2)
    seen = []

    class Reenter:
        def __del__(self):
            seen.append((len(c), sorted(map(str, c))))
            c["from_del"] = 0

    c["a"] = Reenter()
    c["b"] = 1
    c["c"] = 2
    assert seen == [(2, ["b", "c"])]
    c.check()
    assert len(c) == 2 and c.currsize == 2 and "from_del" in c


# -- GDSF ---------------------------------------------------------------------------------


def test_gdsf_keeps_small_costly_frequent_entries(twin):
    idx = twin.LRUIndex(max_bytes=1000, policy="gdsf")
    idx.part_insert(0, "cheap_big", 1, 400, cost=1.0)
    idx.part_insert(0, "costly_small", 2, 100, cost=50.0)
    idx.part_insert(0, "popular", 3, 400, cost=1.0)
    for _ in range(5):
        idx.part_get(0, "popular", None)
    removed = idx.part_insert(0, "new", 4, 400, cost=1.0)
    assert [r[1] for r in removed] == ["cheap_big"]
    idx.check()


def test_gdsf_clock_ages_old_favourites(twin):
    idx = twin.LRUIndex(max_entries=2, policy="gdsf")
    idx.part_insert(0, "old", 0, 1, cost=1.0)
    for _ in range(3):
        idx.part_get(0, "old", None)  # priority 4
    evicted = []
    for i in range(10):  # each newcomer evicts the other newcomer until the clock passes 4
        evicted += [r[1] for r in idx.part_insert(0, i, i, 1, cost=1.0)]
    assert "old" in evicted
    idx.check()


def test_gdsf_never_evicts_the_entry_being_inserted(twin):
    idx = twin.LRUIndex(max_bytes=100, policy="gdsf")
    idx.part_insert(0, "a", 1, 50, cost=100.0)
    removed = idx.part_insert(0, "b", 2, 60, cost=0.0)  # b has the lowest priority
    assert [r[1] for r in removed] == ["a"]
    assert idx.peek("b") == 2
    idx.check()


# -- the index twins agree, and hold their invariants ------------------------------------


def _run_ops(module, ops, policy):
    idx = module.LRUIndex(max_bytes=500, max_entries=12, policy=policy, nparts=3)
    log = []
    for op, part, key, size, cost in ops:
        if op == "ins":
            removed = idx.part_insert(part, key, (part, key, size), size, cost=cost)
            log.append(("ins", [(r[0], r[1], r[3]) for r in removed]))
        elif op == "get":
            log.append(("get", idx.part_get(part, key, None)))
        elif op == "del":
            rec = idx.part_remove(part, key)
            log.append(("del", rec and rec[1]))
        elif op == "pop":
            log.append(("pop", idx.popitem() if len(idx) else None))
        else:
            log.append(("clr", [r[1] for r in idx.clear_part(part)]))
        idx.check()
    counts = idx.counters()
    return log, [idx.part_keys(p) for p in range(3)], idx.currsize, counts


_OP = st.tuples(
    st.sampled_from(["ins"] * 6 + ["get"] * 4 + ["del", "pop", "clr"]),
    st.integers(0, 2),
    st.integers(0, 15),
    st.integers(0, 120),
    st.sampled_from([0.0, 1.0, 2.5, 10.0]),
)


@pytest.mark.skipif(COMPILED is None, reason="compiled _lru not built")
@pytest.mark.parametrize("policy", ["lru", "gdsf"])
@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_OP, max_size=80))
def test_twins_agree(policy, ops):
    assert _run_ops(COMPILED, ops, policy) == _run_ops(PURE, ops, policy)


@pytest.mark.parametrize("policy", ["lru", "gdsf"])
def test_random_ops_match_a_model(twin, policy):
    """An LRU model (OrderedDict) predicts contents exactly; both policies keep budgets."""
    rng = random.Random(5)
    idx = twin.LRUIndex(max_bytes=2000, max_entries=40, policy=policy)
    model = collections.OrderedDict()
    for _ in range(3000):
        key = rng.randrange(80)
        if rng.random() < 0.6:
            size = rng.randrange(1, 200)
            removed = idx.part_insert(0, key, size, size)
            if policy == "lru":
                model.pop(key, None)
                model[key] = size
                while len(model) > 40 or sum(model.values()) > 2000:
                    model.popitem(last=False)
            else:
                for rec in removed:
                    model.pop(rec[1], None)
                model[key] = size
        else:
            got = idx.part_get(0, key, None)
            assert got == model.get(key)
            if key in model:
                model.move_to_end(key)
        assert idx.currsize == sum(model.values()) <= 2000
        assert len(idx) == len(model) <= 40
    if policy == "lru":
        assert idx.part_keys(0) == list(model)
    idx.check()


def test_partitions_are_separate(twin):
    idx = twin.LRUIndex(max_entries=10, nparts=2)
    idx.part_insert(0, "k", "zero", 5)
    idx.part_insert(1, "k", "one", 7)
    assert idx.part_get(0, "k", None) == "zero" and idx.part_get(1, "k", None) == "one"
    assert (idx.part_len(0), idx.part_len(1)) == (1, 1)
    assert (idx.part_bytes(0), idx.part_bytes(1)) == (5, 7)
    assert [r[1] for r in idx.clear_part(1)] == ["k"]
    assert idx.part_get(1, "k", "miss") == "miss"
    counts = idx.counters()
    assert counts["hits"] == [1, 1] and counts["misses"] == [0, 1] and counts["sets"] == [1, 1]
    for bad in (-1, 2):
        with pytest.raises(InvalidArgumentError):
            idx.part_get(bad, "k", None)
    with pytest.raises(InvalidArgumentError):
        twin.LRUIndex(nparts=0)


def test_remove_records_checks_identity(twin):
    idx = twin.LRUIndex(max_entries=10)
    token_old, token_new = object(), object()
    idx.part_insert(0, "k", 1, 1, extra=token_old)
    idx.part_insert(0, "k", 2, 1, extra=token_new)  # replaced: the old token is stale
    assert idx.remove_records([((0, "k"), token_old)]) == []
    assert [r[2] for r in idx.remove_records([((0, "k"), token_new)])] == [2]


def test_expiry_uses_the_timer(twin):
    now = [100.0]
    idx = twin.LRUIndex(max_entries=10, timer=lambda: now[0])
    idx.part_insert(0, "k", 1, 1, expires=105.0)
    assert idx.part_get(0, "k", None) == 1 and not idx.part_expired(0, "k")
    now[0] = 105.0
    assert idx.part_get(0, "k", "gone") == "gone"
    assert idx.part_expired(0, "k") and idx.part_lookup(0, "k") is None
    assert idx.expired_records() == [(0, "k", None)]


@pytest.mark.parametrize("cost", [-1.0, float("nan"), float("inf")])
def test_bad_cost(twin, cost):
    idx = twin.LRUIndex(max_entries=2)
    with pytest.raises(InvalidArgumentError):
        idx.part_insert(0, "k", 1, 1, cost=cost)


def test_growth_keeps_everything(twin):
    idx = twin.LRUIndex(max_entries=5000, policy="gdsf")
    for i in range(3000):
        idx[i] = i
    assert all(idx[i] == i for i in range(0, 3000, 7))
    idx.check()


def test_out_of_range_partitions_are_refused(twin):
    idx = twin.LRUIndex(max_entries=4, nparts=2)
    for part in (-1, 2, 64, 2**40):
        with pytest.raises(InvalidArgumentError):
            idx.remove_records([((part, "k"), None)])
        with pytest.raises(InvalidArgumentError):
            idx.part_insert(part, "k", 1, 1)


@pytest.mark.skipif(COMPILED is None, reason="compiled _lru not built")
@pytest.mark.parametrize("cls", ["LRUIndex", "TierIndex"])
def test_uninitialised_index_raises_instead_of_crashing(cls):
    idx = getattr(COMPILED, cls).__new__(getattr(COMPILED, cls))
    with pytest.raises(Exception):
        idx["k"] = 1
    with pytest.raises(Exception):
        idx["k"]
    with pytest.raises(Exception):
        idx.part_get(0, "k", None)
    if cls == "TierIndex":
        with pytest.raises(Exception):
            idx.tier_get("k")
        with pytest.raises(Exception):
            idx.tier_set("k", 1.0)
    assert len(idx) == 0


# -- sizing -------------------------------------------------------------------------------


def test_sizeof_arrays_count_their_data():
    a = np.zeros((1000, 1000))
    assert sizing.sizeof(a) >= a.nbytes
    view = a[:500]
    assert sizing.sizeof(view) >= view.nbytes  # sys.getsizeof says ~112 for a view
    assert sizing.sizeof([a, a]) < 2 * a.nbytes  # shared items counted once
    assert sizing.sizeof({"w": a, "v": a[:10].copy()}) >= a.nbytes + 80


def test_sizeof_bytes_str_and_scalars():
    assert sizing.sizeof(b"x" * 1000) >= 1000
    assert sizing.sizeof("x" * 1000) >= 1000
    assert sizing.sizeof(1.0) == sys.getsizeof(1.0)
    assert sizing.sizeof(memoryview(b"x" * 500)) >= 500


def test_sizeof_is_bounded_and_extrapolates():
    big = [np.zeros(100) for _ in range(3 * sizing.MAX_ITEMS)]
    estimate = sizing.sizeof(big)
    assert estimate >= 3 * sizing.MAX_ITEMS * 800  # extrapolated past the visited items
    deep = cur = []
    for _ in range(10 * sizing.MAX_DEPTH):
        cur.append([])
        cur = cur[0]
    assert sizing.sizeof(deep) > 0
    cyclic = []
    cyclic.append(cyclic)
    assert sizing.sizeof(cyclic) == sys.getsizeof(cyclic)


def test_sizeof_objects_with_dict_and_slots():
    class WithDict:
        def __init__(self):
            self.data = np.zeros(1000)

    class WithSlots:
        __slots__ = ("data", "unset")

        def __init__(self):
            self.data = np.zeros(1000)

    assert sizing.sizeof(WithDict()) >= 8000
    assert sizing.sizeof(WithSlots()) >= 8000


@pytest.mark.parametrize("seed", range(3))
def test_gdsf_matches_a_brute_force_model(twin, seed):
    """Eviction picks the minimum of clock + hits * cost / size (ties: least recent), with the
    clock raised to each evicted priority: recomputed from scratch here at every step."""
    rng = random.Random(seed)
    idx = twin.LRUIndex(max_bytes=1500, policy="gdsf")
    model = {}  # key -> [freq, cost, size, tick]
    clock, tick = 0.0, 0

    def prio(key):
        freq, cost, size, _ = model[key]
        return clock + freq * cost / max(size, 1)

    prios = {}
    for _ in range(2000):
        key = rng.randrange(60)
        tick += 1
        if rng.random() < 0.5:
            size, cost = rng.randrange(0, 300), rng.choice([0.5, 1.0, 4.0, 20.0])
            removed = [r[1] for r in idx.part_insert(0, key, key, size, cost=cost)]
            expected = []
            if key in model:
                expected.append(key)
                del model[key]
                del prios[key]
            while model and sum(m[2] for m in model.values()) + size > 1500:
                victim = min(model, key=lambda k: (prios[k], model[k][3]))
                clock = prios[victim]
                expected.append(victim)
                del model[victim]
                del prios[victim]
            model[key] = [1, cost, size, tick]
            prios[key] = prio(key)
            assert removed == expected
        elif key in model:
            assert idx.part_get(0, key, None) == key
            model[key][0] += 1
            model[key][3] = tick
            prios[key] = prio(key)
        else:
            tick -= 1  # a miss does not advance the index's clock of use
            assert idx.part_get(0, key, None) is None
    idx.check()


def test_drop_in_for_cachetools_cached():
    cachetools = pytest.importorskip("cachetools")
    calls = []

    @cachetools.cached(LRUCache(max_bytes=10_000))
    def square(n):
        calls.append(n)
        return np.full(n, float(n))  # 800 kB for n=100_000: too large, simply not stored

    square(10)
    square(10)
    square(100_000)
    square(100_000)
    assert calls == [10, 100_000, 100_000]


def _tier_index(module, lock, **extra):
    import types

    deps_index = {}
    hooks = types.SimpleNamespace(
        resolve_level=lambda level: {"zero": 0, "one": 1}[level],
        copier=lambda value: list(value) if isinstance(value, list) else -value,
        on_expired=lambda part, key: None,
        flush=None,
        freeze=lambda value: value,
        sizeof=lambda value: 10 * len(value),
        check_cost=float,
        check_ttl=lambda ttl: 0.0,
        check_dependencies=frozenset,
        no_dependencies=frozenset(),
        scalar_sizes={int: 24},
        view_types=(),
    )
    index = module.TierIndex(
        levels=("L0", "L1"), level_parts={"l0": 0, "l1": 1}, default_part=1, hooks=hooks,
        deps_index=deps_index, lock=lock, max_bytes=400, policy="gdsf", nparts=2, **extra,
    )
    return index, deps_index


@pytest.mark.skipif(COMPILED is None, reason="compiled _lru not built")
@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(
    st.sampled_from(["set", "set", "get", "inv", "invpart"]),
    st.sampled_from(["L0", "L1", "l0", "zero", "one"]),
    st.integers(0, 12),
    st.sampled_from([(), ("a",), ("a", "b"), ("b",)]),
    st.one_of(st.integers(0, 5), st.lists(st.integers(), max_size=8)),
), max_size=60))
def test_tier_index_twins_agree(ops):
    import threading

    def run(module):
        index, deps_index = _tier_index(module, threading.Lock())
        log = []
        for op, level, key, deps, value in ops:
            if op == "set":
                log.append(index.tier_set(key, value, level, set(deps), 2.0))
            elif op == "get":
                log.append(index.tier_get(key, level, "miss", copy=isinstance(value, list)))
            elif op == "inv":
                entries = deps_index.pop(deps[0] if deps else "a", None)
                log.append(index.invalidate_entries(entries, deps[0] if deps else "a") if entries else None)
            else:
                log.append(index.invalidate_part(index.part_of(level)))
            index.check()
        snapshot = {dep: sorted(map(repr, entries)) for dep, entries in deps_index.items()}
        return log, index.counters(), index.part_keys(0), index.part_keys(1), snapshot

    assert run(COMPILED) == run(PURE)


def _timed_lookups(n, every):
    """Indices (from 0) of the lookups timed among ``n``, by the rule TierIndex documents."""
    timed, at, rng = [], 0, 0x9E3779B97F4A7C15
    while at < n:
        timed.append(at)
        rng ^= (rng << 13) & (2**64 - 1)
        rng ^= rng >> 7
        rng ^= (rng << 17) & (2**64 - 1)
        at += 1 + rng % (2 * every - 1)
    return timed


@pytest.mark.parametrize("every", [1, 2, 16])
def test_tier_index_counts_every_lookup_and_times_the_documented_sample(twin, every):
    import threading

    index, _ = _tier_index(twin, threading.Lock(), bounds=[1e-6, 1e-3, 1.0], sample_every=every)
    assert index.sample_every == every
    index.tier_set("a", 1, "L0", (), 3.0)
    kinds = []  # a repeating pattern (hit, hit, miss) that a fixed period would alias with
    for i in range(999):
        hit = i % 3 != 2
        assert index.tier_get("a" if hit else "b", "L0", "miss") == (1 if hit else "miss")
        kinds.append("hit" if hit else "miss")
    latency = index.take_latency()
    hits, misses = latency["hit"][0], latency["miss"][0]
    assert (hits["count"], misses["count"]) == (666, 333)
    assert hits["cost"] == 666 * 3.0 and misses["cost"] == 0.0
    timed = collections.Counter(kinds[i] for i in _timed_lookups(999, every))
    assert (sum(hits["buckets"]), sum(misses["buckets"])) == (timed["hit"], timed["miss"])
    # both kinds are timed in proportion: the sample follows no period of the workload
    assert timed["hit"] > 1.5 * timed["miss"] > 0
    assert 0.0 <= hits["min"] <= hits["max"] and hits["sum"] >= 0.0
    assert index.counters()["hits"][0] == 666 and index.counters()["misses"][0] == 333
    assert index.take_latency() == {"hit": {}, "miss": {}}


def test_tier_index_owner_timed_lookups_are_all_recorded(twin):
    import threading

    index, _ = _tier_index(twin, threading.Lock(), bounds=[1e-6, 1.0], sample_every=64)
    for _ in range(5):
        index.record_lookup(0, True, 2e-6, 1.5)
    index.record_lookup(1, False, 5.0, 9.0)
    latency = index.take_latency()
    assert latency["hit"][0] == {"count": 5, "sum": pytest.approx(1e-5), "cost": 7.5,
                                 "buckets": [0, 5, 0], "min": 2e-6, "max": 2e-6}
    assert latency["miss"][1]["buckets"] == [0, 0, 1] and latency["miss"][1]["cost"] == 0.0


@pytest.mark.parametrize("every", [0, -1, 1.5, True, 2**31])
def test_tier_index_refuses_bad_sample_every(twin, every):
    import threading

    with pytest.raises(InvalidArgumentError, match="sample_every"):
        _tier_index(twin, threading.Lock(), bounds=[1.0], sample_every=every)
