"""Graph arguments: content keys, GraphChangeTracker and track_node_property_update."""

import copy
import pickle

import pytest

nx = pytest.importorskip("networkx")

from tnfr_fastcache import (  # noqa: E402
    CacheLevel,
    GraphChangeTracker,
    InvalidArgumentError,
    cache_tnfr_computation,
    track_node_property_update,
)

G_LEVEL = CacheLevel.GRAPH_STRUCTURE



def attributed_graph(n=60, seed=3):
    graph = nx.gnm_random_graph(n, 3 * n, seed=seed)
    for node in graph:
        graph.nodes[node]["EPI"] = 0.01 * node
        graph.nodes[node]["νf"] = 1.0
    for u, v in graph.edges:
        graph[u][v]["weight"] = 0.5
    graph.graph["COHERENCE"] = {"mode": "neighbours"}
    return graph


def epi_sum_uncached(graph, scale=1.0):
    return scale * sum(d.get("EPI", 0.0) for _, d in graph.nodes(data=True)) + graph.number_of_edges()


@pytest.fixture
def counted(mem):
    calls = []

    @cache_tnfr_computation(G_LEVEL, {"graph_topology"}, cache_instance=mem)
    def epi_sum(graph, scale=1.0):
        calls.append(1)
        return epi_sum_uncached(graph, scale)

    epi_sum.calls = calls
    return epi_sum


def test_untracked_graph_in_place_attribute_change_is_a_new_key(counted):
    graph = attributed_graph()
    first = counted(graph)
    assert counted(graph) == first and len(counted.calls) == 1
    graph.nodes[0]["EPI"] = 100.0  # the write upstream's id()-based key missed
    assert counted(graph) == pytest.approx(first + 100.0)
    assert len(counted.calls) == 2
    assert counted(attributed_graph()) == first  # an equal graph shares the entry
    assert len(counted.calls) == 2


def test_tracked_graph_hits_reuse_the_digest(counted, mem, monkeypatch):
    graph = attributed_graph()
    GraphChangeTracker(mem).track_graph_changes(graph)
    counted(graph)
    import tnfr_fastcache.decorator as decorator

    digests = []
    real = decorator.fingerprint

    def spy(*objs, **kwargs):
        if any(isinstance(o, nx.Graph) for o in objs):
            digests.append(1)
        return real(*objs, **kwargs)

    monkeypatch.setattr(decorator, "fingerprint", spy)
    for _ in range(5):
        counted(graph)
    assert digests == [] and len(counted.calls) == 1
    graph.add_edge(0, 59)
    counted(graph)
    counted(graph)
    assert digests == [1] and len(counted.calls) == 2


MUTATIONS = {
    "add_node": lambda g: g.add_node("new", EPI=1.0),
    "add_nodes_from": lambda g: g.add_nodes_from([("a", {"EPI": 2.0}), ("b", {})]),
    "remove_node": lambda g: g.remove_node(0),
    "remove_nodes_from": lambda g: g.remove_nodes_from([0, 1, 2]),
    "add_edge": lambda g: g.add_edge(0, "far"),
    "add_edges_from": lambda g: g.add_edges_from([(0, 100), (1, 101)]),
    "add_weighted_edges_from": lambda g: g.add_weighted_edges_from([(0, 102, 0.3)]),
    "remove_edge": lambda g: g.remove_edge(*next(iter(g.edges))),
    "remove_edges_from": lambda g: g.remove_edges_from(list(g.edges)[:5]),
    "clear_edges": lambda g: g.clear_edges(),
    "clear": lambda g: g.clear(),
    "update": lambda g: g.update(edges=[(200, 201)]),
    "add_node_attrs": lambda g: g.add_node(0, EPI=50.0),  # an attribute change through the API
}


