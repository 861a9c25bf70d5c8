"""Hit latency of a memoized call: ours next to every memoizer a TNFR user could pick.

Groups (same work for every subject):
- ``decorator-hit-3-scalars``: ``f(1, 2.5, "x")`` already cached; ours, functools.lru_cache,
  cachetools.cached, cachebox.cached, upstream ``cache_tnfr_computation``, joblib.Memory.
- ``decorator-hit-array-8MB``: a 1000 x 1000 coherence matrix argument; ours from the memory
  tier, ours from the disk tier, joblib.Memory (whose hit is mostly md5 of the argument).
- ``decorator-hit-graph-1000-tracked`` / ``-untracked``: a 1000-node attributed graph;
  ours and upstream (``dependencies={"graph_topology", "node_epi"}``, which hashes the graph).

Goals (issue 7): scalar hit at most 1.5x cachetools.cached and 10x faster than upstream;
8 MB array hit 20x faster than joblib from memory, 8x from disk; tracked graph hit 100x
faster than upstream.
"""

import functools

import numpy as np
import pytest

from tnfr_fastcache import (
    CacheLevel,
    CompressedPersistentCache,
    GraphChangeTracker,
    TNFRHierarchicalCache,
    cache_tnfr_computation,
)

SCALARS = (1, 2.5, "x")


def _bench(benchmark, subject, fn, *args):
    benchmark.extra_info["subject"] = subject
    expected = fn(*args)  # warm: every measured call is a hit
    result = benchmark(fn, *args)
    if isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(result, expected)
    else:
        assert result == expected


def _three(a, b, c):
    return (a, b, c)


def _bench_scalars(benchmark, subject, fn):
    """A hit costs around a microsecond: time rounds of 100 calls, so the timer's own cost and
    jitter (a single-call round gave medians twice the minimum here) do not decide the ratio."""
    benchmark.extra_info["subject"] = subject
    expected = fn(*SCALARS)
    result = benchmark.pedantic(fn, args=SCALARS, iterations=100, rounds=50, warmup_rounds=2)
    assert result == expected


# -- three scalar arguments --------------------------------------------------------------


@pytest.mark.benchmark(group="decorator-hit-3-scalars")
def test_scalar_ours(benchmark):
    cache = TNFRHierarchicalCache(max_memory_mb=64)
    _bench_scalars(benchmark, "ours", cache_tnfr_computation(cache_instance=cache)(_three))


@pytest.mark.benchmark(group="decorator-hit-3-scalars")
def test_scalar_functools_lru_cache(benchmark):
    _bench_scalars(benchmark, "functools.lru_cache", functools.lru_cache(maxsize=1024)(_three))


@pytest.mark.benchmark(group="decorator-hit-3-scalars")
def test_scalar_cachetools(benchmark):
    cachetools = pytest.importorskip("cachetools")
    _bench_scalars(benchmark, "cachetools.cached", cachetools.cached(cachetools.LRUCache(1024))(_three))


@pytest.mark.benchmark(group="decorator-hit-3-scalars")
def test_scalar_cachebox(benchmark):
    cachebox = pytest.importorskip("cachebox")
    _bench_scalars(benchmark, "cachebox.cached", cachebox.cached(cachebox.LRUCache(1024))(_three))


@pytest.mark.benchmark(group="decorator-hit-3-scalars")
def test_scalar_upstream(benchmark):
    upstream = pytest.importorskip("tnfr.utils.cache")
    cache = upstream.TNFRHierarchicalCache(max_memory_mb=64)
    wrapped = upstream.cache_tnfr_computation(upstream.CacheLevel.DERIVED_METRICS, set(), cache_instance=cache)(_three)
    _bench_scalars(benchmark, "upstream", wrapped)


@pytest.mark.benchmark(group="decorator-hit-3-scalars")
def test_scalar_joblib(benchmark, tmp_path):
    joblib = pytest.importorskip("joblib")
    memory = joblib.Memory(tmp_path, verbose=0)
    _bench_scalars(benchmark, "joblib.Memory", memory.cache(_three))


