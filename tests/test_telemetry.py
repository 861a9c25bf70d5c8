"""CacheMetrics: the seed's fields and report, the added counters, bounded memory, threads."""

import contextlib
import copy
import gc
import io
import json
import math
import os
import pickle
import signal
import sys
import threading
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tnfr_fastcache import CacheLevel, InvalidArgumentError
from tnfr_fastcache import telemetry
from tnfr_fastcache.telemetry import (
    LATENCY_BUCKETS,
    RECENT_SAMPLES,
    CacheMetrics,
    percentile_from_buckets,
)

DM = CacheLevel.DERIVED_METRICS

# The seed's "Telemetry Dashboard Example", as written (only the import differs).
SEED_DASHBOARD = """
summary = metrics.get_summary()

print(f"Cache Performance Report")
print(f"=" * 50)
print(f"Hit Rate: {summary['hit_rate']:.1%}")
print(f"Total Accesses: {summary['total_accesses']}")
print(f"Avg Hit Time: {summary['avg_hit_time_ms']:.3f} ms")
print(f"Avg Miss Time: {summary['avg_miss_time_ms']:.3f} ms")
print(f"Saved Computation: {summary['saved_computation_cost']:.1f} units")
print(f"Memory Usage: {summary['memory_mb']:.2f} MB")
print(f"\\nLevel Breakdown:")
for level, hits in summary['level_breakdown'].items():
    print(f"  {level}: {hits} hits")
"""


def _filled():
    m = CacheMetrics()
    m.record_hit(DM, 0.002, 10.0)
    m.record_hit("derived_metrics", 0.004, 5.0)
    m.record_hit("GRAPH_STRUCTURE", 0.001, 1.0, tier="disk")
    m.record_miss(CacheLevel.TEMPORARY, 0.010)
    m.adjust_size(DM, 3 * 1024 * 1024)
    m.adjust_size("temporary", 1024 * 1024, tier="disk")
    return m


def test_seed_fields_and_summary():
    m = _filled()
    assert (m.hits, m.misses, m.evictions, m.invalidations) == (3, 1, 0, 0)
    assert m.level_hits == {"derived_metrics": 2, "graph_structure": 1}
    assert m.level_misses == {"temporary": 1}
    assert m.total_size_bytes == 4 * 1024 * 1024
    assert m.size_by_level == {"derived_metrics": 3 * 1024 * 1024, "temporary": 1024 * 1024}
    assert m.saved_computation_cost == pytest.approx(16.0)
    assert sorted(m.hit_times) == pytest.approx([0.001, 0.002, 0.004])
    assert m.miss_times == pytest.approx([0.010])
    s = m.get_summary()
    assert s["hit_rate"] == pytest.approx(0.75)
    assert s["total_accesses"] == 4
    assert s["avg_hit_time_ms"] == pytest.approx(7.0 / 3)
    assert s["avg_miss_time_ms"] == pytest.approx(10.0)
    assert s["saved_computation_cost"] == pytest.approx(16.0)
    assert s["memory_mb"] == pytest.approx(4.0)
    assert s["level_breakdown"] == {"derived_metrics": 2, "graph_structure": 1}
    assert s["tiers"]["memory"]["hits"] == 2 and s["tiers"]["disk"]["hit_rate"] == 1.0
    assert s["levels"]["temporary"]["size_bytes"] == 1024 * 1024


def test_seed_dashboard_runs_as_written():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(SEED_DASHBOARD, {"metrics": _filled()})
    text = out.getvalue()
    assert "Hit Rate: 75.0%" in text
    assert "Saved Computation: 16.0 units" in text
    assert "Memory Usage: 4.00 MB" in text
    assert "  derived_metrics: 2 hits" in text


def test_seed_prometheus_reads_work():
    # the seed's export loops read these as a dict and concatenable lists
    m = _filled()
    assert dict(m.level_hits.items())["graph_structure"] == 1
    assert len(m.hit_times + m.miss_times) == 4


def test_report_prints_the_seed_report_and_more():
    m = _filled()
    m.record_set(DM, 8000, stored_nbytes=2000, tier="disk")
    m.record_error(tier="redis", exc=ConnectionError("refused"))
    out = io.StringIO()
    text = m.report(file=out)
    assert out.getvalue() == text
    lines = text.splitlines()
    assert lines[0] == "Cache Performance Report" and lines[1] == "=" * 50
    assert "Hit Rate: 75.0%" in lines
    assert "  graph_structure: 1 hits" in lines
    assert "compression ratio: 4.00x" in text
    assert any(line.startswith("redis") for line in lines)
    assert "Errors: 1" in text


