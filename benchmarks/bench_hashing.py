"""Key hashing: ``fingerprint`` next to what users would hash their arguments with.

Subjects:

- ``ours``: :func:`tnfr_fastcache.fingerprint` of the value (compiled when built);
- ``xxh3_128``: ``xxhash.xxh3_128(memoryview(a)).digest()`` on the contiguous array of the
  same bytes, the speed limit of the bulk hash (no dtype, shape or NaN handling);
- ``md5``: ``hashlib.md5(memoryview(a))`` (contiguous arrays only);
- ``joblib``: ``joblib.hash`` (md5 over a pickle), what ``joblib.Memory`` keys by;
- ``upstream-tnfr``: TNFR's own key builder, ``_generate_cache_key`` (``md5`` of ``repr``) for
  scalars and arrays (where it collides: ``repr`` elides large arrays), and its dependency
  hash ``_compute_dependency_hash`` for graphs.

Groups: ``hash-array-{8MB,128MB}`` (C-contiguous dense coherence matrices),
``hash-array-128MB-{F,rows,strided}`` (the 128 MB matrix F-ordered, ``m[:, 1:-1]`` and
``m[:, ::2]``: ours next to xxh3_128 on contiguous memory of the same size),
``hash-3-scalars``, ``hash-graph-1000n-5000e`` (attributed like a TNFR graph).
``extra_info["nbytes"]`` gives array throughput.

Goals (issue 3): arrays >= 0.8x xxh3_128 and >= 30x joblib; F-ordered or sliced 128 MB
>= 0.5x xxh3_128 on contiguous memory; 3 scalars < 1 us; the graph >= 5x faster than
upstream's dependency hash.
"""

import hashlib

import numpy as np
import pytest

from benchmarks.conftest import coherence_matrix
from tnfr_fastcache import fingerprint

ARRAYS = {"8MB": 1000, "128MB": 4000}
VIEWS = {
    "F": np.asfortranarray,
    "rows": lambda m: m[:, 1:-1],
    "strided": lambda m: m[:, ::2],
}
# TNFR's node fields (canonical aliases) and what its decorator declares for a graph computation
GRAPH_DEPENDENCIES = {"graph_topology", "node_epi", "node_vf", "node_phase", "node_dnfr"}


def _xxh3(array):
    xxhash = pytest.importorskip("xxhash")
    return lambda: xxhash.xxh3_128(memoryview(array)).digest()


@pytest.mark.parametrize("subject", ["ours", "xxh3_128", "md5", "joblib", "upstream-tnfr"])
@pytest.mark.parametrize("size", sorted(ARRAYS))
def test_array(benchmark, size, subject):
    array = coherence_matrix(ARRAYS[size], "dense")
    benchmark.group = f"hash-array-{size}"
    benchmark.extra_info.update(subject=subject, nbytes=array.nbytes)
    if subject == "ours":
        run = lambda: fingerprint(array)  # noqa: E731
    elif subject == "xxh3_128":
        run = _xxh3(array)
    elif subject == "md5":
        run = lambda: hashlib.md5(memoryview(array)).digest()  # noqa: E731
    elif subject == "upstream-tnfr":
        # md5 of repr(): fast because numpy elides all but 6 elements a row, hence wrong
        cache = pytest.importorskip("tnfr.utils.cache")
        run = lambda: cache._generate_cache_key("module.function", (array,), {})  # noqa: E731
    else:
        joblib = pytest.importorskip("joblib")
        run = lambda: joblib.hash(array)  # noqa: E731
    benchmark(run)


@pytest.fixture(scope="module")
def views():
    matrix = coherence_matrix(4000, "dense")
    return {name: make(matrix) for name, make in VIEWS.items()}


@pytest.mark.parametrize("subject", ["ours", "xxh3_128", "joblib"])
@pytest.mark.parametrize("view", sorted(VIEWS))
def test_array_view(benchmark, views, view, subject):
    array = views[view]
    benchmark.group = f"hash-array-128MB-{view}"
    benchmark.extra_info.update(subject=subject, nbytes=array.nbytes)
    if subject == "ours":
        run = lambda: fingerprint(array)  # noqa: E731
    elif subject == "xxh3_128":
        # the reference: the same number of bytes, contiguous
        run = _xxh3(coherence_matrix(4000, "dense").reshape(-1)[: array.size])
    else:
        joblib = pytest.importorskip("joblib")
        run = lambda: joblib.hash(array)  # noqa: E731
    benchmark(run)


SCALARS = (42, 0.85, "node_7")


@pytest.mark.parametrize("subject", ["ours", "upstream-tnfr", "joblib"])
def test_three_scalars(benchmark, subject):
    benchmark.group = "hash-3-scalars"
    benchmark.extra_info["subject"] = subject
    if subject == "ours":
        benchmark(fingerprint, *SCALARS)
    elif subject == "upstream-tnfr":
        cache = pytest.importorskip("tnfr.utils.cache")
        benchmark(cache._generate_cache_key, "module.function", SCALARS, {})
    else:
        joblib = pytest.importorskip("joblib")
        benchmark(joblib.hash, SCALARS)


@pytest.fixture(scope="module")
def tnfr_graph():
    """1000 nodes, 5000 edges, TNFR's node fields and edge weights, a config in G.graph."""
    nx = pytest.importorskip("networkx")
    rng = np.random.default_rng(0)
    graph = nx.gnm_random_graph(1000, 5000, seed=1)
    for node in graph:
        graph.nodes[node].update(
            {"EPI": rng.random(), "νf": rng.random(), "theta": rng.random(), "ΔNFR": rng.random(), "Si": rng.random()}
        )
    for u, v in graph.edges:
        graph.edges[u, v]["weight"] = rng.random()
    graph.graph.update({"COHERENCE": {"enabled": True, "scope": "neighbors"}, "history": {"C_steps": [0.5] * 100}})
    return graph


@pytest.mark.parametrize("subject", ["ours", "upstream-tnfr", "joblib"])
def test_graph(benchmark, tnfr_graph, subject):
    benchmark.group = "hash-graph-1000n-5000e"
    benchmark.extra_info["subject"] = subject
    if subject == "ours":
        benchmark(fingerprint, tnfr_graph)
    elif subject == "upstream-tnfr":
        cache = pytest.importorskip("tnfr.utils.cache")
        benchmark(cache._compute_dependency_hash, tnfr_graph, GRAPH_DEPENDENCIES)
    else:
        joblib = pytest.importorskip("joblib")
        benchmark(joblib.hash, tnfr_graph)
