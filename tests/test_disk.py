"""The disk tier: contract, layout, persistence across instances, budget, corruption, errors."""

import errno
import math
import os
import sqlite3
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract import CacheTierBudgetContract
from tnfr_fastcache import (
    BackendError,
    BackendUnavailable,
    CacheLevel,
    InvalidArgumentError,
    fingerprint_hex,
    serialize,
)
from tnfr_fastcache.backends import _diskindex, disk
from tnfr_fastcache.backends.disk import CompressedPersistentCache, DiskEntry, PersistentTNFRCache

T = CacheLevel.TEMPORARY
D = CacheLevel.DERIVED_METRICS
G = CacheLevel.GRAPH_STRUCTURE
N = CacheLevel.NODE_PROPERTIES
MiB = 1 << 20


class _DiskContract(CacheTierBudgetContract):
    """The contract on one disk class with some options; subclasses name them."""

    tier_class = CompressedPersistentCache
    tier_options = {}

    def budget_kwargs(self, nbytes):
        # Stored bytes are what the budget counts; uncompressed frames make them predictable.
        return {"max_disk_mb": nbytes / MiB, "compression": "none"}

    @pytest.fixture
    def make_tier(self, tmp_path):
        made = []

        def make(**kwargs):
            tier = self.tier_class(tmp_path / f"cache{len(made)}", **{**self.tier_options, **kwargs})
            made.append(tier)
            return tier

        yield make
        for tier in made:
            tier.close()


class TestCompressedContract(_DiskContract):
    pass


class TestCompressedWithMemoryFrontContract(_DiskContract):
    tier_options = {"max_memory_mb": 64}


class TestPersistentContract(_DiskContract):
    tier_class = PersistentTNFRCache
    tier_options = {"max_memory_mb": 64}


@pytest.fixture
def cache(tmp_path):
    with CompressedPersistentCache(tmp_path / "c") as tier:
        yield tier


def _files(root, suffix=".tfc"):
    return sorted(str(p) for p in root.rglob(f"*{suffix}"))


def _only_file(tier, key, level=D):
    (entry,) = [e for e in tier.entries(level) if e.key_hex == fingerprint_hex(key)]
    return entry.path


# -- layout and names ---------------------------------------------------------------------


def test_files_are_named_by_digest_under_level_and_shard(tmp_path):
    with CompressedPersistentCache(tmp_path / "c") as tier:
        tier.set("coherence_large_graph", 0.95, D)
        digest = fingerprint_hex("coherence_large_graph")
        (path,) = _files(tmp_path / "c")
        rel = os.path.relpath(path, tmp_path / "c").split(os.sep)
        assert rel[:2] == ["derived_metrics", digest[:2]]
        assert rel[2].startswith(digest + ".") and rel[2].endswith(".tfc")
        assert "coherence" not in path


@pytest.mark.parametrize("key", ["../../escape", "/etc/passwd", "a/b\\c", "..", "\x00nul", "x" * 5000])
def test_hostile_key_stays_inside_cache_dir(tmp_path, key):
    # upstream bug: the key was the file name, so "../../escape" wrote outside the cache.
    root = tmp_path / "deep" / "c"
    with CompressedPersistentCache(root) as tier:
        assert tier.set(key, "v", G) is True
        assert tier.get(key, G) == "v"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(root in p.parents for p in written)


def test_levels_are_directories(cache):
    for level in CacheLevel:
        cache.set("k", level.value, level)
    assert {e.level for e in cache.entries()} == {lv.value for lv in CacheLevel}
    for level in CacheLevel:
        (entry,) = cache.entries(level)
        assert os.sep + level.value + os.sep in entry.path


# -- persistence, restarts, several instances ----------------------------------------------


def test_values_survive_a_restart(tmp_path):
    w = np.random.default_rng(0).random((50, 50))
    with CompressedPersistentCache(tmp_path) as first:
        first.set("w", w, D, dependencies={"topology"}, computation_cost=7.0, ttl=3600)
    with CompressedPersistentCache(tmp_path) as second:
        entry = second.lookup("w", D)
        np.testing.assert_array_equal(entry.value, w)
        assert entry.dependencies == frozenset({"topology"})
        assert entry.computation_cost == 7.0
        assert entry.expires_at > time.time() + 3500