def test_a_shared_stack_counts_each_lookup_once():
    # TieredCache(memory, disk) sharing one metrics: lookup 1 hits memory; lookup 2 misses
    # memory and hits disk; lookup 3 misses everywhere. Every layer records what it saw.
    m = CacheMetrics()
    m.record_hit(DM, 1e-6, 5.0, tier="memory")
    m.record_hit(DM, 2e-6, 5.0, tier="tiered")
    m.record_miss(DM, 1e-6, tier="memory")
    m.record_hit(DM, 1e-3, 7.0, tier="disk")
    m.record_hit(DM, 2e-3, 7.0, tier="tiered")
    m.record_miss(DM, 1e-6, tier="memory")
    m.record_miss(DM, 1e-4, tier="disk")
    m.record_miss(DM, 2e-4, tier="tiered")
    assert (m.hits, m.misses) == (2, 1)
    assert m.level_hits == {"derived_metrics": 2}
    assert m.saved_computation_cost == 12.0
    assert sorted(m.hit_times) == [2e-6, 2e-3]
    assert m.tier_hits == {"memory": 1, "disk": 1, "tiered": 2}
    assert m.tier_misses == {"memory": 2, "disk": 1, "tiered": 1}
    s = m.get_summary()
    assert s["hit_rate"] == pytest.approx(2 / 3) and s["total_accesses"] == 3
    assert s["avg_hit_time_ms"] == pytest.approx(1.001)
    assert s["levels"]["derived_metrics"]["hits"] == 2
    assert s["tiers"]["memory"]["hit_rate"] == pytest.approx(1 / 3)
    assert m.latency_percentiles("hit", (1.0,))[1.0] == pytest.approx(2e-3)
    assert m.latency_percentiles("hit", (1.0,), tier="disk")[1.0] == pytest.approx(1e-3)
    # the decorator, when it records too, is the outermost layer
    m.record_hit(DM, 5e-3, 9.0, tier="decorator")
    assert (m.hits, m.misses, m.saved_computation_cost) == (1, 0, 9.0)


def test_levels_as_member_value_or_name_share_one_key():
    m = CacheMetrics()
    m.record_hit(DM, 1e-6)
    m.record_hit("derived_metrics", 1e-6)
    m.record_hit("DERIVED_METRICS", 1e-6)
    m.record_miss("DERIVED_METRICS", 1e-6)
    assert m.level_hits == {"derived_metrics": 3}
    assert m.level_misses == {"derived_metrics": 1}


def test_unknown_level_or_tier_is_refused():
    m = CacheMetrics()
    with pytest.raises(InvalidArgumentError, match="unknown cache level"):
        m.record_hit("derived", 1e-6)
    with pytest.raises(ValueError):
        m.record_miss(3, 1e-6)
    with pytest.raises(InvalidArgumentError, match="tier"):
        m.record_hit(DM, 1e-6, tier=None)
    with pytest.raises(InvalidArgumentError):
        m.record_eviction("nope")
    assert m.hits == 0 and m.misses == 0


def test_unusable_durations_count_but_stay_out_of_latency():
    m = CacheMetrics()
    for bad in (math.nan, -1.0, math.inf, None, "slow"):
        m.record_hit(DM, bad, 1.0)
    m.record_hit(DM, 0.5, 1.0)
    assert m.hits == 6
    assert m.hit_times == [0.5]
    assert m.get_summary()["avg_hit_time_ms"] == pytest.approx(500.0)
    assert m.saved_computation_cost == pytest.approx(6.0)


