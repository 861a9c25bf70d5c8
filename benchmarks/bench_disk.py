"""Disk tier: our CompressedPersistentCache next to what users would pick instead.

Subjects (each in its own temporary directory under pytest's ``tmp_path``, on the disk
users keep caches on, or under ``$TNFR_BENCH_DISK_DIR``; files just written are in the
page cache, so loads read memory; each directory is removed after its benchmark, before
write-back, so one subject's gigabytes do not slow the next). tmpfs is not the default:
reading its pages into a fresh numpy buffer is measurably slower than from ext4's.

- ``ours-lz4``, ``ours-gzip``, ``ours-none``: :class:`CompressedPersistentCache` with that
  codec, no memory front (every load reads the file); gzip at 8 MB only;
- ``seed-pickle-lz4frame``: the seed's sketch, ``pickle.dump`` into ``lz4.frame.open``
  under the key as file name (written below as :class:`SeedCompressedPersistentCache`);
- ``diskcache``: ``diskcache.Cache`` set/get;
- ``joblib``: ``joblib.dump``/``joblib.load`` (no compression, its default);
- ``upstream-tnfr``: ``tnfr``'s ``PersistentTNFRCache`` (a new instance per load, else its
  memory tier answers).

Groups: ``disk-save-<size>-<kind>`` and ``disk-load-<size>-<kind>`` for 8 MB and 128 MB
coherence matrices, sparse and dense. Each benchmark records the bytes its value files
take in ``extra_info["stored_bytes"]`` (index databases not counted) and
``extra_info["ratio"]`` = array bytes / stored bytes.

Goals (issue 5): load of 8 MB sparse no slower than diskcache's get; save at least 2x faster
than diskcache's set; sparse stored bytes at most 1/40 of diskcache's; lz4 ratio at least
2.5x on every kind, except dense float64, which no lossless codec compresses much
(PERFORMANCE.md, lesson 4).
"""

import os
import pickle
import shutil
import tempfile

import numpy as np
import pytest

from tnfr_fastcache import CacheLevel
from tnfr_fastcache.backends.disk import CompressedPersistentCache

D = CacheLevel.DERIVED_METRICS
MATRICES = [(1000, "sparse"), (1000, "dense"), (4000, "sparse"), (4000, "dense")]
SUBJECTS = ["ours-lz4", "ours-gzip", "ours-none", "seed-pickle-lz4frame", "diskcache", "joblib", "upstream-tnfr"]


class SeedCompressedPersistentCache:
    """The seed's disk cache: a pickle streamed through ``lz4.frame`` into ``<level>/<key>.pkl.lz4``."""

    def __init__(self, cache_dir):
        self.cache_dir = cache_dir

    def _path(self, key, level):
        level_dir = os.path.join(self.cache_dir, level.value)
        os.makedirs(level_dir, exist_ok=True)
        return os.path.join(level_dir, f"{key}.pkl.lz4")

    def save_compressed(self, key, value, level):
        import lz4.frame

        with lz4.frame.open(self._path(key, level), "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)

    def load_compressed(self, key, level):
        import lz4.frame

        try:
            with lz4.frame.open(self._path(key, level), "rb") as f:
                return pickle.load(f)
        except FileNotFoundError:
            return None


def _value_file_bytes(root, skip=()):
    total = 0
    for folder, _, files in os.walk(root):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files if not f.startswith(skip))
    return total


class Subject:
    """``save(w)``, ``load()`` and ``stored_bytes()`` of one implementation in ``root``."""

    def __init__(self, name, root):
        self.name = name
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.close = lambda: None
        if name.startswith("ours-"):
            tier = CompressedPersistentCache(self.root, compression=name.removeprefix("ours-"))
            self.save = lambda w: tier.set("w", w, D)
            self.load = lambda: tier.get("w", D)
            self.stored_bytes = lambda: tier.get_stats()["disk_size_bytes"]
            self.close = tier.close
        elif name == "seed-pickle-lz4frame":
            pytest.importorskip("lz4.frame")
            seed = SeedCompressedPersistentCache(self.root)
            self.save = lambda w: seed.save_compressed("w", w, D)
            self.load = lambda: seed.load_compressed("w", D)
            self.stored_bytes = lambda: _value_file_bytes(self.root)
        elif name == "diskcache":
            diskcache = pytest.importorskip("diskcache")
            cache = diskcache.Cache(self.root)
            self.save = lambda w: cache.set("w", w)
            self.load = lambda: cache.get("w")
            self.stored_bytes = lambda: _value_file_bytes(self.root, skip=("cache.db",))
            self.close = cache.close
        elif name == "joblib":
            joblib = pytest.importorskip("joblib")
            path = os.path.join(self.root, "w.joblib")
            self.save = lambda w: joblib.dump(w, path)
            self.load = lambda: joblib.load(path)
            self.stored_bytes = lambda: os.path.getsize(path)
        elif name == "upstream-tnfr":
            upstream = pytest.importorskip("tnfr.utils.cache")
            level = upstream.CacheLevel.DERIVED_METRICS
            writer = upstream.PersistentTNFRCache(cache_dir=self.root)
            self.save = lambda w: writer.set_persistent("w", w, level, set())
            # A fresh instance has an empty memory tier, so the value comes from its file.
            self.load = lambda: upstream.PersistentTNFRCache(cache_dir=self.root).get_persistent("w", level)
            self.stored_bytes = lambda: _value_file_bytes(self.root)
        else:
            raise ValueError(f"unknown subject {name!r}")


def _label(n, kind):
    return f"{n * n * 8 // 1_000_000}MB-{kind}"


def _run(benchmark, subject, group, w, fn):
    benchmark.group = group
    benchmark.extra_info["subject"] = subject.name
    benchmark.extra_info["nbytes"] = w.nbytes
    rounds = 3 if w.nbytes > 50_000_000 else 10
    result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    stored = subject.stored_bytes()
    benchmark.extra_info["stored_bytes"] = stored
    benchmark.extra_info["ratio"] = round(w.nbytes / stored, 2)
    return result


# gzip runs at ~40 MB/s on dense floats (PERFORMANCE.md, lesson 4): seconds per round at
# 128 MB, and nobody should pick it for matrices that size, so it is measured at 8 MB only.
CASES = [
    pytest.param(name, n, kind, id=f"{_label(n, kind)}-{name}")
    for n, kind in MATRICES
    for name in SUBJECTS
    if not (name == "ours-gzip" and n > 1000)
]


@pytest.fixture
def subject(request, tmp_path):
    root = tempfile.mkdtemp(prefix="bench_disk_", dir=os.environ.get("TNFR_BENCH_DISK_DIR") or tmp_path)
    made = Subject(request.param, root)
    yield made
    made.close()
    # Deleted before write-back starts, the files cost the next subject no disk I/O.
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("subject,n,kind", CASES, indirect=["subject"])
def test_save(benchmark, make_matrix, subject, n, kind):
    w = make_matrix(n, kind)
    _run(benchmark, subject, f"disk-save-{_label(n, kind)}", w, lambda: subject.save(w))
    # test_load checks what a save wrote; reading 128 MB back here would double the smoke run.
    assert subject.stored_bytes() > 0


@pytest.mark.parametrize("subject,n,kind", CASES, indirect=["subject"])
def test_load(benchmark, make_matrix, subject, n, kind):
    w = make_matrix(n, kind)
    subject.save(w)
    got = _run(benchmark, subject, f"disk-load-{_label(n, kind)}", w, subject.load)
    np.testing.assert_array_equal(got, w)
