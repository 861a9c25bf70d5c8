"""Several processes reading and writing one cache directory at once."""

import os
import random
import time

import pytest

from test_disk_crash import KEYS, check_directory, check_value, fork, make_value, workload_step
from tnfr_fastcache import CacheLevel
from tnfr_fastcache.backends.disk import CompressedPersistentCache, PersistentTNFRCache

D = CacheLevel.DERIVED_METRICS
G = CacheLevel.GRAPH_STRUCTURE

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _wait_all(pids):
    failed = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            failed.append((pid, status))
    assert failed == [], f"workers failed (tracebacks above): {failed}"


@pytest.mark.parametrize("max_disk_mb", [None, 24], ids=["unbounded", "budget"])
def test_four_processes_mixed_workload(tmp_path, max_disk_mb):
    CompressedPersistentCache(tmp_path, max_disk_mb=max_disk_mb).close()
    seconds = 4.0

    def worker(seed, memory_mb):
        def body():
            tier = CompressedPersistentCache(tmp_path, max_memory_mb=memory_mb)
            rng = random.Random(seed)
            steps = 0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                workload_step(tier, rng)
                steps += 1
            assert steps >= 5  # a loaded machine still gets through a few big writes
            for key in range(KEYS):
                check_value(key, tier.get(key, D))
            tier.close()

        return body

    # Two workers have a memory front: it must never serve what another process replaced.
    pids = [fork(worker(seed, 16 if seed % 2 else None)) for seed in range(4)]
    _wait_all(pids)
    live, _ = check_directory(tmp_path)
    assert live >= 0


def test_invalidation_in_one_process_is_seen_by_another(tmp_path):
    with PersistentTNFRCache(tmp_path) as parent:
        parent.set_persistent("coherence", make_value(1, 7), D, {"graph_topology"})
        parent.set_persistent("structure", "adjacency", G, {"node_set"})
        check_value(1, parent.get_persistent("coherence", D))  # now in the parent's memory too

        def invalidator():
            with PersistentTNFRCache(tmp_path) as child:
                assert child.get_persistent("structure", G) == "adjacency"
                assert child.invalidate_by_dependency("graph_topology") == 1
                child.set_persistent("structure", "rewired", G, {"node_set"})

        _wait_all([fork(invalidator)])
        assert parent.get_persistent("coherence", D) is None
        assert parent.get_persistent("structure", G) == "rewired"


def test_writers_racing_on_one_key(tmp_path):
    CompressedPersistentCache(tmp_path).close()

    def writer(seed):
        def body():
            tier = CompressedPersistentCache(tmp_path)
            rng = random.Random(seed)
            for _ in range(40):
                tier.set(2, make_value(2, rng.randrange(1000)), D)
                check_value(2, tier.get(2, D))
            tier.close()

        return body

    _wait_all([fork(writer(seed)) for seed in range(4)])
    with CompressedPersistentCache(tmp_path, orphan_grace=0) as tier:
        assert len(tier) == 1
        check_value(2, tier.get(2, D))
        assert tier.verify() == []
        assert len([e for e in tier.entries()]) == 1
