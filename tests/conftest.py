"""Shared fixtures. The whole suite runs once per implementation (compiled, then
``TNFR_FASTCACHE_PUREPYTHON=1``); ``implementation`` tells a test which one it is on."""

import pytest

import tnfr_fastcache


@pytest.fixture(scope="session")
def implementation():
    """``"cython"`` or ``"python"``: which twin the public API is running on."""
    return tnfr_fastcache.IMPLEMENTATION


def pytest_report_header(config):
    from tnfr_fastcache._impl import describe

    return "tnfr_fastcache modules: " + ", ".join(f"{k}={v}" for k, v in describe().items())
