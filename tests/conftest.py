"""Shared fixtures. The whole suite runs once per implementation (compiled, then
``TNFR_FASTCACHE_PUREPYTHON=1``); ``implementation`` tells a test which one it is on."""

import pytest

import tnfr_fastcache

# redis_server, redis_url, private_redis_server: a real redis-server on 127.0.0.1.
pytest_plugins = ["redis_server"]


@pytest.fixture(scope="session")
def implementation():
    """``"cython"`` or ``"python"``: which twin the public API is running on."""
    return tnfr_fastcache.IMPLEMENTATION


def pytest_report_header(config):
    from tnfr_fastcache._impl import describe

    return "tnfr_fastcache modules: " + ", ".join(f"{k}={v}" for k, v in describe().items())


@pytest.fixture
def mem():
    """A fresh 64 MB memory tier, closed after the test."""
    cache = tnfr_fastcache.TNFRHierarchicalCache(max_memory_mb=64)
    yield cache
    cache.close()
