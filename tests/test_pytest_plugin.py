"""The ``fastcache`` fixture, run in real pytest sessions through pytester."""

import os
from importlib import metadata
from pathlib import Path

import pytest

import tnfr_fastcache

pytest_plugins = ["pytester"]


def _entry_point():
    for ep in metadata.entry_points(group="pytest11"):
        if ep.value == "tnfr_fastcache.pytest_plugin":
            return ep
    return None


@pytest.fixture
def run(pytester, monkeypatch):
    """Run pytest in a subprocess, loading the plugin the way an installed package does."""
    # the subprocess imports this checkout even when it is not installed
    root = str(Path(tnfr_fastcache.__file__).parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    extra = () if _entry_point() else ("-p", "tnfr_fastcache.pytest_plugin")

    def run(*args):
        return pytester.runpytest_subprocess(*extra, *args)

    return run


def test_installed_package_declares_the_pytest11_entry_point():
    ep = _entry_point()
    assert ep is not None, "pip install the package: the pytest11 entry point is part of its metadata"
    assert ep.load().fastcache is not None

TEST_FILE = """
import os
import numpy as np

COUNTER = os.environ["FASTCACHE_COUNTER"]

def build():
    with open(COUNTER, "a") as fh:
        fh.write("x")
    return np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000)

def test_matrix(fastcache):
    W = fastcache.get_or_compute("matrix", build, key=(1000, os.environ.get("DATA_VERSION", "v1")))
    assert W.shape == (1000, 1000) and W[999, 999] == 999_999.0
"""


def _builds(counter):
    return len(counter.read_text()) if counter.exists() else 0


def test_value_survives_between_sessions_and_key_change_recomputes(pytester, run, monkeypatch, tmp_path):
    counter = tmp_path / "builds"
    monkeypatch.setenv("FASTCACHE_COUNTER", str(counter))
    pytester.makepyfile(test_matrix=TEST_FILE)

    run().assert_outcomes(passed=1)
    assert _builds(counter) == 1
    run().assert_outcomes(passed=1)
    assert _builds(counter) == 1, "second session must reuse the stored matrix"

    monkeypatch.setenv("DATA_VERSION", "v2")
    run().assert_outcomes(passed=1)
    assert _builds(counter) == 2, "a new key is a new value"
    run().assert_outcomes(passed=1)
    assert _builds(counter) == 2

    run("--fastcache-clear").assert_outcomes(passed=1)
    assert _builds(counter) == 3, "--fastcache-clear empties the store"


def test_store_lives_under_pytest_cache_dir_or_given_dir(pytester, run, monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCACHE_COUNTER", str(tmp_path / "builds"))
    pytester.makepyfile(test_matrix=TEST_FILE)
    run().assert_outcomes(passed=1)
    assert (pytester.path / ".pytest_cache" / "d" / "tnfr_fastcache").is_dir()

    elsewhere = tmp_path / "store"
    run(f"--fastcache-dir={elsewhere}").assert_outcomes(passed=1)
    assert any(elsewhere.rglob("*")), "the value is written under --fastcache-dir"


def test_invalidate_removes_only_that_name(tmp_path):
    from tnfr_fastcache.pytest_plugin import FixtureCache

    store = FixtureCache(tmp_path)
    assert store.get_or_compute("a", lambda: 1, key=1) == 1
    assert store.get_or_compute("b", lambda: 2, key=1) == 2
    assert store.invalidate("a") == 1
    assert store.get_or_compute("a", lambda: 10, key=1) == 10
    assert store.get_or_compute("b", lambda: 20, key=1) == 2
    store.close()
