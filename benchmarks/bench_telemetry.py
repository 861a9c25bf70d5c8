"""Telemetry: what recording costs, next to a memory-tier hit and to what users would use instead.

Every benchmark runs its operation ``LOOP`` (16384) times per round (one call is too short to time
alone); divide the medians by ``LOOP`` for the cost per operation.

Groups:

- ``telemetry-record-hit``: one recorded hit.
  ``ours-record_hit`` (:meth:`CacheMetrics.record_hit`, lock-free, bounded histograms; with
  a CacheLevel as the tiers pass it, and ``-str`` with the level's string);
  ``bare-counter`` (a method doing ``self.hits += 1``: the floor of any Python recorder);
  ``seed-CacheMetrics`` (the seed's dataclass: list appends, memory grows forever);
  ``upstream-tnfr`` (``tnfr``'s ``CacheManager.increment_hit(name, duration=...)``, a lock);
  ``prometheus_client`` (a labelled ``Counter.inc()`` and ``Histogram.observe()``).
- ``telemetry-memory-hit``: a hit in :class:`TNFRHierarchicalCache` with metrics on and off,
  and ``lookup`` (which times the hit); the goal compares ``ours-record_hit`` with these.
- ``telemetry-tiered-hit``: a :class:`TieredCache` over one memory tier, whose hit calls
  ``record_hit`` once (the disk, Redis and tiered caches record each hit this way; the memory
  tier counts in its compiled index and merges in batches), next to ``ours-record_hit`` alone.
- ``telemetry-read``: ``get_summary()`` and a Prometheus scrape (``generate_latest``) of
  metrics holding 3 tiers x 4 levels.

Goal (issue 8): recording costs under 10% of a memory-tier hit.
"""

import threading
from dataclasses import dataclass, field

import pytest

from tnfr_fastcache import CacheLevel
from tnfr_fastcache.telemetry import CacheMetrics

# Several folds per round (one per telemetry._FOLD_AT records), so that medians include the
# batched folding, not just the appends between folds.
LOOP = 16384
DM = CacheLevel.DERIVED_METRICS
LEVELS = list(CacheLevel)


@dataclass
class SeedCacheMetrics:
    """The seed's ``CacheMetrics`` (its ``record_hit``), written out as the peer."""

    hits: int = 0
    hit_times: list = field(default_factory=list)
    level_hits: dict = field(default_factory=dict)
    saved_computation_cost: float = 0.0

    def record_hit(self, level, duration, cost):
        self.hits += 1
        self.hit_times.append(duration)
        self.level_hits[level] = self.level_hits.get(level, 0) + 1
        self.saved_computation_cost += cost


class BareCounter:
    def __init__(self):
        self.hits = 0

    def record_hit(self, level, duration, cost=0.0, *, tier="memory"):
        self.hits += 1


@pytest.mark.parametrize(
    "subject", ["ours-record_hit", "ours-record_hit-str", "ours-record_miss", "bare-counter",
                "seed-CacheMetrics", "upstream-tnfr", "prometheus_client"]
)
def test_record_hit(benchmark, subject):
    benchmark.group = "telemetry-record-hit"
    benchmark.extra_info["subject"] = subject
    if subject == "ours-record_hit":
        metrics = CacheMetrics()
        record = metrics.record_hit

        def run():
            for _ in range(LOOP):
                record(DM, 2.5e-7, 1.0, tier="memory")

    elif subject == "ours-record_miss":
        metrics = CacheMetrics()
        record = metrics.record_miss

        def run():
            for _ in range(LOOP):
                record(DM, 2.5e-7, tier="memory")

    elif subject == "bare-counter":
        record = BareCounter().record_hit

        def run():
            for _ in range(LOOP):
                record(DM, 2.5e-7, 1.0, tier="memory")

    elif subject == "ours-record_hit-str":
        record = CacheMetrics().record_hit

        def run():
            for _ in range(LOOP):
                record("derived_metrics", 2.5e-7, 1.0, tier="memory")

    elif subject == "seed-CacheMetrics":
        # the seed keys levels by the string it is given
        record = SeedCacheMetrics().record_hit

        def run():
            for _ in range(LOOP):
                record("derived_metrics", 2.5e-7, 1.0)

    elif subject == "upstream-tnfr":
        cache = pytest.importorskip("tnfr.utils.cache")
        manager = cache.CacheManager()
        increment = manager.increment_hit

        def run():
            for _ in range(LOOP):
                increment("derived_metrics", duration=2.5e-7)

    else:
        prom = pytest.importorskip("prometheus_client")
        registry = prom.CollectorRegistry()
        hits = prom.Counter("hits", "hits", ["level", "tier"], registry=registry)
        latency = prom.Histogram("latency_seconds", "latency", registry=registry)
        child = hits.labels(level="derived_metrics", tier="memory")

        def run():
            for _ in range(LOOP):
                child.inc()
                latency.observe(2.5e-7)

    benchmark(run)
    benchmark.extra_info["ops_per_round"] = LOOP


