"""cache_tnfr_computation and cached: keys, results, errors, concurrency, globals."""

import asyncio
import gc
import inspect
import logging
import threading
import time
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tnfr_fastcache import (
    CacheLevel,
    InvalidArgumentError,
    MISSING,
    TNFRHierarchicalCache,
    UnhashableKeyError,
    cache_tnfr_computation,
    cached,
    get_global_cache,
    invalidate_function_cache,
    reset_global_cache,
    set_global_cache,
)
from tnfr_fastcache.decorator import CacheInfo, NotCacheableError
from test_tiered import ProxyTier

D = CacheLevel.DERIVED_METRICS



@pytest.fixture
def fresh_global():
    reset_global_cache()
    yield
    reset_global_cache()


class Calls:
    """Counts calls of the functions under test."""

    def __init__(self):
        self.args = []
        self.lock = threading.Lock()

    def __call__(self, *args):
        with self.lock:
            self.args.append(args)

    def __len__(self):
        return len(self.args)


# -- keys --------------------------------------------------------------------------------


def test_positional_keyword_and_default_forms_are_one_entry(mem):
    calls = Calls()

    @cache_tnfr_computation(cache_instance=mem)
    def f(a, b=2, *, c="x"):
        calls(a, b, c)
        return a + b

    assert [f(1), f(1, 2), f(a=1), f(1, b=2), f(1, c="x"), f(b=2, a=1)] == [3] * 6
    assert len(calls) == 1
    assert f(1, 3) == 4 and f(1, c="y") == 3
    assert len(calls) == 3
    assert f.cache_info() == CacheInfo(hits=5, misses=3, maxsize=None, currsize=None)


def test_positional_only_and_keyword_only_parameters(mem):
    calls = Calls()

    @cached(mem)
    def f(a, /, b=2, *, c=3):
        calls(a, b, c)
        return a + b + c

    assert f(1) == f(1, 2) == f(1, b=2, c=3) == f(1, c=3) == 6
    assert len(calls) == 1
    with pytest.raises(TypeError):
        f(a=1)
    with pytest.raises(TypeError):
        f(1, 2, 3)
    with pytest.raises(TypeError):
        f(1, d=4)
    with pytest.raises(TypeError):
        f()
    assert len(calls) == 1 and len(mem) == 1


def test_variadic_arguments_are_keyed(mem):
    calls = Calls()

    @cache_tnfr_computation(cache_instance=mem)
    def f(*args, **kwargs):
        calls(args, kwargs)
        return len(args) + len(kwargs)

    f(1, a=2)
    f(1, a=2)
    f(1, b=2)
    f(1, 2)
    f(b=2, a=3)
    f(a=3, b=2)
    assert len(calls) == 4


def test_types_are_part_of_the_key_unless_typed_false(mem):
    calls = Calls()

    @cached(mem)
    def f(x):
        calls(x)
        return repr(x)

    assert [f(1), f(1.0), f(True), f("1")] == ["1", "1.0", "True", "'1'"]
    assert len(calls) == 4

    @cached(mem, typed=False)
    def g(x):
        calls(x)
        return x * 2

    g(1)
    g(1.0)
    g(True)
    assert len(calls) == 5
    assert g(1.5) == 3.0 and len(calls) == 6


def test_array_argument_is_keyed_by_content(mem):
    calls = Calls()

    @cached(mem)
    def total(w):
        calls()
        return float(w.sum())

    w = np.arange(2000.0)
    assert total(w) == total(w.copy()) == w.sum()
    assert len(calls) == 1
    w[1000] += 1.0  # same object, new content: a new key (str() of both arrays is equal)
    assert total(w) == np.arange(2000.0).sum() + 1.0
    assert len(calls) == 2


def test_functions_with_same_arguments_have_separate_entries(mem):
    @cached(mem)
    def f(x):
        return ("f", x)

    @cached(mem)
    def g(x):
        return ("g", x)

    assert f(1) == ("f", 1) and g(1) == ("g", 1)


def test_unfingerprintable_argument_error_names_the_parameter(mem):
    @cached(mem)
    def f(data, lock):
        return 1

    with pytest.raises(UnhashableKeyError, match=r"'lock'.*ignore=\('lock',\)"):
        f(1, threading.Lock())
    assert f.__wrapped__(1, threading.Lock()) == 1


def test_ignore_leaves_arguments_out_of_the_key(mem):
    calls = Calls()

    @cached(mem, ignore=("verbose",))
    def f(x, verbose=False):
        calls()
        return x

    f(1, verbose=True)
    f(1)
    f(1, False)
    assert len(calls) == 1
    with pytest.raises(InvalidArgumentError, match="nope"):
        cached(mem, ignore=("nope",))(lambda x: x)


