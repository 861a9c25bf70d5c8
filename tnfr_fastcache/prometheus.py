"""Prometheus export of :class:`~tnfr_fastcache.telemetry.CacheMetrics`.

The seed exported by calling ``inc()`` with running totals, so every export counted
everything again. Here a collector reads the metrics when Prometheus scrapes, so the values
served are exactly the totals recorded, however often either side runs::

    from tnfr_fastcache.prometheus import export_metrics_to_prometheus, start_metrics_server

    export_metrics_to_prometheus(cache.metrics)      # idempotent
    server = start_metrics_server(9464)              # http://127.0.0.1:9464/metrics

Series (``level`` is the level's string value, ``tier`` the tier's name):

- ``tnfr_cache_hits_total{level,tier}``, ``tnfr_cache_misses_total{level,tier}``
- ``tnfr_cache_latency_seconds{result,level,tier}`` histogram, ``result`` is hit or miss
- ``tnfr_cache_size_bytes{level,tier}`` gauge
- ``tnfr_cache_evictions_total``, ``tnfr_cache_invalidations_total``,
  ``tnfr_cache_rejected_total``, ``tnfr_cache_sets_total`` ``{level,tier}``
- ``tnfr_cache_saved_computation_cost_total{level,tier}``
- ``tnfr_cache_errors_total{tier}``, ``tnfr_cache_corrupt_total{tier}``,
  ``tnfr_cache_written_bytes_total{tier}``, ``tnfr_cache_stored_bytes_total{tier}``,
  ``tnfr_cache_read_bytes_total{tier}``
- ``tnfr_cache_hash_seconds`` histogram

prometheus_client is an optional dependency: ``pip install tnfr_fastcache[prometheus]``.
"""

import socket
import threading
import weakref
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

try:
    import prometheus_client
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "tnfr_fastcache.prometheus needs prometheus_client: "
        "pip install tnfr_fastcache[prometheus]"
    ) from exc

from .errors import BackendError, InvalidArgumentError
from .telemetry import LATENCY_BUCKETS, CacheMetrics

__all__ = ["TNFRCacheCollector", "export_metrics_to_prometheus", "start_metrics_server", "MetricsServer"]

# Every 5th internal bound: 2 buckets per decade from 100 ns to 1000 s. Cumulative counts at
# a subset of the bounds are exact, and 21 buckets keep each series affordable to scrape.
_EXPORTED = tuple(range(0, len(LATENCY_BUCKETS), 5))

# (counter in the snapshot, Prometheus name, help)
_LEVEL_COUNTERS = (
    ("evictions", "tnfr_cache_evictions_total", "Entries evicted for space."),
    ("invalidations", "tnfr_cache_invalidations_total", "Entries removed by invalidation."),
    ("rejected", "tnfr_cache_rejected_total", "Values refused as larger than the tier budget."),
    ("sets", "tnfr_cache_sets_total", "Values stored."),
)
_TIER_COUNTERS = (
    ("errors", "tnfr_cache_errors_total", "Tier failures caught and treated as misses."),
    ("corrupt", "tnfr_cache_corrupt_total", "Corrupt entries found and dropped."),
    ("bytes_written", "tnfr_cache_written_bytes_total", "Raw bytes of the values stored."),
    ("stored_bytes_written", "tnfr_cache_stored_bytes_total", "Bytes stored after compression."),
    ("bytes_read", "tnfr_cache_read_bytes_total", "Decoded bytes of the values read back."),
)


def _histogram_buckets(hist):
    """Cumulative ``[(le, count)]`` at the exported bounds, ending with ``+Inf``."""
    counts = hist["buckets"]
    out = []
    running = 0
    start = 0
    for index in _EXPORTED:
        running += sum(counts[start : index + 1])
        start = index + 1
        out.append((repr(LATENCY_BUCKETS[index]), running))
    out.append(("+Inf", running + sum(counts[start:])))
    return out


