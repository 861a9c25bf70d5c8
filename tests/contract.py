"""The behaviour every cache tier shares (memory, disk, Redis, tiered), as one test mixin.

A tier's test file imports it (``from contract import CacheTierContract``: pytest puts
``tests/`` on the path), subclasses :class:`CacheTierContract` and provides the ``make_tier``
fixture, a factory that builds a fresh, empty tier (keyword arguments such as
``metrics=`` are passed through)::

    class TestMemory(CacheTierContract):
        @pytest.fixture
        def make_tier(self):
            def make(**kwargs):
                return TNFRHierarchicalCache(**kwargs)
            return make

The factory is responsible for cleanup (a ``yield`` fixture closing what it made).
A tier with a byte budget subclasses :class:`CacheTierBudgetContract` instead and says
how to build a budgeted tier in ``budget_kwargs``. Modelled on cachetools' ``CacheTestMixin``: the same tests,
every implementation.
"""

import threading
import time

import numpy as np
import pytest

from tnfr_fastcache import CacheLevel, InvalidArgumentError, MISSING, UnhashableKeyError
from tnfr_fastcache.backends.base import CacheTier, Entry

__all__ = ["CacheTierContract", "CacheTierBudgetContract"]

T = CacheLevel.TEMPORARY
D = CacheLevel.DERIVED_METRICS
G = CacheLevel.GRAPH_STRUCTURE
N = CacheLevel.NODE_PROPERTIES


class _Unhashable:
    """A key no tier can name: not hashable and unknown to the fingerprint."""

    __hash__ = None


def _arrays():
    rng = np.random.default_rng(7)
    return {
        "f8_2d": rng.random((37, 41)),
        "f4_1d": rng.random(100).astype(np.float32),
        "i8_3d": rng.integers(-(2**40), 2**40, size=(3, 4, 5), dtype=np.int64),
        "u1": np.arange(256, dtype=np.uint8),
        "c16": (rng.random(10) + 1j * rng.random(10)).astype(np.complex128),
        "bool": rng.random((5, 5)) > 0.5,
        "empty": np.empty((0, 3), dtype=np.float64),
        "scalar0d": np.array(3.5),
        "fortran": np.asfortranarray(rng.random((6, 9))),
        "strided": rng.random((20, 20))[::3, 1::2],
        "big_endian": np.arange(12, dtype=">i4").reshape(3, 4),
    }


