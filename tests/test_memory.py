"""TNFRHierarchicalCache: the tier contract, budgets, GDSF, threads, metrics, upstream parity."""

import sys
import threading

import numpy as np
import pytest

from contract import CacheTierBudgetContract, CacheTierContract
from tnfr_fastcache import CacheLevel, InvalidArgumentError, TNFRHierarchicalCache
from tnfr_fastcache.telemetry import CacheMetrics

T = CacheLevel.TEMPORARY
D = CacheLevel.DERIVED_METRICS
G = CacheLevel.GRAPH_STRUCTURE
MIB = 1024 * 1024


class TestMemoryContract(CacheTierBudgetContract):
    @pytest.fixture(params=["gdsf", "lru"])
    def make_tier(self, request):
        def make(**kwargs):
            kwargs.setdefault("eviction", request.param)
            return TNFRHierarchicalCache(**kwargs)

        return make

    def budget_kwargs(self, nbytes):
        return {"max_memory_mb": nbytes / MIB}


class TestMemoryMetricsOff(CacheTierContract):
    @pytest.fixture
    def make_tier(self):
        def make(**kwargs):
            return TNFRHierarchicalCache(enable_metrics=False, **kwargs)

        return make


@pytest.fixture(params=["gdsf", "lru"])
def eviction(request):
    return request.param


# -- budget ---------------------------------------------------------------------------------


def test_sizes_are_real_and_budget_holds(eviction):
    cache = TNFRHierarchicalCache(max_memory_mb=1, eviction=eviction)
    arrays = [np.full(20_000, float(i)) for i in range(30)]  # 160 kB each, 4.8 MB in all
    for i, arr in enumerate(arrays):
        assert cache.set(i, arr, D) is True
        stats = cache.get_stats()
        assert stats["memory_used_bytes"] <= MIB
        assert stats["memory_used_bytes"] == sum(stats["size_by_level"].values())
    stats = cache.get_stats()
    assert stats["memory_used_bytes"] >= len(cache) * arrays[0].nbytes
    assert stats["evictions"] == 30 - len(cache) > 0
    np.testing.assert_array_equal(cache.get(29, D), arrays[29])


