"""The decorator over Redis: separate processes share results and compute a key once."""

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

redis = pytest.importorskip("redis")

from contract import CacheTierContract  # noqa: E402
from tnfr_fastcache import (  # noqa: E402
    CacheLevel,
    CompressedPersistentCache,
    RedisCache,
    TNFRHierarchicalCache,
    TieredCache,
    cached,
)

# A worker process: decorates a slow function over memory + Redis (+ disk when given),
# counts its computations in Redis, and prints the value it got.
WORKER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import redis
    from tnfr_fastcache import RedisCache, TNFRHierarchicalCache, TieredCache, cached

    url, prefix, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
    counter = redis.Redis.from_url(url)
    stack = TieredCache(TNFRHierarchicalCache(max_memory_mb=16), RedisCache(url=url, key_prefix=prefix))

    @cached(stack)
    def coherence(n, alpha):
        counter.incr(prefix + "computations")
        time.sleep(0.5)
        return np.full((n, n), alpha)

    time.sleep(max(0.0, start_at - time.time()))
    value = coherence(30, 0.25)
    print(float(value.sum()), value.shape)
    """
)


def _start_workers(redis_url, prefix, count):
    start_at = time.time() + 1.5  # both interpreters are up and importing by then
    return [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_url, prefix, repr(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def _outputs(procs):
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    return outputs


def test_concurrent_processes_compute_once(redis_url):
    prefix = f"test:decorator:{time.time_ns()}:"
    outputs = _outputs(_start_workers(redis_url, prefix, 3))
    assert outputs == [f"{30 * 30 * 0.25} (30, 30)"] * 3
    assert int(redis.Redis.from_url(redis_url).get(prefix + "computations")) == 1


def test_a_later_process_reuses_the_value(redis_url):
    prefix = f"test:decorator:{time.time_ns()}:"
    first = _outputs(_start_workers(redis_url, prefix, 1))
    second = _outputs(_start_workers(redis_url, prefix, 1))
    assert first == second
    assert int(redis.Redis.from_url(redis_url).get(prefix + "computations")) == 1


class TestMemoryDiskRedisContract(CacheTierContract):
    @pytest.fixture
    def make_tier(self, redis_url, tmp_path):
        made = []

        def make(**kwargs):
            prefix = f"test:contract:{time.time_ns()}:"
            tiers = (
                TNFRHierarchicalCache(max_memory_mb=16),
                CompressedPersistentCache(tmp_path / f"disk{len(made)}"),
                RedisCache(url=redis_url, key_prefix=prefix),
            )
            made.append(TieredCache(*tiers, **kwargs))
            return made[-1]

        yield make
        for stack in made:
            stack.clear()
            stack.close()


@pytest.fixture
def stack(redis_url, tmp_path):
    prefix = f"test:tiered:{time.time_ns()}:"
    memory = TNFRHierarchicalCache(max_memory_mb=16)
    disk = CompressedPersistentCache(tmp_path / "disk")
    remote = RedisCache(url=redis_url, key_prefix=prefix)
    stack = TieredCache(memory, disk, remote)
    yield stack
    stack.clear()
    stack.close()


def test_memory_disk_redis_stack(stack):
    memory, disk, remote = stack.tiers
    w = np.random.default_rng(5).random((40, 40))
    remote.set("w", w, CacheLevel.DERIVED_METRICS, dependencies={"graph_topology"}, computation_cost=3.0)
    np.testing.assert_array_equal(stack.get("w", CacheLevel.DERIVED_METRICS), w)
    assert disk.lookup("w", CacheLevel.DERIVED_METRICS).computation_cost == 3.0
    assert memory.lookup("w", CacheLevel.DERIVED_METRICS).dependencies == frozenset({"graph_topology"})
    assert stack.get_stats()["tier_hits"] == {"memory": 0, "disk": 0, "redis": 1}
    assert stack.invalidate_by_dependency("graph_topology") == 1
    assert remote.get("w", CacheLevel.DERIVED_METRICS) is None and disk.get("w", CacheLevel.DERIVED_METRICS) is None


def test_decorator_through_the_stack_uses_the_lease(stack):
    calls = []

    @cached(stack)
    def f(x):
        calls.append(x)
        return None

    assert f(1) is None and f(1) is None
    assert calls == [1]
    assert f.cache_info().hits == 1
    remote = stack.tiers[2]
    assert len(remote) == 1


def test_redis_down_is_a_miss(private_redis_server):
    remote = RedisCache(url=private_redis_server.url, key_prefix="test:down:", retry_interval=0.2)
    stack = TieredCache(TNFRHierarchicalCache(max_memory_mb=8), remote)
    calls = []

    @cached(stack)
    def f(x):
        calls.append(x)
        return x * 3

    private_redis_server.stop()
    assert f(2) == 6 and f(2) == 6  # the memory tier still serves the second call
    assert calls == [2]
    assert stack.get_stats()["tier_errors"]["redis"] >= 1


def test_decorator_over_redis_alone(redis_url):
    remote = RedisCache(url=redis_url, key_prefix=f"test:alone:{time.time_ns()}:")
    calls = []

    @cached(remote, copy=True)
    def matrix(n):
        calls.append(n)
        return np.eye(n)

    try:
        first = matrix(4)
        second = matrix(4)
        assert calls == [4]
        second[0, 0] = 9.0  # copy=True: private and writeable
        np.testing.assert_array_equal(matrix(4), np.eye(4))
        np.testing.assert_array_equal(first, np.eye(4))
    finally:
        remote.clear()
        remote.close()


def test_decorator_over_redis_alone_counts_one_lookup_per_call(redis_url):
    remote = RedisCache(url=redis_url, key_prefix=f"test:count:{time.time_ns()}:")

    @cached(remote)
    def f(x):
        return np.full(3, x * 2)

    try:
        np.testing.assert_array_equal(f(1), f(1))
        assert (remote.metrics.hits, remote.metrics.misses) == (1, 1)
    finally:
        remote.clear()
        remote.close()


def test_shared_metrics_count_a_decorated_call_once_through_the_stack(redis_url):
    from tnfr_fastcache import CacheMetrics

    shared = CacheMetrics()
    remote = RedisCache(url=redis_url, key_prefix=f"test:shared:{time.time_ns()}:", metrics=shared)
    stack = TieredCache(TNFRHierarchicalCache(max_memory_mb=8, metrics=shared), remote, metrics=shared)

    @cached(stack)
    def f(x):
        return np.full(3, float(x))

    try:
        f(1)
        f(1)
        f(2)
        assert (shared.hits, shared.misses) == (1, 2)
        # each computed call: one miss of the stack and of the memory tier (the Redis
        # tier's row also holds its lease's miss: the stack's lookup reached it first)
        assert shared.tier_misses["memory"] == 2 and shared.tier_misses["tiered"] == 2
    finally:
        stack.clear()
        stack.close()
