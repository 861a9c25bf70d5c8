"""Prometheus export: scraped over real HTTP and parsed with prometheus_client's parser."""

import os
import socket
import subprocess
import sys
import textwrap
import urllib.request

import pytest

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tnfr_fastcache import BackendError, CacheLevel, InvalidArgumentError  # noqa: E402
from tnfr_fastcache.prometheus import (  # noqa: E402
    TNFRCacheCollector,
    export_metrics_to_prometheus,
    start_metrics_server,
)
from tnfr_fastcache.telemetry import CacheMetrics  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DM = CacheLevel.DERIVED_METRICS


def _run_python(code):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )


def _scrape(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def metrics():
    m = CacheMetrics()
    for _ in range(3):
        m.record_hit(DM, 2e-6, 4.0)
    m.record_hit("temporary", 5e-3, 1.0, tier="disk")
    m.record_miss(DM, 1e-3)
    m.record_eviction(DM, 2)
    m.record_invalidation("temporary", tier="disk")
    m.record_rejected(DM)
    m.record_set(DM, 8000, stored_nbytes=1000, tier="disk")
    m.record_read(8000, tier="disk", stored_nbytes=1000)
    m.record_error(tier="redis", exc=ConnectionError("refused"))
    m.record_corrupt(tier="disk")
    m.record_hash_time(3e-6)
    m.adjust_size(DM, 4096)
    return m


@pytest.fixture
def served(metrics):
    registry = CollectorRegistry()
    export_metrics_to_prometheus(metrics, registry)
    with start_metrics_server(0, registry=registry) as server:
        yield metrics, registry, server


def test_scrape_serves_every_series(served):
    metrics, _, server = served
    assert server.host == "127.0.0.1" and server.port > 0
    s = _scrape(server.url)
    assert _value(s, "tnfr_cache_hits_total", level="derived_metrics", tier="memory") == 3
    assert _value(s, "tnfr_cache_hits_total", level="temporary", tier="disk") == 1
    assert _value(s, "tnfr_cache_misses_total", level="derived_metrics", tier="memory") == 1
    assert _value(s, "tnfr_cache_saved_computation_cost_total", level="derived_metrics", tier="memory") == 12
    assert _value(s, "tnfr_cache_size_bytes", level="derived_metrics", tier="memory") == 4096
    assert _value(s, "tnfr_cache_evictions_total", level="derived_metrics", tier="memory") == 2
    assert _value(s, "tnfr_cache_invalidations_total", level="temporary", tier="disk") == 1
    assert _value(s, "tnfr_cache_rejected_total", level="derived_metrics", tier="memory") == 1
    assert _value(s, "tnfr_cache_sets_total", level="derived_metrics", tier="disk") == 1
    assert _value(s, "tnfr_cache_errors_total", tier="redis") == 1
    assert _value(s, "tnfr_cache_corrupt_total", tier="disk") == 1
    assert _value(s, "tnfr_cache_written_bytes_total", tier="disk") == 8000
    assert _value(s, "tnfr_cache_stored_bytes_total", tier="disk") == 1000
    assert _value(s, "tnfr_cache_read_bytes_total", tier="disk") == 8000
    assert _value(s, "tnfr_cache_hash_seconds_count") == 1


def test_latency_histogram_is_cumulative_and_complete(served):
    _, _, server = served
    s = _scrape(server.url)
    labels = dict(result="hit", level="derived_metrics", tier="memory")
    buckets = sorted(
        (float(dict(key)["le"]), value)
        for (name, key), value in s.items()
        if name == "tnfr_cache_latency_seconds_bucket"
        and {k: v for k, v in key if k != "le"} == labels
    )
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)
    assert buckets[-1] == (float("inf"), 3)
    # 2 us falls in (1 us, 3.16 us]
    assert dict(buckets)[1e-6] == 0 and dict(buckets)[3.16228e-6] == 3
    assert _value(s, "tnfr_cache_latency_seconds_count", **labels) == 3
    assert _value(s, "tnfr_cache_latency_seconds_sum", **labels) == pytest.approx(6e-6)


def test_scrapes_never_double_count(served):
    metrics, registry, server = served
    first = _scrape(server.url)
    assert _scrape(server.url) == first
    export_metrics_to_prometheus(metrics, registry)  # again: idempotent
    assert _scrape(server.url) == first
    metrics.record_hit(DM, 2e-6, 4.0)
    after = _scrape(server.url)
    assert _value(after, "tnfr_cache_hits_total", level="derived_metrics", tier="memory") == 4