def test_other_events():
    m = CacheMetrics()
    m.record_set(DM, 1000, tier="disk", stored_nbytes=250, duration=0.01)
    m.record_set(DM, 500)  # memory: no compression, excluded from the ratio
    m.record_read(1000, tier="disk", stored_nbytes=250)
    m.record_eviction(DM, 3, nbytes=3000)
    m.record_eviction("temporary", tier="disk")
    m.record_invalidation(DM, 2)
    m.record_invalidation("temporary", tier="redis")
    m.record_rejected(DM)
    m.record_error(tier="redis", exc=TimeoutError("slow"))
    m.record_error(tier="redis")
    m.record_corrupt(tier="disk")
    m.record_hash_time(2e-6)
    m.record_hash_time(4e-6)
    assert m.sets == 2
    assert m.bytes_written == 1500 and m.bytes_read == 1000
    assert m.compression_ratio == pytest.approx(4.0)
    assert m.evictions == 4 and m.level_evictions == {"derived_metrics": 3, "temporary": 1}
    assert m.invalidations == 3 and m.level_invalidations == {"derived_metrics": 2, "temporary": 1}
    assert m.rejected == 1 and m.corrupt == 1
    assert m.errors == 2 and m.tier_errors == {"redis": 2}
    assert m.hash_count == 2 and m.hash_time == pytest.approx(6e-6)
    m.record_hash_time(None)  # counted, left out of the latency like a hit's
    m.record_set(DM, 10, duration="soon")
    assert m.hash_count == 3 and m.hash_time == pytest.approx(6e-6)
    snap = m.snapshot()
    assert snap["error_types"] == {"redis": {"TimeoutError": 1}}
    assert snap["last_error"] == {"redis": "TimeoutError: slow"}
    assert snap["level_counters"]["evicted_bytes"]["memory"]["derived_metrics"] == 3000
    assert m.latency_percentiles("set")[0.5] == pytest.approx(0.01)
    assert 2e-6 <= m.latency_percentiles("hash")[0.5] <= 4e-6


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda m: m.record_set(DM, "8 MB"), "nbytes"),
        (lambda m: m.record_set(DM, 10, stored_nbytes=[1]), "stored_nbytes"),
        (lambda m: m.record_read(None, tier="disk"), "nbytes"),
        (lambda m: m.record_eviction(DM, count="3"), "count"),
        (lambda m: m.record_invalidation(DM, True), "count"),
        (lambda m: m.adjust_size(DM, b"1"), "delta_bytes"),
    ],
)
def test_counts_must_be_numbers(call, name):
    m = CacheMetrics()
    with pytest.raises(InvalidArgumentError, match=name):
        call(m)
    assert m.snapshot()["tier_counters"]["bytes_written"] == {}
    m.adjust_size(DM, np.int64(5))
    m.record_eviction(DM, np.int32(2), nbytes=np.float64(10.0))
    assert m.total_size_bytes == 5 and m.evictions == 2
    json.dumps(m.snapshot())  # numpy scalars were stored as plain numbers


def test_sizes_follow_adjustments():
    m = CacheMetrics()
    m.adjust_size(DM, 1000)
    m.adjust_size(DM, -400)
    m.adjust_size("temporary", 10, tier="disk")
    assert m.total_size_bytes == 610
    assert m.size_by_level == {"derived_metrics": 600, "temporary": 10}


def test_memory_stays_bounded():
    m = CacheMetrics()
    n = 3 * telemetry._FOLD_AT + 17
    for i in range(n):
        m.record_hit(DM, 1e-6 * (1 + i % 50), 1.0)
        m.record_miss(DM, 1e-5)
    # pending lists are folded before they pass the threshold
    assert all(len(durations) < telemetry._FOLD_AT for durations, _, _ in m._logs)
    assert len(m.hit_times) == RECENT_SAMPLES
    assert m.hits == n and m.misses == n
    snap = m.snapshot()
    hist = snap["latency"]["hit"]["memory"]["derived_metrics"]
    assert len(hist["buckets"]) == len(LATENCY_BUCKETS) + 1
    assert sum(hist["buckets"]) == n


def test_recent_samples_are_the_latest():
    m = CacheMetrics()
    for i in range(RECENT_SAMPLES + 500):
        m.record_miss(DM, float(i))
    assert m.miss_times == [float(i) for i in range(500, RECENT_SAMPLES + 500)]


def test_percentiles_track_numpy():
    rng = np.random.default_rng(7)
    samples = rng.lognormal(mean=math.log(2e-6), sigma=1.0, size=20000)
    m = CacheMetrics()
    for x in samples:
        m.record_hit(DM, float(x))
    got = m.latency_percentiles("hit", (0.5, 0.95, 0.99))
    for q, value in got.items():
        exact = float(np.quantile(samples, q))
        # buckets are 10**0.1 (26%) wide; interpolation lands well inside one
        assert value == pytest.approx(exact, rel=0.08), q
    s = m.get_summary()
    assert s["p50_hit_ms"] == pytest.approx(got[0.5] * 1000)
    assert m.latency_percentiles("hit", tier="disk") == {0.5: 0.0, 0.95: 0.0, 0.99: 0.0}
    assert m.latency_percentiles("hit", level="temporary")[0.5] == 0.0
    assert m.latency_percentiles("hit", level=DM)[0.5] == got[0.5]


