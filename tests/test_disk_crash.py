"""Writers killed with SIGKILL at random moments never leave a key reading as a wrong value.

Hundreds of forked writer processes run a mixed workload (set, replace, delete, invalidate,
with a byte budget forcing evictions) on one directory and are killed at random points:
inside a file write, between the rename and the index commit, inside the commit, between
the commit and the unlinks. Afterwards every key reads as one of the full values written
for it, or as absent; ``verify`` finds nothing but leftovers of interrupted writes, and
``gc`` removes those.

The workload helpers are shared with ``test_disk_concurrency.py``.
"""

import os
import random
import signal
import sys
import time
import traceback

import numpy as np
import pytest

from tnfr_fastcache import CacheLevel
from tnfr_fastcache.backends.disk import CompressedPersistentCache

D = CacheLevel.DERIVED_METRICS
KEYS = 24
# Element counts per key class: small pickled, medium, and large enough (16 MB) that a kill
# often lands in the middle of writing the file.
SIZES = (3, 20_000, 400_000, 2_000_000)
BUDGET_MB = 40


def make_value(key, version):
    """The value written for ``key`` at ``version``; element 0 carries the version."""
    size = SIZES[key % len(SIZES)]
    if size < 10:
        return {"key": key, "version": version, "data": [float(version)] * size}
    value = np.random.default_rng(key * 1_000_003 + version).random(size)
    value[0] = version
    return value


def check_value(key, value):
    """Raise AssertionError unless ``value`` is absent or exactly a value written for ``key``."""
    if value is None:
        return
    version = int(value["version"] if isinstance(value, dict) else value[0])
    expected = make_value(key, version)
    if isinstance(expected, dict):
        assert value == expected, f"key {key}: got {value!r}"
    else:
        assert isinstance(value, np.ndarray) and value.shape == expected.shape, f"key {key}: wrong shape"
        assert np.array_equal(value, expected), f"key {key}: wrong content for version {version}"


def workload_step(tier, rng):
    """One random operation on ``tier``; reads are checked."""
    key = rng.randrange(KEYS)
    op = rng.random()
    if op < 0.55:
        tier.set(key, make_value(key, rng.randrange(1_000_000)), D, dependencies={f"dep{key % 3}"})
    elif op < 0.85:
        check_value(key, tier.get(key, D))
    elif op < 0.95:
        tier.delete(key, D)
    else:
        tier.invalidate_by_dependency(f"dep{rng.randrange(3)}")


def run_child(body):
    """In a forked child: run ``body()``, exit 0, or print the error and exit 1."""
    try:
        body()
        code = 0
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        code = 1
    sys.stderr.flush()
    os._exit(code)


def fork(body):
    pid = os.fork()
    if pid == 0:
        run_child(body)
    return pid


def check_directory(root):
    """Every key reads as a full value or absent; only leftovers of killed writes remain."""
    with CompressedPersistentCache(root, orphan_grace=0) as tier:
        for key in range(KEYS):
            check_value(key, tier.get(key, D))
        assert tier.get_stats()["corrupt"] == 0
        problems = tier.verify()
        assert all(("orphan" in p or "unfinished" in p) for _, p in problems), problems
        total = tier.get_stats()["disk_size_bytes"]
        assert tier._index.recount() == total
        tier.gc()
        assert tier.verify() == []
        on_disk = sum(os.path.getsize(e.path) for e in tier.entries())
        assert on_disk == tier.get_stats()["disk_size_bytes"]
        if tier.max_disk_bytes is not None:
            assert on_disk <= tier.max_disk_bytes
        return len(tier), len(problems)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_writers_at_random_moments(tmp_path):
    CompressedPersistentCache(tmp_path, max_disk_mb=BUDGET_MB).close()
    rng = random.Random(1234)
    kills = 0
    deadline = time.monotonic() + 40
    while kills < 300 and time.monotonic() < deadline:
        seed = rng.randrange(1 << 30)

        def writer():
            tier = CompressedPersistentCache(tmp_path, max_memory_mb=None)
            step_rng = random.Random(seed)
            while True:
                workload_step(tier, step_rng)

        pid = fork(writer)
        time.sleep(rng.uniform(0.0, 0.06))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
            f"writer {pid} ended by itself (status {status}): see its traceback above"
        )
        kills += 1
        if kills % 50 == 0:
            check_directory(tmp_path)
    assert kills >= 100
    live, _ = check_directory(tmp_path)
    assert live > 0