def test_too_large_value_is_rejected_not_evicting_everything(eviction):
    cache = TNFRHierarchicalCache(max_memory_mb=1, eviction=eviction)
    for i in range(5):
        cache.set(i, np.ones(10_000), T)
    assert cache.set("huge", np.zeros(3 * MIB // 8), D) is False
    assert len(cache) == 5 and cache.rejected == 1
    assert cache.get_stats()["rejected"] == 1 and cache.get_stats()["evictions"] == 0


def test_rejected_update_removes_the_stale_value():
    cache = TNFRHierarchicalCache(max_memory_mb=1)
    cache.set("k", np.ones(10), D, dependencies={"dep"})
    assert cache.set("k", np.ones(MIB), D) is False
    assert cache.get("k", D) is None
    assert cache.invalidate_by_dependency("dep") == 0


def test_getsizeof_hook():
    cache = TNFRHierarchicalCache(max_memory_mb=1, getsizeof=lambda v: 300_000)
    for i in range(5):
        cache.set(i, i, D)
    assert len(cache) == 3 and cache.get_stats()["memory_used_bytes"] == 900_000


def test_max_entries():
    cache = TNFRHierarchicalCache(max_entries=3, eviction="lru")
    for i in range(5):
        cache.set(i, i, T)
    assert [cache.get(i, T) for i in range(5)] == [None, None, 2, 3, 4]


def test_gdsf_prefers_to_keep_costly_values():
    cache = TNFRHierarchicalCache(max_memory_mb=1, eviction="gdsf")
    block = np.ones(30_000)  # 240 kB: four fit
    cache.set("costly", block, D, computation_cost=1000.0)
    for i in range(10):
        cache.set(i, block, D, computation_cost=1.0)
    assert cache.get("costly", D) is not None
    assert cache.get(9, D) is not None


def test_lru_eviction_order():
    cache = TNFRHierarchicalCache(max_memory_mb=1, eviction="lru")
    block = np.ones(30_000)
    for i in range(4):
        cache.set(i, block, D)
    cache.get(0, D)
    cache.set(4, block, D)
    assert cache.get(1, D) is None and cache.get(0, D) is not None


# -- values and copies ----------------------------------------------------------------------


def test_read_only_owned_array_is_stored_without_copy():
    arr = np.arange(10.0)
    arr.flags.writeable = False
    cache = TNFRHierarchicalCache()
    cache.set("a", arr, D)
    assert cache.get("a", D).base is arr


def test_returned_arrays_cannot_be_made_writeable():
    cache = TNFRHierarchicalCache()
    cache.set("a", np.arange(10.0), D)
    for got in (cache.get("a", D), cache.lookup("a", D).value):
        with pytest.raises(ValueError):
            got.flags.writeable = True
    np.testing.assert_array_equal(cache.get("a", D), np.arange(10.0))


def test_arrays_inside_containers_are_frozen_and_private():
    arr = np.arange(5.0)
    cache = TNFRHierarchicalCache()
    cache.set("c", {"w": arr, "list": [arr]}, D)
    arr[:] = -1
    got = cache.get("c", D)
    assert got["w"].flags.writeable is False and got["list"][0].flags.writeable is False
    np.testing.assert_array_equal(got["w"], np.arange(5.0))
    mine = cache.get("c", D, copy=True)
    mine["w"][0] = 99.0
    mine["list"].append("x")
    assert cache.get("c", D)["w"][0] == 0.0 and len(cache.get("c", D)["list"]) == 1


def test_lookup_entry_and_copy():
    cache = TNFRHierarchicalCache()
    cache.set("k", np.ones(3), G, dependencies=["a"], computation_cost=7.0, ttl=60)
    entry = cache.lookup("k", G, copy=True)
    assert entry.dependencies == {"a"} and entry.computation_cost == 7.0
    assert entry.value.flags.writeable is True and entry.expires_at > 0


# -- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"max_memory_mb": 0}, {"max_memory_mb": -1}, {"max_memory_mb": float("nan")},
     {"max_memory_mb": "512"}, {"eviction": "fifo"}, {"metrics": object()},
     {"max_entries": 0}, {"getsizeof": 3}, {"metrics_flush_interval": -1},
     {"metrics_sample_every": 0}, {"metrics_sample_every": 2.0}, {"metrics_sample_every": False}],
)
def test_constructor_validation(kwargs):
    with pytest.raises(InvalidArgumentError):
        TNFRHierarchicalCache(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"dependencies": "graph_topology"}, {"dependencies": [["unhashable"]]},
     {"dependencies": 5}, {"computation_cost": -1.0}, {"computation_cost": float("nan")},
     {"computation_cost": "1"}, {"computation_cost": True}, {"ttl": float("inf")}, {"ttl": "5"}],
)
def test_set_validation(kwargs):
    cache = TNFRHierarchicalCache()
    with pytest.raises(InvalidArgumentError):
        cache.set("k", 1, D, **kwargs)
    assert len(cache) == 0


def test_dependency_collections_of_every_kind():
    cache = TNFRHierarchicalCache()
    for i, deps in enumerate([{"d"}, frozenset({"d"}), ["d"], ("d",), (x for x in ["d"]), {"d": 1}]):
        cache.set(i, i, T, dependencies=deps)
    assert cache.invalidate_by_dependency("d") == 6


def test_upstream_levels_are_accepted():
    upstream = pytest.importorskip("tnfr.utils.cache")
    cache = TNFRHierarchicalCache()
    cache.set("k", 1.0, upstream.CacheLevel.NODE_PROPERTIES, set())
    assert cache.get("k", CacheLevel.NODE_PROPERTIES) == 1.0
    assert cache.get("k", upstream.CacheLevel.NODE_PROPERTIES) == 1.0
    assert cache.invalidate_level(upstream.CacheLevel.NODE_PROPERTIES) == 1


# -- ttl ---------------------------------------------------------------------------------------


def test_expired_entries_leave_len_and_stats(monkeypatch):
    import tnfr_fastcache.backends.memory as memory

    now = [1000.0]
    monkeypatch.setattr(memory.time, "time", lambda: now[0])
    cache = TNFRHierarchicalCache()  # the index reads the clock through time.time
    cache.set("short", np.ones(100), T, ttl=5, dependencies={"d"})
    cache.set("long", 1, T, ttl=50)
    now[0] = 1010.0
    assert len(cache) == 1
    stats = cache.get_stats()
    assert stats["expired"] == 1 and stats["entry_counts"]["temporary"] == 1
    assert stats["memory_used_bytes"] < 800
    assert cache.invalidate_by_dependency("d") == 0


# -- stats, metrics ---------------------------------------------------------------------------