def test_percentile_of_one_value_is_that_value():
    m = CacheMetrics()
    m.record_miss(DM, 3.7e-4)
    assert m.latency_percentiles("miss", (0.0, 0.5, 1.0)) == {0.0: 3.7e-4, 0.5: 3.7e-4, 1.0: 3.7e-4}


def test_percentile_arguments_are_checked():
    m = CacheMetrics()
    with pytest.raises(InvalidArgumentError, match="quantile"):
        m.latency_percentiles("hit", (1.5,))
    with pytest.raises(InvalidArgumentError, match="kind"):
        m.latency_percentiles("evict")
    with pytest.raises(InvalidArgumentError, match="per level"):
        m.latency_percentiles("set", level=DM)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-9, max_value=1e4, allow_nan=False), min_size=1, max_size=200),
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=2, max_size=6),
)
def test_percentiles_are_ordered_and_within_observed_range(values, quantiles):
    counts = np.bincount(np.searchsorted(np.array(LATENCY_BUCKETS), values), minlength=len(LATENCY_BUCKETS) + 1)
    qs = sorted(quantiles)
    got = [percentile_from_buckets(counts, q, min(values), max(values)) for q in qs]
    assert got == sorted(got)
    assert all(min(values) <= g <= max(values) for g in got)


def test_threads_lose_nothing(monkeypatch):
    # fold often and switch threads as often as possible, so appends and folds interleave
    monkeypatch.setattr(telemetry, "_FOLD_AT", 64)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        _run_threads()
    finally:
        sys.setswitchinterval(old)


def _run_threads():
    m = CacheMetrics()
    threads, per_thread = 4, 20000
    stop = threading.Event()
    seen = []

    def writer(t):
        level = ("derived_metrics", DM, "TEMPORARY", CacheLevel.NODE_PROPERTIES)[t]
        for i in range(per_thread):
            m.record_hit(level, 1e-6, 1.0, tier=("memory", "disk")[i % 2])
            m.record_miss(level, 2e-6)
            if i % 100 == 0:
                m.record_eviction(level)
                m.adjust_size(level, 10)

    def reader():
        while not stop.is_set():
            seen.append(m.hits)
            m.snapshot()

    watcher = threading.Thread(target=reader)
    watcher.start()
    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join()
    assert m.hits == threads * per_thread
    assert m.misses == threads * per_thread
    assert m.saved_computation_cost == threads * per_thread
    assert m.evictions == threads * per_thread // 100
    assert m.total_size_bytes == 10 * threads * per_thread // 100
    assert m.tier_hits == {"memory": threads * per_thread // 2, "disk": threads * per_thread // 2}
    assert seen == sorted(seen)  # a reader never sees the count go back
    snap = m.snapshot()
    total_in_buckets = sum(
        sum(h["buckets"]) for by_level in snap["latency"]["hit"].values() for h in by_level.values()
    )
    assert total_in_buckets == threads * per_thread


def test_reset_forgets_everything():
    m = _filled()
    m.record_error(tier="disk")
    m.reset()
    assert m.hits == m.misses == m.errors == m.total_size_bytes == 0
    assert m.hit_times == [] and m.level_hits == {}
    m.record_hit(DM, 1e-6)
    assert m.hits == 1


def test_merge_adds_another_and_its_json_snapshot():
    a, b = _filled(), _filled()
    b.record_eviction(DM, 2)
    b.record_error(tier="redis", exc=OSError("x"))
    b.record_hash_time(1e-6)
    a.merge(b)
    assert a.hits == 6 and a.misses == 2 and a.evictions == 2 and a.errors == 1
    assert a.total_size_bytes == 8 * 1024 * 1024
    assert a.saved_computation_cost == pytest.approx(32.0)
    c = CacheMetrics()
    c.merge(json.loads(json.dumps(a.snapshot())))
    assert c.get_summary() | {"avg_hit_time_ms": 0} == a.get_summary() | {"avg_hit_time_ms": 0}
    assert c.get_summary()["avg_hit_time_ms"] == pytest.approx(a.get_summary()["avg_hit_time_ms"])


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda s: s.update(buckets=[1.0]), "different latency buckets"),
        (lambda s: s.pop("sizes"), "missing"),
        (lambda s: s["tier_counters"].update(bogus={"disk": 1}), "unknown series"),
        (lambda s: s["latency"].update(evict={}), "unknown series"),
        (lambda s: s["latency"]["hit"]["memory"]["derived_metrics"].update(buckets=[1, 2]), "buckets"),
    ],
)
def test_merge_refuses_what_is_not_a_snapshot_and_changes_nothing(spoil, message):
    target = _filled()
    before = target.snapshot()
    bad = _filled().snapshot()
    spoil(bad)
    with pytest.raises(InvalidArgumentError, match=message):
        target.merge(bad)
    assert target.snapshot() == before
    with pytest.raises(InvalidArgumentError, match="snapshot"):
        target.merge([1, 2])