# -- an 8 MB array argument --------------------------------------------------------------


def _row_sums(w):
    return w.sum(axis=1)


@pytest.fixture(scope="module")
def matrix(make_matrix):
    return make_matrix(1000, "sparse")


@pytest.mark.benchmark(group="decorator-hit-array-8MB")
def test_array_ours_memory(benchmark, matrix):
    cache = TNFRHierarchicalCache(max_memory_mb=64)
    benchmark.extra_info["nbytes"] = matrix.nbytes
    _bench(benchmark, "ours", cache_tnfr_computation(cache_instance=cache)(_row_sums), matrix)


@pytest.mark.benchmark(group="decorator-hit-array-8MB")
def test_array_ours_disk(benchmark, matrix, tmp_path):
    with CompressedPersistentCache(tmp_path / "disk") as cache:
        benchmark.extra_info["nbytes"] = matrix.nbytes
        _bench(benchmark, "ours-disk", cache_tnfr_computation(cache_instance=cache)(_row_sums), matrix)


@pytest.mark.benchmark(group="decorator-hit-array-8MB")
def test_array_joblib(benchmark, matrix, tmp_path):
    joblib = pytest.importorskip("joblib")
    memory = joblib.Memory(tmp_path, verbose=0)
    benchmark.extra_info["nbytes"] = matrix.nbytes
    _bench(benchmark, "joblib.Memory", memory.cache(_row_sums), matrix)


# -- a 1000-node attributed graph --------------------------------------------------------


def _graph():
    nx = pytest.importorskip("networkx")
    graph = nx.watts_strogatz_graph(1000, 10, 0.1, seed=1)
    rng = np.random.default_rng(2)
    for node in graph:
        data = graph.nodes[node]
        data["EPI"], data["νf"], data["theta"], data["Si"] = (float(x) for x in rng.random(4))
    for u, v in graph.edges:
        graph[u][v]["weight"] = float(rng.random())
    return graph


def _degree_weight(graph):
    return sum(w for _, _, w in graph.edges(data="weight"))


def _ours_graph(benchmark, tracked):
    cache = TNFRHierarchicalCache(max_memory_mb=64)
    graph = _graph()
    if tracked:
        GraphChangeTracker(cache).track_graph_changes(graph)
    wrapped = cache_tnfr_computation(CacheLevel.DERIVED_METRICS, {"graph_topology", "node_epi"}, cache_instance=cache)(
        _degree_weight
    )
    _bench(benchmark, "ours", wrapped, graph)


def _upstream_graph(benchmark, tracked):
    upstream = pytest.importorskip("tnfr.utils.cache")
    cache = upstream.TNFRHierarchicalCache(max_memory_mb=64)
    graph = _graph()
    if tracked:
        upstream.GraphChangeTracker(cache).track_graph_changes(graph)
    wrapped = upstream.cache_tnfr_computation(
        upstream.CacheLevel.DERIVED_METRICS, {"graph_topology", "node_epi"}, cache_instance=cache
    )(_degree_weight)
    _bench(benchmark, "upstream", wrapped, graph)


@pytest.mark.benchmark(group="decorator-hit-graph-1000-tracked")
def test_graph_tracked_ours(benchmark):
    _ours_graph(benchmark, tracked=True)


@pytest.mark.benchmark(group="decorator-hit-graph-1000-tracked")
def test_graph_tracked_upstream(benchmark):
    _upstream_graph(benchmark, tracked=True)


@pytest.mark.benchmark(group="decorator-hit-graph-1000-untracked")
def test_graph_untracked_ours(benchmark):
    _ours_graph(benchmark, tracked=False)


@pytest.mark.benchmark(group="decorator-hit-graph-1000-untracked")
def test_graph_untracked_upstream(benchmark):
    _upstream_graph(benchmark, tracked=False)