class CacheTierContract:
    """Mixin of tests every :class:`~tnfr_fastcache.backends.base.CacheTier` passes."""

    @pytest.fixture
    def tier(self, make_tier):
        return make_tier()

    # -- basics -------------------------------------------------------------------------

    def test_is_a_cache_tier(self, tier):
        assert isinstance(tier, CacheTier)
        assert isinstance(tier.tier_name, str) and tier.tier_name
        assert tier.metrics is not None

    def test_get_miss_returns_none_or_default(self, tier):
        assert tier.get("absent", T) is None
        assert tier.get("absent", T, default=MISSING) is MISSING
        assert tier.get("absent", T, "fallback") == "fallback"
        assert tier.lookup("absent", T) is None

    def test_set_then_get(self, tier):
        assert tier.set("k", {"a": 1, "b": [1.5, "x"]}, T) is True
        assert tier.get("k", T) == {"a": 1, "b": [1.5, "x"]}

    def test_default_level_is_derived_metrics(self, tier):
        tier.set("k", 1)
        assert tier.get("k", D) == 1
        assert tier.get("k") == 1
        assert tier.get("k", T) is None

    def test_none_is_a_value(self, tier):
        tier.set("none", None, T)
        assert tier.get("none", T, default=MISSING) is None
        entry = tier.lookup("none", T)
        assert isinstance(entry, Entry) and entry.value is None
        assert ("none", T) in tier

    @pytest.mark.parametrize(
        "value",
        [0, -7, 2**70, 3.25, float("inf"), "", "texte ν θ", b"\x00\xffbytes", (1, (2, 3)),
         [1, 2, [3]], {"nested": {"x": (1.0, None)}}, frozenset({1, 2}), True, complex(1, -2)],
        ids=repr,
    )
    def test_python_values_round_trip(self, tier, value):
        tier.set("v", value, T)
        got = tier.get("v", T, default=MISSING)
        assert got == value and type(got) is type(value)

    def test_overwrite_replaces_value(self, tier):
        tier.set("k", 1, T)
        tier.set("k", 2, T)
        assert tier.get("k", T) == 2
        assert len(tier) == 1

    def test_keys_of_several_types(self, tier):
        keys = ["s", ("tuple", 1, 2.5), 42, ("nested", ("a", "b")), b"raw"]
        for i, key in enumerate(keys):
            tier.set(key, i, T)
        for i, key in enumerate(keys):
            assert tier.get(key, T) == i
        assert tier.get("42", T) is None
        assert len(tier) == len(keys)

    # -- levels -------------------------------------------------------------------------

    def test_levels_keep_separate_keys(self, tier):
        for i, level in enumerate(CacheLevel):
            tier.set("same", i, level)
        for i, level in enumerate(CacheLevel):
            assert tier.get("same", level) == i
        assert len(tier) == len(CacheLevel)

    @pytest.mark.parametrize("level", list(CacheLevel), ids=lambda lv: lv.value)
    def test_string_levels(self, tier, level):
        tier.set("k", level.value, level.value)
        assert tier.get("k", level) == level.value
        assert tier.get("k", level.name) == level.value
        assert ("k", level.value) in tier

    @pytest.mark.parametrize("bad", ["no_such_level", 3, None, CacheLevel])
    def test_bad_level_is_rejected(self, tier, bad):
        with pytest.raises(InvalidArgumentError):
            tier.set("k", 1, bad)
        with pytest.raises(InvalidArgumentError):
            tier.get("k", bad)
        with pytest.raises(InvalidArgumentError):
            tier.lookup("k", bad)
        with pytest.raises(InvalidArgumentError):
            tier.delete("k", bad)
        with pytest.raises(InvalidArgumentError):
            tier.invalidate_level(bad)
        with pytest.raises(InvalidArgumentError):
            ("k", bad) in tier  # noqa: B015
        assert len(tier) == 0

    def test_unhashable_key_is_rejected(self, tier):
        with pytest.raises(UnhashableKeyError):
            tier.set(_Unhashable(), 1, T)
        with pytest.raises(UnhashableKeyError):
            tier.get(_Unhashable(), T)
        with pytest.raises(UnhashableKeyError):
            tier.delete(_Unhashable(), T)
        assert len(tier) == 0

    def test_invalidate_level_counts_and_spares_other_levels(self, tier):
        for i in range(5):
            tier.set(("t", i), i, T)
        for i in range(3):
            tier.set(("g", i), i, G)
        tier.set(("t", 0), "same key, other level", D)
        assert tier.invalidate_level(T) == 5
        assert tier.invalidate_level("temporary") == 0
        assert all(tier.get(("t", i), T) is None for i in range(5))
        assert [tier.get(("g", i), G) for i in range(3)] == [0, 1, 2]
        assert tier.get(("t", 0), D) == "same key, other level"
        assert len(tier) == 4
        assert tier.get_stats()["invalidations"] == 5

    # -- dependencies -------------------------------------------------------------------

    def test_invalidate_by_dependency_counts_exactly(self, tier):
        tier.set("a", 1, T, dependencies={"topology"})
        tier.set("b", 2, D, dependencies={"topology", "node_vf_5"})
        tier.set("c", 3, G, dependencies=["node_vf_5"])
        tier.set("d", 4, T)
        assert tier.invalidate_by_dependency("topology") == 2
        assert tier.get("a", T) is None and tier.get("b", D) is None
        assert tier.get("c", G) == 3 and tier.get("d", T) == 4
        # "b" also named node_vf_5: it is gone, so only "c" is left under it.
        assert tier.invalidate_by_dependency("node_vf_5") == 1
        assert tier.invalidate_by_dependency("node_vf_5") == 0
        assert tier.invalidate_by_dependency("never_named") == 0
        assert len(tier) == 1
        assert tier.get_stats()["invalidations"] == 3

    def test_dependencies_are_kept_in_entry(self, tier):
        tier.set("k", 1, T, dependencies=("x", "y"), computation_cost=12.5)
        entry = tier.lookup("k", T)
        assert entry.dependencies == frozenset({"x", "y"})
        assert entry.computation_cost == 12.5
        assert entry.expires_at is None

    def test_overwrite_replaces_dependencies(self, tier):
        tier.set("k", 1, T, dependencies={"old"})
        tier.set("k", 2, T, dependencies={"new"})
        assert tier.invalidate_by_dependency("old") == 0
        assert tier.get("k", T) == 2
        assert tier.invalidate_by_dependency("new") == 1

    def test_dependency_index_forgets_deleted_entries(self, tier):
        tier.set("k", 1, T, dependencies={"dep"})
        assert tier.delete("k", T) is True
        tier.set("k", 2, G)  # same key, other level, no dependency
        assert tier.invalidate_by_dependency("dep") == 0
        assert tier.get("k", G) == 2

    def test_same_key_two_levels_same_dependency(self, tier):
        tier.set("k", 1, T, dependencies={"dep"})
        tier.set("k", 2, G, dependencies={"dep"})
        assert tier.invalidate_by_dependency("dep") == 2
        assert len(tier) == 0

    # -- delete, clear, membership, len ---------------------------------------------------

    def test_delete(self, tier):
        tier.set("k", 1, T)
        tier.set("k", 2, G)
        assert tier.delete("k", T) is True
        assert tier.delete("k", T) is False
        assert tier.get("k", T) is None and tier.get("k", G) == 2
        assert tier.delete("k", "graph_structure") is True
        assert len(tier) == 0

    def test_clear(self, tier):
        for i in range(10):
            tier.set(i, i, list(CacheLevel)[i % 4], dependencies={"dep"})
        tier.clear()
        assert len(tier) == 0
        assert all(tier.get(i, list(CacheLevel)[i % 4]) is None for i in range(10))
        assert tier.invalidate_by_dependency("dep") == 0
        tier.set("after", 1, T)
        assert tier.get("after", T) == 1

    def test_contains_and_len(self, tier):
        assert len(tier) == 0
        assert ("k", T) not in tier
        tier.set("k", 0, T)
        tier.set("k2", None, T)
        assert ("k", T) in tier and ("k", "temporary") in tier
        assert ("k2", T) in tier
        assert ("k", G) not in tier
        assert len(tier) == 2

    def test_context_manager(self, make_tier):
        with make_tier() as tier:
            tier.set("k", 1, T)
            assert tier.get("k", T) == 1

    # -- ttl ----------------------------------------------------------------------------

    def test_ttl_long_is_kept_and_recorded(self, tier):
        before = time.time()
        tier.set("k", 1, T, ttl=3600)
        entry = tier.lookup("k", T)
        assert entry.value == 1
        assert before + 3600 - 1 <= entry.expires_at <= time.time() + 3600 + 1

    def test_ttl_expires(self, tier):
        tier.set("short", 1, T, ttl=0.05)
        tier.set("forever", 2, T)
        time.sleep(0.12)
        assert tier.get("short", T) is None
        assert tier.lookup("short", T) is None
        assert ("short", T) not in tier
        assert tier.get("forever", T) == 2

    @pytest.mark.parametrize("bad", [0, -1, float("nan")])
    def test_bad_ttl_is_rejected(self, tier, bad):
        with pytest.raises(InvalidArgumentError):
            tier.set("k", 1, T, ttl=bad)
        assert tier.get("k", T) is None

    # -- arrays -------------------------------------------------------------------------

    @pytest.mark.parametrize("name", list(_arrays()))
    def test_arrays_round_trip(self, tier, name):
        arr = _arrays()[name]
        tier.set(name, arr, D)
        got = tier.get(name, D)
        assert isinstance(got, np.ndarray)
        assert got.dtype == arr.dtype and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)

    def test_returned_array_is_read_only(self, tier):
        tier.set("m", np.arange(10.0), D)
        got = tier.get("m", D)
        assert got.flags.writeable is False
        with pytest.raises(ValueError):
            got[0] = 99.0
        assert tier.lookup("m", D).value.flags.writeable is False
        np.testing.assert_array_equal(tier.get("m", D), np.arange(10.0))

    def test_copy_true_gives_private_writeable_array(self, tier):
        tier.set("m", np.arange(10.0), D)
        mine = tier.get("m", D, copy=True)
        assert mine.flags.writeable is True
        mine[:] = -1.0
        np.testing.assert_array_equal(tier.get("m", D), np.arange(10.0))
        entry = tier.lookup("m", D, copy=True)
        assert entry.value.flags.writeable is True

    def test_caller_mutating_stored_array_does_not_corrupt_cache(self, tier):
        arr = np.arange(10.0)
        tier.set("m", arr, D)
        arr[:] = -1.0
        np.testing.assert_array_equal(tier.get("m", D), np.arange(10.0))

    def test_arrays_inside_containers(self, tier):
        arrays = _arrays()
        value = {"w": arrays["f8_2d"], "parts": (arrays["i8_3d"], [arrays["u1"]])}
        tier.set("c", value, D)
        got = tier.get("c", D)
        np.testing.assert_array_equal(got["w"], arrays["f8_2d"])
        np.testing.assert_array_equal(got["parts"][0], arrays["i8_3d"])
        np.testing.assert_array_equal(got["parts"][1][0], arrays["u1"])

    def test_coherence_matrix_sized_array(self, tier):
        n = 300
        w = np.random.default_rng(1).random((n, n))
        w = 0.5 * (w + w.T)
        tier.set(("coherence", n), w, D, dependencies={"graph_topology"}, computation_cost=50.0)
        got = tier.get(("coherence", n), D)
        np.testing.assert_array_equal(got, w)
        assert tier.invalidate_by_dependency("graph_topology") == 1

    # -- stats and metrics ----------------------------------------------------------------

    def test_get_stats_keys_and_counts(self, tier):
        tier.set("k", 1, T)
        tier.get("k", T)
        tier.get("absent", T)
        stats = tier.get_stats()
        for name in ("hits", "misses", "hit_rate", "evictions", "invalidations"):
            assert name in stats, name
        assert stats["hits"] == 1
        assert stats["misses"] == 1
        assert stats["hit_rate"] == pytest.approx(0.5)

    def test_metrics_instance_is_used(self, make_tier):
        from tnfr_fastcache.telemetry import CacheMetrics

        metrics = CacheMetrics()
        tier = make_tier(metrics=metrics)
        assert tier.metrics is metrics

    # -- threads --------------------------------------------------------------------------

    def test_threads_on_disjoint_keys(self, tier):
        errors = []

        def work(t):
            try:
                for i in range(100):
                    tier.set((t, i), i * t, T, dependencies={f"dep{t}"})
                    assert tier.get((t, i), T) == i * t
                    if i % 10 == 0:
                        tier.delete((t, i), T)
            except Exception as exc:  # collected so the main thread can fail the test
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(1, 5)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        assert len(tier) == 4 * 90
        assert tier.invalidate_by_dependency("dep2") == 90
        assert tier.get((2, 5), T) is None and tier.get((3, 5), T) == 15