def test_pickle_and_copy_keep_the_counts():
    m = _filled()
    m.record_error(tier="disk", exc=OSError("full"))
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert clone.snapshot() == m.snapshot()
        clone.record_hit(DM, 1e-6)
        assert clone.hits == m.hits + 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_is_not_stuck_on_a_lock_held_at_fork():
    m = CacheMetrics()
    m.record_hit(DM, 1e-6)
    with m._lock:  # as if another thread were folding when the process forked
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)  # a deadlocked child dies instead of hanging the suite
            try:
                m.record_hit(DM, 1e-6)
                code = 0 if m.hits == 2 else 1
            except BaseException:
                code = 2
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert m.hits == 1


def test_unhashable_tier_is_refused_clearly():
    with pytest.raises(InvalidArgumentError, match="tier"):
        CacheMetrics().record_hit(DM, 1e-6, tier=["memory"])


class _BatchingSource:
    """Counts hits itself and pushes them with merge(), like the memory tier."""

    def __init__(self, metrics):
        self.metrics = metrics
        self.pending = 0
        self.flushes = 0
        metrics.register_flush(self.flush)

    def flush(self):
        self.flushes += 1
        assert self.metrics.hits >= 0  # a read inside a flush does not flush again
        other = CacheMetrics()
        for _ in range(self.pending):
            other.record_hit(DM, 1e-6, 1.0, tier="memory")
        self.pending = 0
        self.metrics.merge(other)


def test_registered_flushes_run_before_every_read():
    m = CacheMetrics()
    source = _BatchingSource(m)
    m.register_flush(source.flush)  # again: still one call per read
    source.pending = 3
    assert m.hits == 3 and source.flushes == 1
    source.pending = 2
    assert m.get_summary()["hits"] == 5
    source.pending = 1
    assert m.snapshot()["latency"]["hit"]["memory"]["derived_metrics"]["count"] == 6
    calls = []
    m.register_flush(lambda: calls.append(1))
    m.total_size_bytes
    assert calls == [1]
    with pytest.raises(InvalidArgumentError, match="callable"):
        m.register_flush("flush")


def test_a_flushing_source_is_held_weakly():
    m = CacheMetrics()
    source = _BatchingSource(m)
    ref = weakref.ref(source)
    del source
    gc.collect()
    assert ref() is None
    assert m.hits == 0 and m._flushes == []


def test_memory_tier_counts_are_seen_at_once_through_its_flush():
    from tnfr_fastcache import TNFRHierarchicalCache

    m = CacheMetrics()
    cache = TNFRHierarchicalCache(max_memory_mb=8, metrics=m)
    m.register_flush(cache.flush_metrics)  # harmless if the tier registers itself too
    cache.set("x", 1.0, CacheLevel.TEMPORARY)
    cache.get("x", CacheLevel.TEMPORARY)
    cache.get("y", CacheLevel.TEMPORARY)
    assert m.get_summary()["hit_rate"] == 0.5


def test_empty_metrics_summary_and_repr():
    m = CacheMetrics()
    s = m.get_summary()
    assert s["hit_rate"] == 0.0 and s["total_accesses"] == 0 and s["avg_hit_time_ms"] == 0.0
    assert s["compression_ratio"] == 1.0 and s["level_breakdown"] == {}
    assert "hits=0" in repr(m)
    assert "Cache Performance Report" in m.report(file=io.StringIO())