def test_key_function_replaces_the_arguments(mem):
    calls = Calls()

    @cached(mem, key=lambda graph_name, verbose=False: graph_name.lower())
    def f(graph_name, verbose=False):
        calls()
        return graph_name.lower()

    assert f("G1") == f("g1", verbose=True) == "g1"
    assert len(calls) == 1
    with pytest.raises(InvalidArgumentError):
        cached(mem, key=lambda x: x, ignore=("x",))
    with pytest.raises(InvalidArgumentError):
        cached(mem, key="not callable")


# -- results -----------------------------------------------------------------------------


def test_none_is_cached(mem):
    calls = Calls()

    @cache_tnfr_computation(cache_instance=mem)
    def nothing(x):
        calls()

    assert nothing(1) is None and nothing(1) is None
    assert len(calls) == 1
    assert nothing.cache_info().hits == 1


def test_exceptions_are_not_cached(mem):
    calls = Calls()

    @cached(mem)
    def fails(x):
        calls()
        raise ZeroDivisionError(x)

    for _ in range(3):
        with pytest.raises(ZeroDivisionError):
            fails(1)
    assert len(calls) == 3
    assert len(mem) == 0


def test_arrays_come_back_read_only(mem):
    @cached(mem)
    def matrix(n):
        return np.eye(n)

    first = matrix(3)
    second = matrix(3)
    for got in (first, second):
        assert got.flags.writeable is False
        with pytest.raises(ValueError):
            got[0, 0] = 5.0
    np.testing.assert_array_equal(matrix(3), np.eye(3))


def test_arrays_in_containers_come_back_read_only(mem):
    @cached(mem)
    def parts(n):
        return {"w": np.ones(n), "pair": (np.zeros(n), 1)}

    for got in (parts(4), parts(4)):
        assert got["w"].flags.writeable is False
        assert got["pair"][0].flags.writeable is False
        assert got["pair"][1] == 1


def test_copy_true_gives_private_arrays(mem):
    @cached(mem, copy=True)
    def matrix(n):
        return np.eye(n)

    first = matrix(3)
    first[0, 0] = 42.0
    second = matrix(3)
    assert second.flags.writeable is True
    np.testing.assert_array_equal(second, np.eye(3))
    second[:] = 0.0
    np.testing.assert_array_equal(matrix(3), np.eye(3))


# -- function kinds ----------------------------------------------------------------------


def test_wrapper_keeps_name_doc_signature_wrapped(mem):
    def original(graph, alpha: float = 0.5, *, mode="fast") -> float:
        """Docstring of the original."""
        return alpha

    wrapped = cache_tnfr_computation(D, {"graph_topology"}, cache_instance=mem)(original)
    assert wrapped.__wrapped__ is original
    assert wrapped.__name__ == "original" and wrapped.__doc__ == "Docstring of the original."
    assert inspect.signature(wrapped) == inspect.signature(original)
    assert wrapped._is_cached is True and wrapped._cache_level is D
    assert wrapped._cache_dependencies == {"graph_topology"}


def test_async_functions_cache_results(mem):
    calls = Calls()

    @cached(mem)
    async def fetch(x):
        calls()
        await asyncio.sleep(0.01)
        return None if x == 0 else x * 2

    async def main():
        first = await fetch(3)
        second = await fetch(3)
        none = [await fetch(0), await fetch(0)]
        together = await asyncio.gather(*(fetch(5) for _ in range(6)))
        return first, second, none, together

    first, second, none, together = asyncio.run(main())
    assert first == second == 6 and none == [None, None] and together == [10] * 6
    assert len(calls) == 3
    assert inspect.iscoroutinefunction(fetch)


def test_async_exception_reaches_every_waiter_and_is_not_cached(mem):
    calls = Calls()

    @cached(mem)
    async def fails(x):
        calls()
        await asyncio.sleep(0.01)
        raise KeyError(x)

    async def main():
        return await asyncio.gather(*(fails(1) for _ in range(4)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, KeyError) for r in results)
    assert len(calls) == 1
    asyncio.run(main())
    assert len(calls) == 2


def test_generators_are_refused(mem):
    def gen(n):
        yield from range(n)

    async def agen(n):
        yield n

    for fn in (gen, agen):
        with pytest.raises(NotCacheableError, match="generator") as info:
            cached(mem)(fn)
        assert isinstance(info.value, TypeError)

    @cached(mem)
    def returns_generator(n):
        return (i for i in range(n))

    with pytest.raises(NotCacheableError, match="generator"):
        returns_generator(3)
    assert len(mem) == 0