class TNFRCacheCollector:
    """A Prometheus collector over one or more :class:`CacheMetrics`, read at scrape time.

    Values of several metrics objects with the same labels are summed.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._metrics = []

    def add(self, metrics):
        """Collect ``metrics`` too; adding the same object twice has no effect."""
        if not isinstance(metrics, CacheMetrics):
            raise InvalidArgumentError(f"expected a CacheMetrics, got {type(metrics).__name__}")
        with self._lock:
            if not any(m is metrics for m in self._metrics):
                self._metrics.append(metrics)

    def remove(self, metrics):
        """Stop collecting ``metrics``."""
        with self._lock:
            self._metrics = [m for m in self._metrics if m is not metrics]

    def describe(self):
        """The metric families with no samples, so the registry can check names."""
        return self._families([])

    def collect(self):
        """The current values of every metrics object added."""
        with self._lock:
            metrics = list(self._metrics)
        return self._families([m.snapshot() for m in metrics])

    @staticmethod
    def _families(snapshots):
        hits = CounterMetricFamily("tnfr_cache_hits_total", "Cache hits.", labels=["level", "tier"])
        misses = CounterMetricFamily(
            "tnfr_cache_misses_total", "Cache misses.", labels=["level", "tier"]
        )
        saved = CounterMetricFamily(
            "tnfr_cache_saved_computation_cost_total",
            "Sum of the computation cost of the values served from cache.",
            labels=["level", "tier"],
        )
        latency = HistogramMetricFamily(
            "tnfr_cache_latency_seconds",
            "Cache lookup latency.",
            labels=["result", "level", "tier"],
        )
        size = GaugeMetricFamily(
            "tnfr_cache_size_bytes", "Bytes currently stored.", labels=["level", "tier"]
        )
        level_families = {
            name: CounterMetricFamily(prom, doc, labels=["level", "tier"])
            for name, prom, doc in _LEVEL_COUNTERS
        }
        tier_families = {
            name: CounterMetricFamily(prom, doc, labels=["tier"]) for name, prom, doc in _TIER_COUNTERS
        }
        hashing = HistogramMetricFamily(
            "tnfr_cache_hash_seconds", "Time spent fingerprinting call arguments."
        )

        # keyed by family name (families compare by value, so are not hashable)
        totals = {}  # (name, labels) -> value; several metrics objects sum
        histograms = {}  # (name, labels) -> merged histogram dict

        def add(family, labels, value):
            key = (family.name, labels)
            totals[key] = totals.get(key, 0) + value

        def add_hist(family, labels, hist):
            key = (family.name, labels)
            merged = histograms.get(key)
            if merged is None:
                histograms[key] = {"buckets": list(hist["buckets"]), "sum": hist["sum"]}
            else:
                merged["buckets"] = [a + b for a, b in zip(merged["buckets"], hist["buckets"])]
                merged["sum"] += hist["sum"]

        for snap in snapshots:
            for result, family in (("hit", hits), ("miss", misses)):
                for tier, by_level in snap["latency"][result].items():
                    for level, hist in by_level.items():
                        add(family, (level, tier), hist["count"])
                        add_hist(latency, (result, level, tier), hist)
                        if result == "hit":
                            add(saved, (level, tier), hist["cost"])
            for tier, by_level in snap["sizes"].items():
                for level, n in by_level.items():
                    add(size, (level, tier), n)
            for name, family in level_families.items():
                for tier, by_level in snap["level_counters"][name].items():
                    for level, n in by_level.items():
                        add(family, (level, tier), n)
            for name, family in tier_families.items():
                for tier, n in snap["tier_counters"][name].items():
                    add(family, (tier,), n)
            if snap["hash_latency"]["count"]:
                add_hist(hashing, (), snap["hash_latency"])

        families = [hits, misses, saved, latency, size, *level_families.values(),
                    *tier_families.values(), hashing]
        by_name = {family.name: family for family in families}
        for (name, labels), value in totals.items():
            by_name[name].add_metric(list(labels), float(value))
        for (name, labels), hist in histograms.items():
            by_name[name].add_metric(list(labels), _histogram_buckets(hist), hist["sum"])
        return families


_collectors = weakref.WeakKeyDictionary()  # registry -> its TNFRCacheCollector
_collectors_lock = threading.Lock()


def export_metrics_to_prometheus(metrics, registry=None):
    """Serve ``metrics`` from ``registry`` (default: prometheus_client's global registry).

    Idempotent: exporting the same metrics again changes nothing, and values are read at
    scrape time, so nothing is ever counted twice. Several metrics objects exported to one
    registry share one collector and are summed per label set.

    Parameters
    ----------
    metrics : CacheMetrics
        Usually ``cache.metrics``.
    registry : prometheus_client.CollectorRegistry, optional

    Returns
    -------
    TNFRCacheCollector
        The registry's collector (call ``remove(metrics)`` to stop exporting).
    """
    registry = prometheus_client.REGISTRY if registry is None else registry
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = TNFRCacheCollector()
            registry.register(collector)
            _collectors[registry] = collector
    collector.add(metrics)
    return collector


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        """Scrapes are routine: do not write a line to stderr for each."""


class MetricsServer:
    """A running ``/metrics`` HTTP endpoint; ``close()`` (or ``with``) stops it.

    Attributes
    ----------
    host : str
    port : int
        The port actually bound (useful after asking for port 0).
    url : str
        ``http://host:port/metrics``.
    """

    def __init__(self, httpd):
        self._httpd = httpd
        self.host, self.port = httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}/metrics"
        self._thread = threading.Thread(
            target=httpd.serve_forever, name=f"tnfr-metrics-{self.port}", daemon=True
        )
        self._thread.start()

    def close(self):
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"MetricsServer({self.url!r})"


def start_metrics_server(port, addr="127.0.0.1", registry=None):
    """Serve ``registry`` in Prometheus text format on ``http://addr:port/metrics``.

    Runs in a daemon thread. Binds to localhost unless ``addr`` says otherwise, since
    metrics reveal what a simulation computes. ``port=0`` picks a free port.

    Parameters
    ----------
    port : int
    addr : str, optional
    registry : prometheus_client.CollectorRegistry, optional
        Default: prometheus_client's global registry (where
        :func:`export_metrics_to_prometheus` registers by default).

    Returns
    -------
    MetricsServer

    Raises
    ------
    InvalidArgumentError
        If ``port`` is not an int in 0..65535.
    BackendError
        If the address cannot be bound (port in use, permission denied).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgumentError(f"port must be an int in 0..65535, got {port!r}")
    registry = prometheus_client.REGISTRY if registry is None else registry
    app = prometheus_client.make_wsgi_app(registry)
    try:
        server_class = _ThreadingWSGIServer6 if ":" in addr else _ThreadingWSGIServer
        httpd = make_server(addr, port, app, server_class, handler_class=_QuietHandler)
    except OSError as exc:
        raise BackendError(exc.errno, f"cannot serve metrics on {addr}:{port}: {exc.strerror}") from exc
    return MetricsServer(httpd)