def test_invalidated_entries_do_not_come_back_after_restart(tmp_path):
    # upstream bug: invalidation was memory-only, so a restart brought the values back.
    with PersistentTNFRCache(tmp_path) as first:
        first.set_persistent("stale", 1, D, {"graph_topology"})
        first.set_persistent("kept", 2, D, {"node_vf_3"})
        assert first.invalidate_by_dependency("graph_topology") == 1
    with PersistentTNFRCache(tmp_path) as second:
        assert second.get_persistent("stale", D) is None
        assert second.get_persistent("kept", D) == 2


def test_invalidation_by_another_instance_reaches_memory_front(tmp_path):
    a = CompressedPersistentCache(tmp_path, max_memory_mb=16)
    b = CompressedPersistentCache(tmp_path, max_memory_mb=16)
    a.set("k", "old", D, dependencies={"dep"})
    assert a.get("k", D) == "old"  # now in a's memory front
    assert b.invalidate_by_dependency("dep") == 1
    assert a.get("k", D) is None
    a.set("k2", "first", D)
    assert a.get("k2", D) == "first"
    b.set("k2", "second", D)
    assert a.get("k2", D) == "second"
    b.delete("k2", D)
    assert a.get("k2", D) is None
    a.close()
    b.close()


def test_memory_front_asks_the_index_only_after_a_change(tmp_path, monkeypatch):
    a = CompressedPersistentCache(tmp_path, max_memory_mb=16)
    b = CompressedPersistentCache(tmp_path)
    a.set("k", "v", D)
    a.set("other", 1, D)
    asked = []
    real = a._index.token_of
    monkeypatch.setattr(a._index, "token_of", lambda *args: asked.append(args) or real(*args))
    assert [a.get("k", D) for _ in range(5)] == ["v"] * 5
    assert len(asked) == 1  # the first hit checks; nothing has changed since
    b.set("new", 2, D)  # a new entry replaces nothing: no re-check needed
    assert a.get("k", D) == "v" and len(asked) == 1
    b.delete("other", D)  # a removal anywhere: the next hit of each copy checks again
    assert a.get("k", D) == "v" and len(asked) == 2
    b.set("k", "replaced", D)
    assert a.get("k", D) == "replaced" and len(asked) == 3
    a.close()
    b.close()


def test_entries_lists_records(cache):
    cache.set(("w", 1), np.zeros(1000), D, dependencies={"x", "y"}, computation_cost=3.0, ttl=60)
    cache.set("s", "small", G)
    records = list(cache.entries())
    assert len(records) == 2 and all(isinstance(r, DiskEntry) for r in records)
    (w,) = cache.entries(D)
    assert w.key_hex == fingerprint_hex(("w", 1))
    assert w.raw_size == 8000 and w.stored_size == os.path.getsize(w.path) < 8000
    assert w.codec == "lz4" and w.dependencies == ("x", "y") and w.computation_cost == 3.0
    assert w.created <= w.last_access and w.expires == pytest.approx(w.created + 60, abs=1)
    assert [r.level for r in cache.entries("graph_structure")] == ["graph_structure"]


def test_clear_one_level(cache):
    for level in CacheLevel:
        cache.set("k", 1, level)
    cache.clear(T)
    assert cache.get("k", T) is None
    assert len(cache) == 3
    cache.clear()
    assert len(cache) == 0 and _files(cache_root(cache)) == []


def cache_root(tier):
    from pathlib import Path

    return Path(tier.cache_dir)


def test_open_existing_without_settings_keeps_budget(tmp_path):
    with CompressedPersistentCache(tmp_path, max_disk_mb=2, eviction="cost") as first:
        assert first.max_disk_mb == 2
    with CompressedPersistentCache(tmp_path, create=False) as second:
        assert second.max_disk_mb == 2 and second.eviction == "cost"
    with CompressedPersistentCache(tmp_path, max_disk_mb=math.inf) as third:
        assert third.max_disk_mb is None
    with CompressedPersistentCache(tmp_path) as fourth:
        assert fourth.max_disk_mb is None and "unbounded" in repr(fourth)