def test_staticmethod_and_classmethod(mem):
    calls = Calls()

    class Model:
        @cached(mem)
        @staticmethod
        def double(x):
            calls()
            return 2 * x

        @cached(mem, ignore=("cls",))
        @classmethod
        def triple(cls, x):
            calls()
            return 3 * x

    assert Model.double(2) == Model().double(2) == 4
    assert Model.triple(2) == Model.triple(2) == 6
    assert len(calls) == 2


# -- methods -----------------------------------------------------------------------------


def test_method_self_needs_a_key_or_ignore(mem):
    class Plain:
        @cached(mem)
        def area(self, r):
            return 3 * r * r

    with pytest.raises(UnhashableKeyError, match=r"'self'.*__fastcache_key__.*ignore=\('self',\)"):
        Plain().area(2)


def test_method_keyed_by_fastcache_key_keeps_no_instance_alive(mem):
    calls = Calls()

    class Network:
        def __init__(self, name, scale):
            self.name = name
            self.scale = scale

        def __fastcache_key__(self):
            return (self.name, self.scale)

        @cached(mem)
        def coherence(self, x):
            calls()
            return self.scale * x

    a = Network("a", 2)
    assert a.coherence(3) == 6
    assert Network("a", 2).coherence(3) == 6  # an equal instance shares the entry
    assert Network("b", 5).coherence(3) == 15
    assert len(calls) == 2
    assert a.coherence.cache_info().hits == 1

    ref = weakref.ref(a)
    del a
    gc.collect()
    assert ref() is None


def test_method_with_ignored_self(mem):
    calls = Calls()

    class Helper:
        @cached(mem, ignore=("self",))
        def square(self, x):
            calls()
            return x * x

    assert Helper().square(4) == Helper().square(4) == 16
    assert len(calls) == 1


# -- cache_info, cache_clear, invalidation -------------------------------------------------


def test_cache_clear_removes_only_own_entries(mem):
    @cached(mem)
    def f(x):
        return x

    @cached(mem)
    def g(x):
        return -x

    for i in range(3):
        f(i)
        g(i)
    f(0)
    assert f.cache_info().hits == 1
    assert f.cache_clear() == 3
    assert f.cache_info() == CacheInfo(0, 0, None, None)
    assert len(mem) == 3
    g(0)
    assert g.cache_info().hits == 1


def test_invalidate_function_cache(mem):
    @cache_tnfr_computation(D, {"graph_topology"}, cache_instance=mem)
    def f(x):
        return x

    @cache_tnfr_computation(D, {"graph_topology"}, cache_instance=mem)
    def g(x):
        return x

    f(1)
    f(2)
    g(1)
    assert invalidate_function_cache(f) == 2
    assert invalidate_function_cache(f) == 0
    assert len(mem) == 1
    with pytest.raises(InvalidArgumentError, match="not cached"):
        invalidate_function_cache(lambda: 1)


def test_dependencies_invalidate_and_are_optional(mem):
    calls = Calls()

    @cache_tnfr_computation(CacheLevel.GRAPH_STRUCTURE, {"graph_topology", "node_vf"}, cache_instance=mem)
    def f(x):
        calls()
        return x

    @cache_tnfr_computation(cache_instance=mem)
    def no_deps(x):
        calls()
        return x

    f(1)
    no_deps(1)
    assert mem.invalidate_by_dependency("node_vf") == 1
    f(1)
    no_deps(1)
    assert len(calls) == 3
    with pytest.raises(InvalidArgumentError, match="string"):
        cache_tnfr_computation(D, "graph_topology")


def test_upstream_positional_form_cost_estimator_and_ttl():
    tier = ProxyTier(down=False)

    @cache_tnfr_computation(CacheLevel.NODE_PROPERTIES, {"node_epi"}, lambda n: n * 10.0, tier, ttl=3600)
    def f(n):
        return n

    f(4)
    (key,) = tier.keys_set
    assert isinstance(key, bytes) and len(key) == 16
    entry = tier.lookup(key, CacheLevel.NODE_PROPERTIES)
    assert entry.value == 4
    assert entry.computation_cost == 40.0
    assert entry.dependencies >= {"node_epi"}
    assert entry.expires_at == pytest.approx(time.time() + 3600, abs=5)