def test_get_stats_upstream_keys_and_counts():
    cache = TNFRHierarchicalCache(max_memory_mb=64)
    cache.set("a", 1.0, T, {"x"})
    cache.set("b", 2.0, G, {"x"})
    cache.get("a", T)
    cache.get("zz", T)
    cache.invalidate_by_dependency("x")
    stats = cache.get_stats()
    assert {"hits", "misses", "hit_rate", "evictions", "invalidations", "memory_used_mb",
            "memory_limit_mb", "entry_counts", "rejected"} <= set(stats)
    assert stats["memory_limit_mb"] == 64
    assert stats["entry_counts"] == {lv.value: 0 for lv in CacheLevel}
    assert (stats["hits"], stats["misses"], stats["invalidations"]) == (1, 1, 2)
    assert (cache.hits, cache.misses, cache.invalidations, cache.evictions) == (1, 1, 2, 0)
    cache.clear()
    assert cache.get_stats()["hits"] == 0 and cache.memory_profile()["retained_bytes"] == 0


def test_metrics_receive_every_event():
    metrics = CacheMetrics()
    cache = TNFRHierarchicalCache(max_memory_mb=1, metrics=metrics, eviction="lru")
    block = np.ones(40_000)  # 320 kB: three fit
    for i in range(5):
        cache.set(i, block, D, computation_cost=2.0)
    cache.get(4, D)
    cache.get(4, "derived_metrics")
    cache.get(0, D)
    cache.lookup(3, D)
    cache.set("t", 1.0, T, {"dep"})
    cache.invalidate_by_dependency("dep")
    cache.flush_metrics()
    assert metrics.hits == 3 and metrics.misses == 1
    assert metrics.level_hits == {"derived_metrics": 3}
    assert metrics.evictions == 2 and metrics.invalidations == 1
    assert metrics.saved_computation_cost == pytest.approx(6.0)
    assert metrics.total_size_bytes == cache.get_stats()["memory_used_bytes"]
    assert metrics.latency_percentiles("hit")[0.5] > 0


def test_metrics_flush_on_their_own_while_in_use():
    metrics = CacheMetrics()
    cache = TNFRHierarchicalCache(metrics=metrics, metrics_flush_interval=0.0)
    cache.set("k", 1.0, D)
    cache.get("k", D)  # a flush is due at every call
    snapshot = metrics.snapshot()
    assert snapshot["level_counters"]["sets"]["memory"]["derived_metrics"] == 1
    assert sum(snapshot["latency"]["hit"]["memory"]["derived_metrics"]["buckets"]) == 1


@pytest.mark.parametrize("every", [1, 16])
def test_sampled_timing_keeps_counts_exact_and_fills_the_histograms(every):
    metrics = CacheMetrics()
    cache = TNFRHierarchicalCache(metrics=metrics, metrics_sample_every=every)
    cache.set("k", 1.0, D, computation_cost=2.0)
    cache.set("g", 2.0, G, computation_cost=5.0)
    for i in range(4000):
        cache.get("k", D)
        cache.get("g" if i % 2 else "nothing", G)
    assert (metrics.hits, metrics.misses) == (6000, 2000)
    assert metrics.level_hits == {"derived_metrics": 4000, "graph_structure": 2000}
    assert metrics.level_misses == {"graph_structure": 2000}
    assert metrics.saved_computation_cost == pytest.approx(4000 * 2.0 + 2000 * 5.0)
    latency = metrics.snapshot()["latency"]
    timed = {
        (kind, level): sum(hist["buckets"])
        for kind, by_level in latency.items() for level, hist in by_level["memory"].items()
    }
    for (kind, level), events in {("hit", "derived_metrics"): 4000, ("hit", "graph_structure"): 2000,
                                  ("miss", "graph_structure"): 2000}.items():
        # about events / every timed, whatever the pattern of lookups
        assert events / every / 2 <= timed[kind, level] <= 2 * events / every
    summary = metrics.get_summary()
    assert summary["avg_hit_time_ms"] > 0 and summary["avg_miss_time_ms"] > 0
    assert 0 < metrics.latency_percentiles("hit")[0.5] <= metrics.latency_percentiles("hit")[0.99]


def test_metrics_off_records_nothing():
    metrics = CacheMetrics()
    cache = TNFRHierarchicalCache(enable_metrics=False, metrics=metrics)
    cache.set("k", 1.0, D)
    cache.get("k", D)
    cache.get_stats()
    cache.close()
    assert metrics.hits == 0 and metrics.sets == 0 and metrics.total_size_bytes == 0
    assert cache.get_stats()["hits"] == 1


def test_clear_tells_metrics_the_size_is_gone():
    metrics = CacheMetrics()
    cache = TNFRHierarchicalCache(metrics=metrics)
    cache.set("k", np.ones(1000), D)
    cache.flush_metrics()
    assert metrics.total_size_bytes > 8000
    cache.clear()
    assert metrics.total_size_bytes == 0