@pytest.mark.parametrize("subject", ["ours-get-metrics-on", "ours-get-metrics-off", "ours-lookup-metrics-on"])
def test_memory_hit(benchmark, subject):
    from tnfr_fastcache.backends.memory import TNFRHierarchicalCache

    benchmark.group = "telemetry-memory-hit"
    benchmark.extra_info["subject"] = subject
    cache = TNFRHierarchicalCache(max_memory_mb=64, enable_metrics=subject != "ours-get-metrics-off")
    cache.set("coherence", 0.75, DM, computation_cost=2.0)
    op = cache.lookup if subject == "ours-lookup-metrics-on" else cache.get
    assert op("coherence", DM) is not None

    def run():
        for _ in range(LOOP):
            op("coherence", DM)

    benchmark(run)
    benchmark.extra_info["ops_per_round"] = LOOP
    cache.close()


@pytest.mark.parametrize("subject", ["ours-tiered-lookup", "ours-record_hit"])
def test_tiered_hit(benchmark, subject):
    from tnfr_fastcache.backends.memory import TNFRHierarchicalCache
    from tnfr_fastcache.backends.tiered import TieredCache

    benchmark.group = "telemetry-tiered-hit"
    benchmark.extra_info["subject"] = subject
    if subject == "ours-tiered-lookup":
        cache = TieredCache(TNFRHierarchicalCache(max_memory_mb=64))
        cache.set("coherence", 0.75, DM, computation_cost=2.0)
        lookup = cache.lookup
        assert lookup("coherence", DM) is not None

        def run():
            for _ in range(LOOP):
                lookup("coherence", DM)

    else:
        record = CacheMetrics().record_hit

        def run():
            for _ in range(LOOP):
                record(DM, 2.5e-7, 2.0, tier="tiered")

    benchmark(run)
    benchmark.extra_info["ops_per_round"] = LOOP


def _busy_metrics():
    metrics = CacheMetrics()
    for tier in ("memory", "disk", "redis"):
        for level in LEVELS:
            for i in range(200):
                metrics.record_hit(level, 1e-6 * (1 + i), 1.0, tier=tier)
                metrics.record_miss(level, 1e-4, tier=tier)
            metrics.record_eviction(level, 3, tier=tier)
            metrics.adjust_size(level, 1 << 20, tier=tier)
    return metrics


@pytest.mark.parametrize("subject", ["ours-get_summary", "ours-prometheus-scrape"])
def test_read(benchmark, subject):
    benchmark.group = "telemetry-read"
    benchmark.extra_info["subject"] = subject
    metrics = _busy_metrics()
    if subject == "ours-get_summary":
        summary = benchmark(metrics.get_summary)
        assert summary["hits"] == 3 * 4 * 200
    else:
        prom = pytest.importorskip("prometheus_client")
        from tnfr_fastcache.prometheus import export_metrics_to_prometheus

        registry = prom.CollectorRegistry()
        export_metrics_to_prometheus(metrics, registry)
        text = benchmark(prom.generate_latest, registry)
        assert b"tnfr_cache_hits_total" in text


def test_record_hit_from_threads(benchmark):
    """Four threads recording at once: the lock-free path under contention."""
    benchmark.group = "telemetry-record-hit-4-threads"
    benchmark.extra_info["subject"] = "ours-record_hit"
    metrics = CacheMetrics()

    def worker():
        record = metrics.record_hit
        for _ in range(LOOP):
            record(DM, 2.5e-7, 1.0, tier="memory")

    def run():
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    benchmark(run)
    benchmark.extra_info["ops_per_round"] = 4 * LOOP
    assert metrics.hits % (4 * LOOP) == 0
