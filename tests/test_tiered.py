"""TieredCache: the tier contract over memory + disk, promotion, write-through, failing tiers."""

import time

import numpy as np
import pytest

from contract import CacheTierBudgetContract, CacheTierContract
from tnfr_fastcache import (
    BackendError,
    BackendUnavailable,
    CacheLevel,
    CompressedPersistentCache,
    InvalidArgumentError,
    TNFRHierarchicalCache,
    TieredCache,
    cached,
)
from tnfr_fastcache.backends.base import CacheTier

D = CacheLevel.DERIVED_METRICS
T = CacheLevel.TEMPORARY


@pytest.fixture
def make_stack(tmp_path):
    made = []

    def make(memory_mb=64, **kwargs):
        memory = TNFRHierarchicalCache(max_memory_mb=memory_mb)
        disk = CompressedPersistentCache(tmp_path / f"disk{len(made)}")
        stack = TieredCache(memory, disk, **kwargs)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.close()


class TestMemoryDiskContract(CacheTierContract):
    @pytest.fixture
    def make_tier(self, make_stack):
        return make_stack


class TestMemoryOnlyContract(CacheTierBudgetContract):
    def budget_kwargs(self, nbytes):
        return {"memory_mb": nbytes / (1 << 20)}

    @pytest.fixture
    def make_tier(self):
        def make(memory_mb=64, **kwargs):
            return TieredCache(TNFRHierarchicalCache(max_memory_mb=memory_mb), **kwargs)

        return make


def test_lower_tier_hit_is_promoted_with_entry_metadata(make_stack):
    stack = make_stack()
    memory, disk = stack.tiers
    w = np.random.default_rng(0).random((50, 50))
    disk.set("w", w, D, dependencies={"graph_topology"}, computation_cost=7.5, ttl=600)
    assert memory.get("w", D) is None

    got = stack.get("w", D)
    np.testing.assert_array_equal(got, w)
    entry = memory.lookup("w", D)
    assert entry is not None, "a disk hit must be promoted into memory"
    assert entry.dependencies == frozenset({"graph_topology"})
    assert entry.computation_cost == 7.5
    assert entry.expires_at == pytest.approx(time.time() + 600, abs=5)

    stack.get("w", D)
    stats = stack.get_stats()
    assert stats["tier_hits"] == {"memory": 1, "disk": 1}
    assert stats["promotions"] == 1 and stats["hits"] == 2


def test_promote_false_leaves_upper_tiers_alone(make_stack):
    stack = make_stack(promote=False)
    memory, disk = stack.tiers
    disk.set("k", 1, T)
    assert stack.get("k", T) == 1
    assert memory.get("k", T) is None


def test_set_writes_through_and_invalidation_reaches_every_tier(make_stack):
    stack = make_stack()
    memory, disk = stack.tiers
    stack.set("a", 1, T, dependencies={"dep"})
    stack.set("b", 2, D)
    assert memory.get("a", T) == 1 and disk.get("a", T) == 1
    assert memory.get("b", D) == 2 and disk.get("b", D) == 2
    assert stack.invalidate_by_dependency("dep") == 1
    assert memory.get("a", T) is None and disk.get("a", T) is None
    assert stack.invalidate_level(D) == 1
    assert disk.get("b", D) is None
    stack.set("c", 3, T)
    stack.clear()
    assert len(memory) == 0 and len(disk) == 0
    stack.set("d", 4, T)
    assert stack.delete("d", T) is True
    assert memory.get("d", T) is None and disk.get("d", T) is None


def test_value_too_large_for_memory_still_lands_on_disk(make_stack):
    stack = make_stack(memory_mb=1)
    memory, disk = stack.tiers
    big = np.zeros(3 << 18)  # 6 MiB
    assert stack.set("big", big, D) is True
    assert memory.get("big", D) is None
    np.testing.assert_array_equal(stack.get("big", D), big)
    assert stack.get_stats()["tier_hits"]["disk"] == 1