def test_bare_decorators_and_bad_options(mem, fresh_global):
    @cached
    def f(x):
        return x + 1

    @cache_tnfr_computation
    def g(x):
        return x + 2

    assert f(1) == f(1) == 2 and g(1) == g(1) == 3
    assert f.cache_info().maxsize == 128 and f.cache_info().currsize == 1
    assert g.cache_info().hits == 1
    with pytest.raises(InvalidArgumentError):
        cached(mem, maxsize_mb=5)
    with pytest.raises(InvalidArgumentError):
        cached(maxsize_mb=0)
    with pytest.raises(InvalidArgumentError):
        cached(ttl=0)
    with pytest.raises(InvalidArgumentError):
        cache_tnfr_computation("no_such_level")
    with pytest.raises(InvalidArgumentError):
        cached(cache={})


# -- the global cache --------------------------------------------------------------------


def test_global_cache_get_set_reset(fresh_global, mem):
    calls = Calls()

    @cache_tnfr_computation()
    def f(x):
        calls()
        return x

    first = get_global_cache()
    assert get_global_cache() is first
    f(1)
    assert len(first) == 1
    set_global_cache(mem)  # decorated earlier, used now
    f(1)
    assert len(calls) == 2 and len(mem) == 1
    assert invalidate_function_cache(f) == 1
    reset_global_cache()
    assert get_global_cache() is not first and get_global_cache() is not mem
    with pytest.raises(InvalidArgumentError):
        set_global_cache({})


# -- failing tiers -------------------------------------------------------------------------


def test_tier_errors_are_misses_counted_and_logged_once(caplog):
    tier = ProxyTier("disk", failing={"get", "lookup", "set"}, error=OSError(28, "No space left on device"))
    calls = Calls()

    @cached(tier)
    def f(x):
        calls()
        return x * 2

    with caplog.at_level(logging.WARNING, logger="tnfr_fastcache.decorator"):
        assert [f(1), f(1), f(2)] == [2, 2, 4]
    assert len(calls) == 3
    # each call: the failed lookup and the failed set (no re-check: nothing landed meanwhile)
    assert f.cache_stats()["errors"] == 6
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1
    tier.down = False
    assert f(1) == 2 and f(1) == 2
    assert len(calls) == 4


# -- concurrency ---------------------------------------------------------------------------


def test_concurrent_calls_compute_once(mem):
    calls = Calls()
    barrier = threading.Barrier(8)

    @cached(mem)
    def slow(x):
        calls()
        time.sleep(0.1)
        return np.full(3, x)

    results = []

    def run():
        barrier.wait()
        results.append(slow(7))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 8
    for r in results:
        np.testing.assert_array_equal(r, np.full(3, 7))
        assert r.flags.writeable is False
    stats = slow.cache_stats()
    assert stats["misses"] == 1 and stats["waits"] + stats["hits"] == 7


def test_concurrent_exception_reaches_all_and_is_not_cached(mem):
    calls = Calls()
    barrier = threading.Barrier(6)

    @cached(mem)
    def boom(x):
        calls()
        time.sleep(0.1)
        raise RuntimeError("failed once for everybody")

    errors = []

    def run():
        barrier.wait()
        try:
            boom(1)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 6 and len(calls) == 1
    with pytest.raises(RuntimeError):
        boom(1)
    assert len(calls) == 2


def test_recursion_on_distinct_keys(mem):
    @cached(mem)
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(60) == 1548008755920
    assert fib.cache_info().misses == 61


def test_miss_sentinel_is_not_none():
    assert MISSING is not None and repr(MISSING) == "MISSING"


def test_upstream_cache_level_members_are_accepted(mem):
    upstream = pytest.importorskip("tnfr.utils.cache")

    @cache_tnfr_computation(upstream.CacheLevel.NODE_PROPERTIES, {"node_epi"}, cache_instance=mem)
    def f(x):
        return x

    f(1)
    assert f._cache_level is CacheLevel.NODE_PROPERTIES
    assert mem.invalidate_level(CacheLevel.NODE_PROPERTIES) == 1


