"""``python -m tnfr_fastcache demo``: a TNFR-like network's coherence matrix through the cache.

Builds a small-world network with TNFR node attributes (phase θ, EPI, νf, Si), computes its
coherence matrix through :func:`~tnfr_fastcache.cache_tnfr_computation` over memory + disk
(+ Redis when one answers or ``--redis URL`` is given), and prints the timings of a cold call,
a warm-memory hit, a warm-disk hit (memory emptied), a call after a node property changed, and
after the topology changed; then the bytes on disk against the raw matrix, and the telemetry
report. Runs in a few seconds.
"""

import argparse
import math
import shutil
import sys
import tempfile
import time

import numpy as np

__all__ = ["build_network", "coherence_matrix", "add_arguments", "run", "main"]


def build_network(n, seed=0):
    """A Watts-Strogatz network of ``n`` nodes with random TNFR node attributes."""
    try:
        import networkx as nx
    except ImportError:
        raise ImportError("the demo builds a networkx graph: pip install 'tnfr_fastcache[graphs]'") from None
    rng = np.random.default_rng(seed)
    G = nx.watts_strogatz_graph(n, 10, 0.1, seed=seed)
    for node in G.nodes:
        G.nodes[node].update(
            theta=float(rng.uniform(0, 2 * math.pi)),
            EPI=float(rng.uniform(0, 1)),
            vf=float(rng.uniform(0, 1)),
            Si=float(rng.uniform(0, 1)),
        )
    G.graph["COHERENCE"] = {"scope": "neighbors"}
    return G


def coherence_matrix(G):
    """TNFR's coherence weights over the graph's edges: w_ij = 0.4 + 0.6 * similarity, diagonal 1.

    Written the way TNFR computes it, one edge at a time in Python: this is the expensive
    computation the cache saves.
    """
    n = G.number_of_nodes()
    index = {node: i for i, node in enumerate(G.nodes)}
    W = np.zeros((n, n))
    nodes = G.nodes
    for u, v in G.edges:
        a, b = nodes[u], nodes[v]
        s_phase = 0.5 * (1 + math.cos(a["theta"] - b["theta"]))
        similarity = 0.25 * (
            s_phase + (1 - abs(a["EPI"] - b["EPI"])) + (1 - abs(a["vf"] - b["vf"])) + (1 - abs(a["Si"] - b["Si"]))
        )
        W[index[u], index[v]] = W[index[v], index[u]] = 0.4 + 0.6 * similarity
    np.fill_diagonal(W, 1.0)
    return W


def _redis_tier(url, metrics, required):
    try:
        from .backends.redis import RedisCache

        tier = RedisCache(url=url, metrics=metrics, socket_connect_timeout=0.3, key_prefix="tnfr:demo:")
        tier.ping()
        return tier
    except (ImportError, OSError) as exc:  # BackendUnavailable is a ConnectionError (an OSError)
        if required:
            raise
        print(f"(no Redis tier: {exc})")
        return None


def _node_count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of nodes, got {text!r}") from None
    if value < 20:  # the ring has 10 neighbours a node
        raise argparse.ArgumentTypeError(f"expected at least 20 nodes, got {value}")
    return value


def add_arguments(parser):
    """Declare the demo's options on ``parser`` (the CLI's ``demo`` subcommand)."""
    parser.add_argument("--nodes", type=_node_count, default=2000, help="network size (default 2000: a 32 MB matrix)")
    parser.add_argument("--redis", metavar="URL", help="add a Redis tier at URL (else tried at localhost:6379)")
    parser.add_argument("--dir", help="disk cache directory (default: a temporary one, removed at the end)")


def _timed(fn, *args, repeat=1, before=None):
    """``(value, median seconds)`` of ``repeat`` calls; ``before()`` runs untimed before each."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        value = fn(*args)
        times.append(time.perf_counter() - start)
    return value, sorted(times)[len(times) // 2]


def run(args, out=sys.stdout):
    """Run the demo with parsed ``args``; return the exit code."""
    from . import (
        CacheLevel,
        CacheMetrics,
        CompressedPersistentCache,
        GraphChangeTracker,
        TieredCache,
        TNFRHierarchicalCache,
        cache_tnfr_computation,
        track_node_property_update,
    )

    directory = args.dir or tempfile.mkdtemp(prefix="tnfr_fastcache_demo_")
    # One metrics object for the stack and its tiers: the totals count each call once (at
    # the stack), the per-tier rows show where hits came from.
    metrics = CacheMetrics()
    memory = TNFRHierarchicalCache(max_memory_mb=512, metrics=metrics)
    disk = CompressedPersistentCache(directory, compression="auto", metrics=metrics)
    tiers = [memory, disk]
    redis_tier = _redis_tier(args.redis or "redis://127.0.0.1:6379/0", metrics, required=bool(args.redis))
    if redis_tier is not None:
        tiers.append(redis_tier)
    cache = TieredCache(*tiers, metrics=metrics)
    names = " -> ".join(t.tier_name for t in tiers)
    try:
        G = build_network(args.nodes)
        GraphChangeTracker(cache).track_graph_changes(G)
        cached_matrix = cache_tnfr_computation(
            level=CacheLevel.DERIVED_METRICS,
            dependencies={"graph_topology", "node_properties"},
            cache_instance=cache,
        )(coherence_matrix)

        print(f"TNFR-like network: {G.number_of_nodes()} nodes, {G.number_of_edges()} edges; tiers: {names}", file=out)
        print(f"disk cache: {directory}\n", file=out)
        rows = []
        W, t_cold = _timed(cached_matrix, G)
        rows.append(("cold (compute, write through)", t_cold))
        _, t = _timed(cached_matrix, G, repeat=50)
        rows.append(("warm, memory hit (median of 50)", t))
        W_disk, t = _timed(cached_matrix, G, repeat=5, before=memory.clear)
        rows.append(("warm, disk hit, memory emptied (median of 5)", t))
        if not np.array_equal(W, W_disk):
            raise AssertionError("the matrix read from disk differs from the computed one")
        track_node_property_update(G, 0, "EPI", 0.5)
        _, t = _timed(cached_matrix, G)
        rows.append(("after a node's EPI changed (recompute)", t))
        G.add_edge(0, args.nodes // 2)
        _, t = _timed(cached_matrix, G)
        rows.append(("after an edge was added (recompute)", t))

        width = max(len(label) for label, _ in rows)
        for label, seconds in rows:
            speedup = f"{t_cold / seconds:8.0f}x faster than cold" if label.startswith("warm") else ""
            print(f"  {label:<{width}}  {seconds * 1e3:9.3f} ms  {speedup}", file=out)

        stats = disk.get_stats()
        on_disk = stats["disk_size_mb"] * 2**20
        print(
            f"\nmatrix {W.nbytes / 1e6:.1f} MB raw; {stats['disk_files']} files, {on_disk / 1e6:.2f} MB on disk "
            f"({W.nbytes * stats['disk_files'] / max(on_disk, 1):.0f}x smaller)\n",
            file=out,
        )
        metrics.report(file=out)
    finally:
        cache.close()
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


def main(argv=None):
    """``python -m tnfr_fastcache.demo``: the same as ``python -m tnfr_fastcache demo``."""
    parser = argparse.ArgumentParser(prog="python -m tnfr_fastcache demo", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
