"""The package as users meet it: public names, implementation choice, extras, shipped files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tnfr_fastcache

PACKAGE = Path(tnfr_fastcache.__file__).parent


def test_every_public_name_resolves():
    for name in tnfr_fastcache.__all__:
        assert getattr(tnfr_fastcache, name) is not None, name
    with pytest.raises(AttributeError, match="no_such_name"):
        tnfr_fastcache.no_such_name  # noqa: B018


def test_upstream_names_are_public():
    for name in ("CacheLevel", "TNFRHierarchicalCache", "PersistentTNFRCache", "CompressedPersistentCache",
                 "RedisCache", "cache_tnfr_computation", "CacheMetrics", "export_metrics_to_prometheus"):
        assert name in tnfr_fastcache.__all__


def test_implementation_follows_the_environment():
    if os.environ.get("TNFR_FASTCACHE_PUREPYTHON") == "1":
        assert tnfr_fastcache.IMPLEMENTATION == "python"
    elif os.environ.get("TNFR_FASTCACHE_REQUIRE_COMPILED") == "1":
        assert tnfr_fastcache.IMPLEMENTATION == "cython"
    else:
        assert tnfr_fastcache.IMPLEMENTATION in ("cython", "python")


def test_pure_python_is_forced_in_a_fresh_process():
    env = dict(os.environ, TNFR_FASTCACHE_PUREPYTHON="1")
    env.pop("TNFR_FASTCACHE_REQUIRE_COMPILED", None)
    out = subprocess.run(
        [sys.executable, "-c", "import tnfr_fastcache as t; print(t.IMPLEMENTATION)"],
        env=env, capture_output=True, text=True, check=True, cwd=PACKAGE.parent,
    ).stdout.strip()
    assert out == "python"


@pytest.mark.parametrize(
    "module, missing, extra",
    [("tnfr_fastcache.backends.redis", "redis", "redis"), ("tnfr_fastcache.prometheus", "prometheus_client", "prometheus")],
)
def test_missing_extra_names_what_to_install(module, missing, extra):
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        f"try:\n    import {module}\nexcept ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert f"tnfr_fastcache[{extra}]" in out.stdout


def test_typing_files_ship_with_the_package():
    assert (PACKAGE / "py.typed").exists()
    for name in ("_frame", "_hashing", "_lru"):
        assert (PACKAGE / f"{name}.pyi").exists(), name
        assert (PACKAGE / f"{name}.pyx").exists(), name
    assert (PACKAGE / "_lru.pxd").exists()