def test_missing_directory_without_create(tmp_path):
    with pytest.raises(BackendUnavailable, match="does not exist"):
        CompressedPersistentCache(tmp_path / "nope", create=False)
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"compression": "rar"}, "rar"),
        ({"max_disk_mb": 0}, "max_disk_mb"),
        ({"max_disk_mb": -3}, "max_disk_mb"),
        ({"max_disk_mb": "big"}, "max_disk_mb"),
        ({"eviction": "random"}, "eviction"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        CompressedPersistentCache(tmp_path, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"computation_cost": -1}, "computation_cost"),
        ({"computation_cost": math.nan}, "computation_cost"),
        ({"dependencies": [1, 2]}, "dependencies"),
    ],
)
def test_bad_set_arguments(cache, kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        cache.set("k", 1, D, **kwargs)
    assert len(cache) == 0


def test_string_dependency_is_one_name(cache):
    cache.set("k", 1, D, dependencies="graph_topology")
    assert cache.invalidate_by_dependency("g") == 0
    assert cache.invalidate_by_dependency("graph_topology") == 1


def test_tampered_index_row_cannot_point_outside(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    root = tmp_path / "c"
    with CompressedPersistentCache(root) as tier:
        tier.set("k", 1, D)
        conn = sqlite3.connect(root / _diskindex.INDEX_NAME)
        conn.execute("UPDATE entries SET level = '../..', digest = 'victim.txt' ")
        conn.commit()
        conn.close()
        with pytest.raises(BackendError, match="did not write"):
            tier.clear()
    assert victim.read_text() == "keep me"


def test_newer_index_format_is_refused(tmp_path):
    CompressedPersistentCache(tmp_path).close()
    conn = sqlite3.connect(tmp_path / _diskindex.INDEX_NAME)
    conn.execute("UPDATE meta SET value = '99' WHERE name = 'format_version'")
    conn.commit()
    conn.close()
    with pytest.raises(BackendError, match="format version 99"):
        CompressedPersistentCache(tmp_path)


# -- compression choices ------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["lz4", "gzip", "zstd", "none", "auto"])
def test_every_codec_round_trips(tmp_path, compression):
    sparse = np.zeros((200, 200))
    sparse[::7, ::3] = 0.5
    with CompressedPersistentCache(tmp_path, compression=compression) as tier:
        tier.save_compressed("m", sparse, D)
        np.testing.assert_array_equal(tier.load_compressed("m", D), sparse)
        (entry,) = tier.entries()
        if compression == "none":
            assert entry.stored_size > sparse.nbytes
        else:
            assert entry.stored_size * 10 < sparse.nbytes
            assert entry.codec == ("lz4" if compression == "auto" else compression)


def test_load_compressed_absent_is_none(cache):
    assert cache.load_compressed("absent", D) is None
    cache.save_compressed("none-value", None, T)
    assert cache.load_compressed("none-value", T) is None
    assert cache.lookup("none-value", T) is not None


# -- mmap -------------------------------------------------------------------------------


def _base_chain(array):
    # ndarray.base, then memoryview.obj: whatever finally owns the memory.
    while array is not None:
        yield array
        array = getattr(array, "base", None) if hasattr(array, "base") else getattr(array, "obj", None)


@pytest.mark.parametrize("verify", [True, False])
def test_mmap_returns_file_backed_read_only_array(tmp_path, verify):
    w = np.random.default_rng(3).random((256, 300))
    with CompressedPersistentCache(tmp_path, compression="none", max_memory_mb=16) as tier:
        tier.set("w", w, D)
        got = tier.load_compressed("w", D, mmap=True, verify=verify)
        np.testing.assert_array_equal(got, w)
        assert got.flags.writeable is False
        assert any(type(b).__name__ == "mmap" for b in _base_chain(got))
        mine = tier.load_compressed("w", D, mmap=True, copy=True)
        assert mine.flags.writeable is True
        mine[:] = 0
        np.testing.assert_array_equal(tier.get("w", D), w)


def test_mmap_survives_replacement_and_deletion(tmp_path):
    with CompressedPersistentCache(tmp_path, compression="none") as tier:
        tier.set("w", np.ones(100_000), D)
        mapped = tier.load_compressed("w", D, mmap=True)
        tier.set("w", np.zeros(100_000), D)
        tier.delete("w", D)
        np.testing.assert_array_equal(mapped, np.ones(100_000))


def test_mmap_of_compressed_frame_decodes(tmp_path):
    with PersistentTNFRCache(tmp_path) as tier:
        value = {"w": np.arange(50_000.0), "n": 3}
        tier.set_persistent("k", value, D, set())
        got = tier.get_persistent("k", D, mmap=True)
        np.testing.assert_array_equal(got["w"], value["w"])
        assert got["w"].flags.writeable is False


def test_large_uncompressed_read_is_a_view_of_private_buffer(tmp_path):
    w = np.random.default_rng(4).random((300, 300))  # 720 KB: the numpy-buffer path
    with CompressedPersistentCache(tmp_path, compression="none") as tier:
        tier.set("w", w, D)
        got = tier.get("w", D)
        np.testing.assert_array_equal(got, w)
        assert got.flags.writeable is False
        assert not any(type(b).__name__ == "mmap" for b in _base_chain(got))
        assert tier.get("w", D, copy=True).flags.writeable is True


# -- budget -------------------------------------------------------------------------------


def _dir_bytes(root):
    return sum(os.path.getsize(p) for p in _files(root))


def test_directory_never_stays_above_budget(tmp_path):
    budget = 1 * MiB
    with CompressedPersistentCache(tmp_path, compression="none", max_disk_mb=budget / MiB) as tier:
        rng = np.random.default_rng(0)
        for i in range(60):
            assert tier.set(i, rng.random(int(rng.integers(1_000, 40_000))), D) is True
            assert _dir_bytes(tmp_path) <= budget
            assert tier.get_stats()["disk_size_bytes"] == _dir_bytes(tmp_path)
        stats = tier.get_stats()
        assert stats["evictions"] == 60 - len(tier) > 0
        assert stats["disk_files"] == len(tier) == len(_files(tmp_path))


def test_lru_keeps_recently_read_entries(tmp_path):
    chunk = np.ones(30_000)  # ~240 KB uncompressed
    with CompressedPersistentCache(tmp_path, compression="none", max_disk_mb=1) as tier:
        for i in range(3):
            tier.set(i, chunk, D)
            time.sleep(0.01)
        tier.get(0, D)
        tier.set(3, chunk, D)
        tier.set(4, chunk, D)  # over 1 MiB: the least recently used goes, that is 1
        assert tier.get(0, D) is not None
        assert tier.get(1, D) is None


def test_cost_eviction_keeps_expensive_entries(tmp_path):
    chunk = np.ones(30_000)
    with CompressedPersistentCache(tmp_path, compression="none", max_disk_mb=1, eviction="cost") as tier:
        tier.set("expensive", chunk, D, computation_cost=1000.0)
        for i in range(10):
            tier.set(i, chunk, D, computation_cost=1.0)
        assert tier.get("expensive", D) is not None
        assert tier.get_stats()["evictions"] >= 6


def test_expired_entries_are_evicted_first(tmp_path):
    chunk = np.ones(30_000)
    with CompressedPersistentCache(tmp_path, compression="none", max_disk_mb=1) as tier:
        tier.set("old", chunk, D)
        tier.set("short", chunk, D, ttl=0.01)
        time.sleep(0.03)
        for i in range(3):
            tier.set(i, chunk, D)
        assert tier.get("old", D) is not None
        assert [e.key_hex for e in tier.entries()].count(fingerprint_hex("short")) == 0


def test_value_larger_than_budget_removes_older_value(tmp_path):
    with CompressedPersistentCache(tmp_path, compression="none", max_disk_mb=0.5) as tier:
        tier.set("k", np.ones(10), D)
        assert tier.set("k", np.ones(200_000), D) is False
        assert tier.get("k", D) is None
        assert tier.get_stats()["rejected"] == 1 and _files(tmp_path) == []


def test_default_is_unbounded(tmp_path):
    with CompressedPersistentCache(tmp_path, compression="none") as tier:
        assert tier.max_disk_mb is None and tier.get_stats()["max_disk_mb"] is None
        for i in range(20):
            tier.set(i, np.ones(50_000), D)
        assert len(tier) == 20 and tier.get_stats()["evictions"] == 0


# -- corruption ---------------------------------------------------------------------------


def _flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


@pytest.mark.parametrize("where", ["header", "payload", "last"])
@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_bit_flip_is_a_counted_miss_and_removed(tmp_path, where, compression):
    w = np.random.default_rng(5).random((200, 200))
    with CompressedPersistentCache(tmp_path, compression=compression) as tier:
        tier.set("w", w, D)
        path = _only_file(tier, "w")
        size = os.path.getsize(path)
        _flip_byte(path, {"header": 10, "payload": size // 2, "last": size - 1}[where])
        assert tier.load_compressed("w", D) is None
        assert tier.get_stats()["corrupt"] == 1
        assert not os.path.exists(path) and len(tier) == 0
        assert tier.load_compressed("w", D) is None
        assert tier.get_stats()["corrupt"] == 1


def test_bit_flip_under_mmap_with_verify_is_detected(tmp_path):
    with CompressedPersistentCache(tmp_path, compression="none") as tier:
        tier.set("w", np.arange(100_000.0), D)
        path = _only_file(tier, "w")
        _flip_byte(path, os.path.getsize(path) // 2)
        assert tier.load_compressed("w", D, mmap=True) is None
        assert tier.get_stats()["corrupt"] == 1


@pytest.mark.parametrize("keep", [0, 1, 40, -1])
def test_truncated_file_is_a_miss(tmp_path, keep):
    with CompressedPersistentCache(tmp_path) as tier:
        tier.set("w", np.arange(50_000.0), D)
        path = _only_file(tier, "w")
        size = os.path.getsize(path)
        os.truncate(path, keep if keep >= 0 else size - 1)
        assert tier.get("w", D) is None
        assert tier.get_stats()["corrupt"] == 1 and len(tier) == 0


def test_file_deleted_under_us_is_a_miss_and_row_removed(cache, caplog):
    cache.set("k", np.arange(10.0), D)
    os.unlink(_only_file(cache, "k"))
    with caplog.at_level("WARNING", logger="tnfr_fastcache.backends.disk"):
        assert cache.get("k", D) is None
    assert "deleted" in caplog.text
    assert len(cache) == 0 and cache.get_stats()["corrupt"] == 1
    assert cache.set("k", 1, D) is True and cache.get("k", D) == 1


def test_front_copy_of_corrupted_entry_is_not_needed_to_notice(tmp_path):
    with CompressedPersistentCache(tmp_path, max_memory_mb=8) as tier:
        tier.set("k", np.arange(1000.0), D)
        _flip_byte(_only_file(tier, "k"), 100)
        # The memory front still holds the value it wrote: a valid copy, served.
        np.testing.assert_array_equal(tier.get("k", D), np.arange(1000.0))
        problems = tier.verify()
        assert len(problems) == 1 and "corrupt" in problems[0][1]


# -- verify and gc ------------------------------------------------------------------------


def _age(path, seconds=3600):
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_verify_reports_and_fixes_every_kind_of_problem(tmp_path):
    with CompressedPersistentCache(tmp_path) as tier:
        for key in ("good", "flipped", "gone", "short"):
            tier.set(key, np.random.default_rng(len(key)).random(20_000), D)
        _flip_byte(_only_file(tier, "flipped"), 5000)
        os.unlink(_only_file(tier, "gone"))
        short = _only_file(tier, "short")
        os.truncate(short, 100)
        orphan = os.path.join(tmp_path, "derived_metrics", "ab", "ab" * 16 + ".0123456789abcdef.tfc")
        os.makedirs(os.path.dirname(orphan), exist_ok=True)
        with open(orphan, "wb") as f:
            f.write(bytes(serialize.dumps(1.0)))
        temp = orphan[:-4] + ".tmp"
        with open(temp, "wb") as f:
            f.write(b"partial")
        fresh_orphan = orphan.replace("0123", "4567")
        with open(fresh_orphan, "wb") as f:
            f.write(b"in flight")
        _age(orphan)
        _age(temp)

        problems = dict(tier.verify())
        assert set(problems) == {
            _only_file(tier, "flipped"), _only_file(tier, "gone"), short, orphan, temp,
        }
        assert "corrupt" in problems[_only_file(tier, "flipped")]
        assert "missing" in problems[_only_file(tier, "gone")]
        assert "index says" in problems[short]
        assert "orphan" in problems[orphan] and "unfinished" in problems[temp]
        assert len(tier.verify(fix=True)) == 5
        assert tier.verify() == []
        assert os.path.exists(fresh_orphan)  # younger than orphan_grace: maybe another writer's
        assert len(tier) == 1 and tier.get("good", D) is not None
        assert tier.get_stats()["disk_size_bytes"] == os.path.getsize(_only_file(tier, "good"))


def test_verify_ignores_entries_replaced_while_it_runs(tmp_path, monkeypatch):
    with CompressedPersistentCache(tmp_path) as tier:
        tier.set("k", 1, D)
        other = CompressedPersistentCache(tmp_path)
        real_rows = tier._index.rows

        def rows_then_replace(*args):
            listed = real_rows(*args)
            other.set("k", 2, D)  # another process replaces the entry after the listing
            return listed

        monkeypatch.setattr(tier._index, "rows", rows_then_replace)
        assert tier.verify() == []
        other.close()


def test_gc_removes_expired_orphans_and_evicts(tmp_path):
    with CompressedPersistentCache(tmp_path, compression="none", orphan_grace=0) as tier:
        tier.set("short", 1, D, ttl=0.01)
        for i in range(4):
            tier.set(i, np.ones(30_000), D)
        os.unlink(_only_file(tier, 0))
        stray = os.path.join(tmp_path, "temporary", "00", "0" * 32 + ".feed.tmp")
        os.makedirs(os.path.dirname(stray))
        with open(stray, "wb") as f:
            f.write(b"x" * 100)
        time.sleep(0.02)
        report = tier.gc(max_disk_mb=0.3)
        assert report["expired"] == 1 and report["orphan_rows"] == 1 and report["temp_files"] == 1
        assert report["evicted"] == 2 and report["disk_files"] == 1
        assert report["disk_size_bytes"] == _dir_bytes(tmp_path) <= 0.3 * MiB
        assert tier.max_disk_mb is None  # gc's limit was for this call only
        assert tier.gc() == dict(
            expired=0, orphan_files=0, orphan_rows=0, temp_files=0, evicted=0, freed_bytes=0,
            disk_files=1, disk_size_bytes=report["disk_size_bytes"],
        )


def test_cleanup_old_entries(tmp_path):
    with PersistentTNFRCache(tmp_path) as tier:
        tier.set_persistent("old", 1, D, set())
        conn = sqlite3.connect(tmp_path / _diskindex.INDEX_NAME)
        conn.execute("UPDATE entries SET created = created - 40 * 86400")
        conn.commit()
        conn.close()
        tier.set_persistent("new", 2, G, set())
        assert tier.cleanup_old_entries(max_age_days=30) == 1
        assert tier.get_persistent("old", D) is None and tier.get_persistent("new", G) == 2
        with pytest.raises(InvalidArgumentError, match="max_age_days"):
            tier.cleanup_old_entries(-1)


# -- errors from the file system ----------------------------------------------------------


def _leftovers(root):
    return _files(root, ".tmp") + _files(root, ".tfc")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EIO])
def test_write_failure_is_backend_error_and_leaves_nothing(tmp_path, monkeypatch, code):
    with CompressedPersistentCache(tmp_path) as tier:
        tier.set("before", 1, D)
        real_write = os.write

        def failing_write(fd, data):
            real_write(fd, bytes(data)[:10])
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(disk.os, "write", failing_write)
        with pytest.raises(BackendError) as info:
            tier.set("k", np.arange(1000.0), D)
        monkeypatch.undo()
        assert info.value.errno == code and "cannot write a value file" in str(info.value)
        assert isinstance(info.value, OSError) and tier.get_stats()["errors"] == 1
        assert tier.get("k", D) is None and tier.get("before", D) == 1
        assert len(_leftovers(tmp_path)) == 1


def test_permission_denied_creating_file(tmp_path, monkeypatch):
    with CompressedPersistentCache(tmp_path) as tier:
        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(disk.os, "open", denied)
        with pytest.raises(BackendError, match="Permission denied") as info:
            tier.set("k", 1, D)
        assert info.value.errno == errno.EACCES
        monkeypatch.undo()
        assert len(tier) == 0 and _leftovers(tmp_path) == []


def test_read_permission_denied_is_backend_error(cache, monkeypatch):
    cache.set("k", 1, D)
    real_open = os.open

    def denied(path, flags, *args, **kwargs):
        if str(path).endswith(".tfc") and flags == os.O_RDONLY:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(disk.os, "open", denied)
    with pytest.raises(BackendError, match="cannot read"):
        cache.get("k", D)
    monkeypatch.undo()
    assert cache.get("k", D) == 1 and cache.get_stats()["errors"] == 1


def test_index_failure_removes_the_written_file(cache, monkeypatch):
    def full(*args, **kwargs):
        raise BackendError("disk cache index: database or disk is full")

    monkeypatch.setattr(cache._index, "put", full)
    with pytest.raises(BackendError, match="full"):
        cache.set("k", np.arange(100.0), D)
    assert _leftovers(cache_root(cache)) == []


def test_read_only_index_is_backend_error(tmp_path):
    CompressedPersistentCache(tmp_path).close()
    conn = sqlite3.connect(f"file:{tmp_path / _diskindex.INDEX_NAME}?mode=ro", uri=True)
    index = _diskindex.DiskIndex.__new__(_diskindex.DiskIndex)
    index.path = str(tmp_path / _diskindex.INDEX_NAME)
    index._lock = __import__("threading").RLock()
    index._conn, index._pid, index._touches, index._touch_since = conn, os.getpid(), {}, 0.0
    with pytest.raises(BackendError, match="readonly"):
        index.set_meta("x", 1)
    conn.close()


def test_reads_never_wait_for_a_writer_holding_the_index(tmp_path):
    with CompressedPersistentCache(tmp_path, timeout=1.0) as tier:
        tier.set("k", np.arange(10.0), D)
        writer = sqlite3.connect(tmp_path / _diskindex.INDEX_NAME, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        try:
            # Enough hits to flush access times: the flush is skipped, not waited for.
            for _ in range(2 * _diskindex._TOUCH_FLUSH_COUNT):
                np.testing.assert_array_equal(tier.get("k", D), np.arange(10.0))
            with pytest.raises(BackendUnavailable, match="locked"):
                tier.set("other", 1, D)
            assert len(_leftovers(tmp_path)) == 1  # the refused write's file is gone
        finally:
            writer.execute("COMMIT")
            writer.close()
        assert tier.set("other", 1, D) is True
        assert tier._index._touches == {}


def test_directory_removed_under_us_is_recreated(tmp_path):
    import shutil

    with CompressedPersistentCache(tmp_path) as tier:
        tier.set("a", 1, D)
        shutil.rmtree(tmp_path / "derived_metrics")
        assert tier.get("a", D) is None
        assert tier.set("b", 2, D) is True and tier.get("b", D) == 2


def test_fsync_option_round_trips(tmp_path):
    with CompressedPersistentCache(tmp_path, fsync=True) as tier:
        tier.set("k", np.arange(10.0), D)
        np.testing.assert_array_equal(tier.get("k", D), np.arange(10.0))


# -- PersistentTNFRCache: upstream's API --------------------------------------------------


def test_upstream_default_persist_levels(tmp_path):
    with PersistentTNFRCache(tmp_path) as tier:
        assert tier.persist_levels == frozenset({G, D})
        for level in CacheLevel:
            tier.set_persistent("k", level.value, level, set())
        assert {e.level for e in tier.entries()} == {"graph_structure", "derived_metrics"}
        assert all(tier.get_persistent("k", lv) == lv.value for lv in CacheLevel)
        stats = tier.get_stats()
        assert stats["disk_files"] == 2 and stats["disk_size_mb"] == pytest.approx(
            _dir_bytes(tmp_path) / MiB
        )
    with PersistentTNFRCache(tmp_path) as restarted:
        assert restarted.get_persistent("k", T) is None
        assert restarted.get_persistent("k", G) == "graph_structure"


def test_stats_count_entries_per_level_like_upstream(tmp_path):
    with PersistentTNFRCache(tmp_path, max_memory_mb=8) as tier:
        tier.set_persistent("a", np.ones(1000), D, set())
        tier.set_persistent("b", 2, G, set())
        tier.set_persistent("c", 3, T, set())
        tier.set_persistent("d", 4, D, set(), persist_to_disk=False)
        tier.set_persistent("gone", 5, D, set(), ttl=0.01)
        time.sleep(0.02)
        stats = tier.get_stats()
        assert stats["entry_counts"] == {
            "graph_structure": 1, "node_properties": 0, "derived_metrics": 2, "temporary": 1,
        }
        assert stats["entries"] == len(tier) == 4
        assert stats["disk_files"] == 3  # the expired row is still there until read or gc
        assert stats["memory_limit_mb"] == 16  # the front and the memory-only tier
        assert 8000 < stats["memory_used_mb"] * MiB < 16 * MiB


def test_persist_to_disk_false_keeps_memory_only_and_drops_disk_copy(tmp_path):
    # upstream bug: persist_to_disk=False crashed; the disk copy must not come back either.
    with PersistentTNFRCache(tmp_path) as tier:
        tier.set_persistent("k", "on disk", D, {"dep"})
        tier.set_persistent("k", "memory only", D, {"dep"}, persist_to_disk=False)
        assert tier.get_persistent("k", D) == "memory only"
        assert list(tier.entries()) == [] and len(tier) == 1
        assert tier.invalidate_by_dependency("dep") == 1
        assert tier.get_persistent("k", D) is None
        tier.set_persistent("k", "memory only again", D, set(), persist_to_disk=False)
        tier.set_persistent("k", "back on disk", D, set())
        assert tier.get_persistent("k", D) == "back on disk" and len(tier) == 1
        tier.set_persistent("j", "memory", D, set(), persist_to_disk=False)
    with PersistentTNFRCache(tmp_path) as restarted:
        assert restarted.get_persistent("j", D) is None
        assert restarted.get_persistent("k", D) == "back on disk"


def test_custom_persist_levels_and_no_memory(tmp_path):
    with PersistentTNFRCache(tmp_path, max_memory_mb=None, persist_levels={"temporary"}) as tier:
        assert tier.set_persistent("k", 1, T, set()) is True
        assert tier.set_persistent("k", 1, D, set()) is False  # nowhere to keep it
        assert tier.get_persistent("k", D) is None and tier.get_persistent("k", T) == 1
        assert tier.get_stats()["rejected"] == 1


def test_clear_persistent_cache_keeps_memory_only_levels(tmp_path):
    with PersistentTNFRCache(tmp_path) as tier:
        tier.set_persistent("k", 1, D, set())
        tier.set_persistent("k", 2, G, set())
        tier.set_persistent("k", 3, T, set())
        tier.clear_persistent_cache(G)
        assert tier.get_persistent("k", G) is None and tier.get_persistent("k", D) == 1
        tier.clear_persistent_cache()
        assert tier.get_persistent("k", D) is None and tier.get_persistent("k", T) == 3


def test_upstream_example(tmp_path):
    cache = PersistentTNFRCache(cache_dir=tmp_path / "tnfr_cache")
    cache.set_persistent(
        "coherence_large_graph", 0.95, CacheLevel.DERIVED_METRICS,
        dependencies={"graph_topology"}, computation_cost=1000.0, persist_to_disk=True,
    )
    cache.close()
    later = PersistentTNFRCache(cache_dir=tmp_path / "tnfr_cache")
    assert later.get_persistent("coherence_large_graph", CacheLevel.DERIVED_METRICS) == 0.95
    later.close()


def test_upstream_level_members_are_accepted(tmp_path):
    from tnfr.utils.cache import CacheLevel as UpstreamLevel

    with PersistentTNFRCache(tmp_path) as tier:
        tier.set_persistent("k", 1, UpstreamLevel.GRAPH_STRUCTURE, set())
        assert tier.get_persistent("k", G) == 1
        assert tier.get_persistent("k", UpstreamLevel.GRAPH_STRUCTURE) == 1


# -- model check ----------------------------------------------------------------------------

_OPS = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 5), st.sampled_from([D, G]), st.integers(0, 99),
              st.frozensets(st.sampled_from(["a", "b"]), max_size=2)),
    st.tuples(st.just("delete"), st.integers(0, 5), st.sampled_from([D, G])),
    st.tuples(st.just("invalidate"), st.sampled_from(["a", "b"])),
    st.tuples(st.just("invalidate_level"), st.sampled_from([D, G])),
    st.tuples(st.just("reopen"), st.booleans()),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_OPS, max_size=30))