@settings(max_examples=60, deadline=None)
@given(
    a=st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    b=st.none() | st.booleans() | st.integers(),
    c=st.text(max_size=5),
    split=st.integers(min_value=0, max_value=3),
    use_default=st.booleans(),
)
def test_every_way_of_passing_the_same_arguments_is_one_entry(a, b, c, split, use_default):
    tier = TNFRHierarchicalCache(max_memory_mb=4)
    calls = Calls()

    @cached(tier)
    def f(a, b=None, c="z"):
        calls()
        return (a, b, c)

    c = "z" if use_default else c
    values = [a, b, c]
    names = ["a", "b", "c"]
    reference = f(a, b, c)
    args, kwargs = values[:split], dict(zip(names[split:], values[split:]))
    if use_default:
        kwargs.pop("c", None)
        args = args[:2]
    assert f(*args, **kwargs) == reference
    assert len(calls) == 1


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt in a leader thread."""


def test_waiters_compute_themselves_when_the_leader_is_interrupted(mem):
    calls = Calls()
    started = threading.Event()

    @cached(mem)
    def f(x):
        calls()
        if len(calls) == 1:
            started.set()
            time.sleep(0.1)
            raise Interrupted()
        return x * 10

    outcome = {}

    def leader():
        try:
            f(1)
        except Interrupted:
            outcome["leader"] = "interrupted"

    def waiter():
        started.wait()
        outcome["waiter"] = f(1)

    threads = [threading.Thread(target=leader), threading.Thread(target=waiter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcome == {"leader": "interrupted", "waiter": 10}
    assert len(calls) == 2
    assert f.cache_stats()["waits"] == 1


def test_docstring_examples_run(fresh_global):
    import doctest

    import tnfr_fastcache.decorator

    result = doctest.testmod(tnfr_fastcache.decorator)
    assert result.attempted > 0 and result.failed == 0


# -- what the cache's metrics see ----------------------------------------------------------


def test_array_argument_hashing_time_goes_into_the_cache_metrics(mem):
    @cached(mem)
    def total(w):
        return float(w.sum())

    w = np.ones((200, 200))
    assert total(w) == total(w) == 40000.0
    assert mem.metrics.hash_count == 2
    assert mem.metrics.hash_time > 0.0


def test_scalar_calls_stay_untimed_until_a_non_scalar_argument_is_seen(mem):
    @cached(mem)
    def f(x):
        return x

    f(1)  # the first call is timed: it tells whether the function takes scalars
    f(1)
    f(2.5)
    assert mem.metrics.hash_count == 1
    f((1, 2))  # a container (this miss reveals it): from now on every call of f is timed
    assert mem.metrics.hash_count == 1
    f((1, 2))
    f(3)
    assert mem.metrics.hash_count == 3


def test_hashing_time_of_a_keyword_call_goes_into_a_stacks_metrics(mem):
    from tnfr_fastcache import TieredCache

    stack = TieredCache(mem)

    @cached(stack)
    def f(w, scale=1.0):
        return w * scale

    f(w=np.ones(4))
    assert stack.metrics.hash_count == 1 and mem.metrics.hash_count == 0


def test_a_computed_miss_is_one_lookup_of_the_cache(mem):
    @cached(mem)
    def f(x):
        return x

    f(1)
    assert (mem.metrics.hits, mem.metrics.misses) == (0, 1)
    assert (mem.get_stats()["hits"], mem.get_stats()["misses"]) == (0, 1)
    f(1)
    f(2)
    assert (mem.metrics.hits, mem.metrics.misses) == (1, 2)


def test_async_computed_miss_is_one_lookup_of_the_cache(mem):
    @cached(mem)
    async def f(x):
        return x

    asyncio.run(f(1))
    asyncio.run(f(1))
    assert (mem.metrics.hits, mem.metrics.misses) == (1, 1)


def test_a_miss_racing_a_landed_computation_looks_again_instead_of_computing(mem):
    # The lookup misses, then another thread's computation of the same key lands before
    # this call joins the flight: the call must find that value, not compute again.
    calls = Calls()
    started = threading.Event()
    release = threading.Event()

    @cached(mem)
    def f(x):
        calls(x)
        return x * 2

    real_get = mem.get

    def slow_get(key, level, default=None, **kwargs):
        value = real_get(key, level, default, **kwargs)
        if threading.current_thread().name == "late":
            started.set()
            release.wait(5)
        return value

    mem.get = slow_get
    late = threading.Thread(target=f, args=(3,), name="late")
    late.start()
    assert started.wait(5)
    assert f(3) == 6  # computes and lands while "late" sits between its miss and its flight
    release.set()
    late.join(5)
    assert len(calls) == 1


def test_a_lease_tier_as_the_global_cache_counts_one_lookup_per_call(fresh_global):
    from test_tiered import LeaseTier

    lease = LeaseTier()
    set_global_cache(lease)

    @cache_tnfr_computation()
    def f(x):
        return x + 1

    assert f(1) == f(1) == 2
    assert lease.leases == 2  # every call is the lease's, none a lookup before it
    assert (lease.metrics.hits, lease.metrics.misses) == (1, 1)