class ProxyTier(CacheTier):
    """A memory tier behind a switch: while ``down``, the methods named in ``failing`` raise
    ``error`` as an unreachable server or a full disk would. Records the keys it is given."""

    def __init__(self, tier_name="redis", failing=("lookup", "get", "set", "delete", "invalidate_by_dependency",
                                                   "invalidate_level", "clear"), error=None, down=True):
        self.inner = TNFRHierarchicalCache(max_memory_mb=8)
        self.metrics = self.inner.metrics
        self.tier_name = tier_name
        self.failing = set(failing)
        self.error = error or BackendUnavailable("redis 127.0.0.1:1 is unreachable")
        self.down = down
        self.keys_set = []

    def _call(self, name, *args, **kwargs):
        if self.down and name in self.failing:
            raise self.error
        return getattr(self.inner, name)(*args, **kwargs)

    def lookup(self, *args, **kwargs):
        return self._call("lookup", *args, **kwargs)

    def get(self, *args, **kwargs):
        return self._call("get", *args, **kwargs)

    def set(self, *args, **kwargs):
        self.keys_set.append(args[0])
        return self._call("set", *args, **kwargs)

    def delete(self, *args):
        return self._call("delete", *args)

    def invalidate_by_dependency(self, dependency):
        return self._call("invalidate_by_dependency", dependency)

    def invalidate_level(self, level):
        return self._call("invalidate_level", level)

    def clear(self):
        return self._call("clear")

    def get_stats(self):
        return self.inner.get_stats()

    def __len__(self):
        return len(self.inner)


def test_failing_tier_is_skipped_and_counted(caplog):
    memory = TNFRHierarchicalCache(max_memory_mb=8)
    stack = TieredCache(memory, ProxyTier())
    assert stack.set("k", 1, T) is True
    assert stack.get("k", T) == 1
    assert stack.get("absent", T) is None
    assert stack.invalidate_by_dependency("x") == 0
    assert stack.delete("k", T) is True
    stack.clear()
    stats = stack.get_stats()
    # set, the miss, invalidate, delete, clear: the hit on "k" was served by memory alone
    assert stats["tier_errors"] == {"memory": 0, "redis": 5}
    assert stats["errors"] == 5
    assert stats["misses"] == 1 and stats["hits"] == 1
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1


def test_all_tiers_failing_is_a_miss_not_an_error():
    stack = TieredCache(ProxyTier(), ProxyTier("disk", failing={"set"}, error=BackendError("No space left on device")))
    assert stack.set("k", 1, T) is False
    assert stack.get("k", T) is None
    assert stack.get_stats()["errors"] == 3


def test_caller_errors_still_propagate():
    stack = TieredCache(ProxyTier(), TNFRHierarchicalCache(max_memory_mb=1))
    with pytest.raises(InvalidArgumentError):
        stack.get("k", "no_such_level")
    with pytest.raises(InvalidArgumentError):
        stack.set("k", 1, T, ttl=-1)


def test_construction_is_checked():
    memory = TNFRHierarchicalCache(max_memory_mb=1)
    with pytest.raises(InvalidArgumentError):
        TieredCache()
    with pytest.raises(InvalidArgumentError):
        TieredCache(memory, memory)
    with pytest.raises(InvalidArgumentError):
        TieredCache(memory, {})
    assert repr(TieredCache(memory)) == "TieredCache(memory)"


def test_get_or_compute_without_a_lease_tier(make_stack):
    stack = make_stack()
    calls = []

    def compute():
        calls.append(1)
        return np.arange(5.0)

    first = stack.get_or_compute("k", D, compute, dependencies={"dep"})
    second = stack.get_or_compute("k", D, compute)
    np.testing.assert_array_equal(first, np.arange(5.0))
    np.testing.assert_array_equal(second, np.arange(5.0))
    assert len(calls) == 1
    assert stack.tiers[1].lookup("k", D).dependencies == frozenset({"dep"})


def test_decorator_over_memory_and_disk_survives_a_new_memory_tier(tmp_path):
    calls = []

    def build():
        stack = TieredCache(TNFRHierarchicalCache(max_memory_mb=8), CompressedPersistentCache(tmp_path / "d"))

        @cached(stack)
        def coherence(n):
            calls.append(n)
            return np.full((n, n), 0.5)

        return stack, coherence

    stack, coherence = build()
    assert coherence(20).shape == (20, 20)
    stack.close()
    stack, coherence = build()  # a fresh process would see the same: memory empty, disk warm
    np.testing.assert_array_equal(coherence(20), np.full((20, 20), 0.5))
    assert calls == [20]
    assert stack.get_stats()["tier_hits"] == {"memory": 0, "disk": 1}
    stack.close()


class LeaseTier(ProxyTier):
    """A tier with a lease, like the Redis tier's, that may fail after computing."""

    def __init__(self, fail_after_compute=False):
        super().__init__(down=False)
        self.fail_after_compute = fail_after_compute
        self.leases = 0

    def get_or_compute(self, key, level, fn, *, dependencies=(), computation_cost=1.0, ttl=None, copy=False):
        self.leases += 1
        entry = self.lookup(key, level, copy=copy)
        if entry is not None:
            return entry.value
        value = fn()
        if self.fail_after_compute:
            raise BackendUnavailable("connection reset while storing")
        self.set(key, value, level, dependencies, computation_cost, ttl)
        return value