# -- invalidation at scale, against a model ------------------------------------------------------


def test_invalidation_matches_a_model():
    rng = np.random.default_rng(3)
    cache = TNFRHierarchicalCache(max_memory_mb=256)
    model = {}
    for i in range(3000):
        level = list(CacheLevel)[i % 4]
        deps = {f"d{j}" for j in rng.choice(20, size=rng.integers(0, 4), replace=False)}
        key = int(rng.integers(0, 1500))
        cache.set(key, i, level, deps)
        model[key, level] = (i, deps)
        if i % 97 == 0:
            dep = f"d{rng.integers(0, 20)}"
            expected = [k for k, (_, d) in model.items() if dep in d]
            assert cache.invalidate_by_dependency(dep) == len(expected)
            for k in expected:
                del model[k]
        if i % 501 == 0:
            level = list(CacheLevel)[int(rng.integers(0, 4))]
            expected = [k for k in model if k[1] is level]
            assert cache.invalidate_level(level) == len(expected)
            for k in expected:
                del model[k]
    assert len(cache) == len(model)
    for (key, level), (value, _) in model.items():
        assert cache.get(key, level) == value
    for j in range(20):
        expected = sum(1 for _, d in model.values() if f"d{j}" in d)
        assert cache.invalidate_by_dependency(f"d{j}") == expected
        model = {k: v for k, v in model.items() if f"d{j}" not in v[1]}
    assert len(cache) == len(model)
    cache._index.check()


# -- threads ---------------------------------------------------------------------------------------


@pytest.fixture
def fast_switching():
    """Switch threads every 10 µs instead of 5 ms, so that operations really interleave."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


def test_eight_threads_mixing_everything_match_a_model(eviction, fast_switching):
    """8 threads set/get/invalidate/delete freely; each owns its keys, so the final state is
    predictable from each thread's own log, and the index's invariants must hold."""
    cache = TNFRHierarchicalCache(max_memory_mb=64, eviction=eviction)
    errors = []
    models = [dict() for _ in range(8)]
    barrier = threading.Barrier(8)

    def work(t):
        rng = np.random.default_rng(t)
        model = models[t]
        try:
            barrier.wait()
            for i in range(1500):
                key = (t, int(rng.integers(0, 60)))
                level = list(CacheLevel)[int(rng.integers(0, 4))]
                op = rng.random()
                if op < 0.45:
                    value = np.full(int(rng.integers(1, 50)), float(i))
                    cache.set(key, value, level, {f"dep{t}", f"shared{i % 3}"}, 1.0 + i % 5)
                    model[key, level] = value
                elif op < 0.85:
                    got = cache.get(key, level, default=None)
                    want = model.get((key, level))
                    if (got is None) != (want is None) or (
                        want is not None and not np.array_equal(got, want)
                    ):
                        errors.append(("get", key, level))
                elif op < 0.93:
                    present = cache.delete(key, level)
                    if present != ((key, level) in model):
                        errors.append(("delete", key, level))
                    model.pop((key, level), None)
                elif op < 0.97:
                    cache.invalidate_by_dependency(f"dep{t}")
                    model.clear()
                else:
                    # other threads' entries may go too: not something this thread can check
                    cache.get_stats()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    expected = {k: v for model in models for k, v in model.items()}
    assert len(cache) == len(expected)
    for (key, level), value in expected.items():
        np.testing.assert_array_equal(cache.get(key, level), value)
    cache._index.check()
    stats = cache.get_stats()
    assert stats["evictions"] == 0 and stats["memory_used_bytes"] <= 64 * MIB
    for t in range(8):
        assert cache.invalidate_by_dependency(f"dep{t}") == len(models[t])
    assert len(cache) == 0 and cache.get_stats()["memory_used_bytes"] == 0


def test_metrics_readers_see_counts_at_once_despite_batching():
    """Regression: the README's tour read hit_rate 0.0 because counts waited for the 0.25 s flush."""
    from tnfr_fastcache import CacheMetrics, TNFRHierarchicalCache

    metrics = CacheMetrics()
    cache = TNFRHierarchicalCache(max_memory_mb=1, metrics=metrics, metrics_flush_interval=3600)
    cache.set("x", 1.0, "temporary")
    cache.get("x", "temporary")
    cache.get("y", "temporary")
    summary = metrics.get_summary()
    assert (metrics.hits, metrics.misses) == (1, 1)
    assert summary["hit_rate"] == 0.5
    cache.get("x", "temporary")
    assert metrics.get_summary()["total_accesses"] == 3