def test_random_operations_match_a_dict_model(tmp_path_factory, ops):
    root = tmp_path_factory.mktemp("model")
    model = {}  # (key, level) -> (value, dependencies)
    tier = CompressedPersistentCache(root, max_memory_mb=4)
    other = CompressedPersistentCache(root)  # a second "process" sharing the directory
    for op in ops:
        if op[0] == "set":
            _, key, level, value, deps = op
            assert (tier if value % 2 else other).set(key, value, level, dependencies=deps) is True
            model[key, level] = (value, deps)
        elif op[0] == "delete":
            _, key, level = op
            assert tier.delete(key, level) is ((key, level) in model)
            model.pop((key, level), None)
        elif op[0] == "invalidate":
            gone = [k for k, (_, deps) in model.items() if op[1] in deps]
            assert other.invalidate_by_dependency(op[1]) == len(gone)
            for k in gone:
                del model[k]
        elif op[0] == "invalidate_level":
            gone = [k for k in model if k[1] is op[1]]
            assert tier.invalidate_level(op[1]) == len(gone)
            for k in gone:
                del model[k]
        else:
            tier.close()
            tier = CompressedPersistentCache(root, max_memory_mb=4 if op[1] else None)
        for key in range(6):
            for level in (D, G):
                expected = model.get((key, level), (None,))[0]
                assert tier.get(key, level) == expected
        assert len(tier) == len(other) == len(model)
    assert tier.verify() == []
    tier.close()
    other.close()