@pytest.mark.parametrize("name", list(MUTATIONS) + ["track_node_property_update"])
def test_every_tracked_mutation_gives_fresh_results(counted, mem, name):
    mutate = MUTATIONS.get(name, lambda g: track_node_property_update(g, 0, "EPI", 50.0))
    graph = attributed_graph()
    tracker = GraphChangeTracker(mem)
    tracker.track_graph_changes(graph)
    counted(graph)
    mem.set("topology-entry", 1, G_LEVEL, dependencies={"graph_topology"})
    mutate(graph)
    expected = epi_sum_uncached(attributed_graph_after(mutate))
    assert counted(graph) == pytest.approx(expected)
    assert len(counted.calls) == 2
    if name in MUTATIONS:
        assert mem.get("topology-entry", G_LEVEL) is None
        assert tracker.topology_changes == 1
    else:
        assert mem.get("topology-entry", G_LEVEL) == 1
        assert tracker.property_changes == 1


def attributed_graph_after(mutate):
    graph = attributed_graph()
    mutate(graph)
    return graph


def test_graph_attribute_writes_are_seen_on_tracked_graphs(counted, mem):
    graph = attributed_graph()
    GraphChangeTracker(mem).track_graph_changes(graph)
    counted(graph)
    graph.graph["_runtime_cache"] = object()  # private keys are not part of the key
    counted(graph)
    assert len(counted.calls) == 1
    graph.graph["COHERENCE"]["mode"] = "all_pairs"  # a nested configuration change
    counted(graph)
    assert len(counted.calls) == 2


def test_property_update_notifies_trackers(mem):
    graph = attributed_graph()
    tracker = GraphChangeTracker(mem)
    tracker.track_graph_changes(graph)
    mem.set("vf", 1, G_LEVEL, dependencies={"node_vf"})
    mem.set("epi-of-3", 2, G_LEVEL, dependencies={"node_epi_3"})
    mem.set("other", 3, G_LEVEL, dependencies={"node_phase"})
    track_node_property_update(graph, 3, "νf", 2.0)
    assert graph.nodes[3]["νf"] == 2.0
    assert mem.get("vf", G_LEVEL) is None and mem.get("other", G_LEVEL) == 3
    track_node_property_update(graph, 3, "epi", 0.7)
    assert mem.get("epi-of-3", G_LEVEL) is None
    assert tracker.property_changes == 2 and tracker.topology_changes == 0
    tracker.reset_counters()
    assert tracker.property_changes == 0
    untracked = attributed_graph()
    track_node_property_update(untracked, 1, "EPI", 9.0)
    assert untracked.nodes[1]["EPI"] == 9.0


def test_bulk_operation_counts_once(mem):
    graph = nx.Graph()
    tracker = GraphChangeTracker(mem)
    tracker.track_graph_changes(graph)
    tracker.track_graph_changes(graph)  # twice is harmless
    graph.update(edges=[(1, 2), (2, 3)], nodes=[4])
    assert tracker.topology_changes == 1


@pytest.mark.parametrize("cls", [nx.Graph, nx.DiGraph, nx.MultiGraph, nx.MultiDiGraph])
def test_tracked_graph_stays_picklable_and_copies_untracked(mem, cls):
    graph = cls(attributed_graph())
    GraphChangeTracker(mem).track_graph_changes(graph)
    assert isinstance(graph, cls) and type(graph).__name__ == cls.__name__
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(graph, protocol))
        assert type(back) is cls
        assert nx.utils.graphs_equal(back, graph)
        assert back.graph == graph.graph
    for clone in (copy.copy(graph), copy.deepcopy(graph)):
        assert type(clone) is cls
    assert "_fastcache" not in repr(graph.graph)


def test_tracked_and_equal_untracked_graphs_key_consistently(counted, mem):
    graph = attributed_graph()
    GraphChangeTracker(mem).track_graph_changes(graph)
    value = counted(graph)
    assert counted(graph, 2.0) != value
    assert counted(graph, scale=1.0) == value
    assert len(counted.calls) == 2


def test_tracker_rejects_non_graphs(mem):
    with pytest.raises(InvalidArgumentError):
        GraphChangeTracker(mem).track_graph_changes({"not": "a graph"})
    with pytest.raises(InvalidArgumentError):
        GraphChangeTracker({})