class CacheTierBudgetContract(CacheTierContract):
    """The contract plus the byte-budget tests, for tiers that have a budget.

    Subclasses define ``budget_kwargs(nbytes)``: the keyword arguments for ``make_tier``
    that give a budget of about ``nbytes`` bytes.
    """

    def _budgeted(self, make_tier, nbytes):
        return make_tier(**self.budget_kwargs(nbytes))

    def test_value_larger_than_budget_is_rejected(self, make_tier):
        tier = self._budgeted(make_tier, 1 << 20)
        small = np.ones(1000)
        assert tier.set("small", small, D) is True
        assert tier.set("huge", np.zeros(3 << 18), D) is False  # 6 MiB into 1 MiB
        assert tier.get("huge", D) is None
        np.testing.assert_array_equal(tier.get("small", D), small)
        assert tier.get_stats()["rejected"] == 1

    def test_budget_evicts_to_make_room(self, make_tier):
        tier = self._budgeted(make_tier, 1 << 20)
        chunk = np.ones(1 << 14)  # 128 KiB
        for i in range(32):  # 4 MiB through a 1 MiB budget
            assert tier.set(i, chunk, D) is True
        assert 1 <= len(tier) <= 8
        assert tier.get_stats()["evictions"] == 32 - len(tier)
        np.testing.assert_array_equal(tier.get(31, D), chunk)