def test_get_or_compute_goes_through_the_lease_tier():
    memory = TNFRHierarchicalCache(max_memory_mb=8)
    lease = LeaseTier()
    stack = TieredCache(memory, lease)
    calls = []

    @cached(stack)
    def f(x):
        calls.append(x)
        return x + 1

    assert f(1) == 2 and f(1) == 2
    assert calls == [1] and lease.leases == 1
    assert memory.get(lease.keys_set[0], D) == 2  # the leased value was written above


def test_lease_failing_after_compute_does_not_compute_twice():
    lease = LeaseTier(fail_after_compute=True)
    stack = TieredCache(TNFRHierarchicalCache(max_memory_mb=8), lease)
    calls = []
    value = stack.get_or_compute("k", D, lambda: calls.append(1) or "v")
    assert value == "v" and calls == [1]
    assert stack.get("k", D) == "v"  # still written through by the stack
    assert stack.get_stats()["tier_errors"]["redis"] == 1


def test_compute_raising_oserror_is_not_taken_for_a_tier_failure():
    stack = TieredCache(TNFRHierarchicalCache(max_memory_mb=8), LeaseTier())
    calls = []

    @cached(stack)
    def read_config(path):
        calls.append(path)
        raise FileNotFoundError(path)

    with pytest.raises(FileNotFoundError):
        read_config("/nonexistent")
    assert calls == ["/nonexistent"]
    assert read_config.cache_stats()["errors"] == 0
    assert stack.get_stats()["errors"] == 0


def test_decorated_miss_counts_one_miss_in_the_stack(make_stack):
    stack = make_stack()

    @cached(stack)
    def f(x):
        return x

    f(1)
    f(1)
    stats = stack.get_stats()
    assert (stats["hits"], stats["misses"]) == (1, 1)
    assert stack.get_or_compute("direct", D, lambda: 5) == 5
    assert stack.get_stats()["misses"] == 2  # a direct call counts its own miss


def test_decorated_miss_is_one_lookup_of_each_tier(make_stack):
    # The stack's own metrics and each tier's: one computed call is one miss in each.
    stack = make_stack()
    memory, disk = stack.tiers

    @cached(stack)
    def f(x):
        return x

    f(1)
    for metrics in (stack.metrics, memory.metrics, disk.metrics):
        assert (metrics.hits, metrics.misses) == (0, 1)
    f(1)
    assert (stack.metrics.hits, stack.metrics.misses) == (1, 1)
    assert (memory.metrics.hits, memory.metrics.misses) == (1, 1)


def test_demo_sequence_counts_five_accesses(make_stack):
    # The demo's calls: cold, memory hit, disk hit after the memory tier is emptied, and
    # two recomputations after invalidations; the stack's report shows 5 lookups.
    stack = make_stack()
    memory, disk = stack.tiers

    @cached(stack)
    def f(x):
        return np.full(8, float(x))

    f(1)
    f(1)
    memory.clear()
    f(1)
    f(2)
    f(3)
    summary = stack.metrics.get_summary()
    assert (summary["total_accesses"], stack.metrics.hits, stack.metrics.misses) == (5, 2, 3)
    assert disk.get_stats()["misses"] == 3 and disk.get_stats()["hits"] == 1


def test_shared_metrics_count_a_leased_miss_once():
    from tnfr_fastcache import CacheMetrics

    shared = CacheMetrics()
    lease = LeaseTier()
    lease.metrics = shared
    stack = TieredCache(TNFRHierarchicalCache(max_memory_mb=8, metrics=shared), lease, metrics=shared)

    @cached(stack)
    def f(x):
        return x + 1

    f(1)
    f(1)
    assert (shared.hits, shared.misses) == (1, 1)


def test_decorator_over_a_lease_tier_alone_counts_one_lookup_per_call():
    lease = LeaseTier()

    @cached(lease)
    def f(x):
        return x + 1

    assert f(1) == f(1) == 2
    assert lease.leases >= 1
    assert (lease.metrics.hits, lease.metrics.misses) == (1, 1)


def test_concurrent_calls_on_a_lease_tier_alone_compute_once_and_count_once_each():
    import threading

    lease = LeaseTier()
    calls = []
    go = threading.Barrier(4)

    @cached(lease)
    def f(x):
        calls.append(x)
        time.sleep(0.05)
        return x + 1

    def worker(results):
        go.wait()
        results.append(f(1))

    results = []
    threads = [threading.Thread(target=worker, args=(results,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == [2] * 4 and calls == [1]
    assert (lease.metrics.hits, lease.metrics.misses) == (3, 1)