def test_export_is_idempotent_and_sums_several_metrics(metrics):
    registry = CollectorRegistry()
    collector = export_metrics_to_prometheus(metrics, registry)
    assert export_metrics_to_prometheus(metrics, registry) is collector
    other = CacheMetrics()
    other.record_hit(DM, 1e-6, 1.0)
    assert export_metrics_to_prometheus(other, registry) is collector
    value = registry.get_sample_value(
        "tnfr_cache_hits_total", {"level": "derived_metrics", "tier": "memory"}
    )
    assert value == 4
    collector.remove(other)
    assert registry.get_sample_value(
        "tnfr_cache_hits_total", {"level": "derived_metrics", "tier": "memory"}
    ) == 3
    with pytest.raises(InvalidArgumentError, match="CacheMetrics"):
        export_metrics_to_prometheus({"hits": 1}, registry)


def test_collector_names_clash_with_the_seed_counters():
    # describe() lets the registry refuse a second exporter of the same names
    registry = CollectorRegistry()
    registry.register(TNFRCacheCollector())
    with pytest.raises(ValueError, match="Duplicated"):
        prometheus_client.Counter("tnfr_cache_hits_total", "seed", ["level"], registry=registry)


def test_server_arguments_and_busy_port():
    with pytest.raises(InvalidArgumentError, match="port"):
        start_metrics_server(70000)
    with pytest.raises(InvalidArgumentError, match="port"):
        start_metrics_server("9000")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        with pytest.raises(BackendError, match="cannot serve metrics"):
            start_metrics_server(sock.getsockname()[1], registry=CollectorRegistry())


def test_default_registry_and_seed_example_in_a_fresh_process():
    # The seed's Prometheus example, as written, next to our exporter on its own registry.
    result = _run_python(
        """
        import urllib.request
        from prometheus_client import Counter, Histogram, Gauge, CollectorRegistry
        from tnfr_fastcache.telemetry import CacheMetrics
        from tnfr_fastcache import prometheus as ours

        metrics = CacheMetrics()
        metrics.record_hit("derived_metrics", 0.001, 2.0)
        metrics.record_miss("temporary", 0.002)
        metrics.adjust_size("derived_metrics", 1234)

        cache_hits = Counter('tnfr_cache_hits_total', 'Cache hits', ['level'])
        cache_misses = Counter('tnfr_cache_misses_total', 'Cache misses', ['level'])
        cache_latency = Histogram('tnfr_cache_latency_seconds', 'Cache access latency')
        cache_size = Gauge('tnfr_cache_size_bytes', 'Cache size in bytes')

        def export_metrics_to_prometheus(metrics: CacheMetrics):
            for level, hits in metrics.level_hits.items():
                cache_hits.labels(level=level).inc(hits)
            for level, misses in metrics.level_misses.items():
                cache_misses.labels(level=level).inc(misses)
            for duration in metrics.hit_times + metrics.miss_times:
                cache_latency.observe(duration)
            cache_size.set(metrics.total_size_bytes)

        export_metrics_to_prometheus(metrics)
        print(cache_hits.labels(level="derived_metrics")._value.get(), cache_size._value.get())

        registry = CollectorRegistry()
        ours.export_metrics_to_prometheus(metrics, registry)
        with ours.start_metrics_server(0, registry=registry) as server:
            text = urllib.request.urlopen(server.url, timeout=10).read().decode()
        print('tnfr_cache_hits_total{level="derived_metrics",tier="memory"} 1.0' in text)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1.0", "1234.0", "True"]
    result = _run_python(
        """
        import prometheus_client
        from tnfr_fastcache import CacheMetrics, export_metrics_to_prometheus
        m = CacheMetrics()
        m.record_miss("temporary", 0.1)
        export_metrics_to_prometheus(m)
        export_metrics_to_prometheus(m)
        print(prometheus_client.REGISTRY.get_sample_value(
            "tnfr_cache_misses_total", {"level": "temporary", "tier": "memory"}))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1.0"


def test_import_without_prometheus_client_names_the_extra():
    result = _run_python(
        """
        import sys
        sys.modules["prometheus_client"] = None
        import tnfr_fastcache
        m = tnfr_fastcache.CacheMetrics()  # telemetry itself does not need it
        try:
            import tnfr_fastcache.prometheus
        except ImportError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "pip install tnfr_fastcache[prometheus]" in result.stdout
