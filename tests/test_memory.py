"""TNFRHierarchicalCache: the tier contract, budgets, GDSF, threads, metrics, upstream parity."""

import threading

import numpy as np
import pytest

from contract import CacheTierContract
from tnfr_fastcache import CacheLevel, InvalidArgumentError, MISSING, TNFRHierarchicalCache
from tnfr_fastcache.telemetry import CacheMetrics

T = CacheLevel.TEMPORARY
D = CacheLevel.DERIVED_METRICS
G = CacheLevel.GRAPH_STRUCTURE
MIB = 1024 * 1024


class TestMemoryContract(CacheTierContract):
    @pytest.fixture(params=["gdsf", "lru"])
    def make_tier(self, request):
        def make(**kwargs):
            kwargs.setdefault("eviction", request.param)
            return TNFRHierarchicalCache(**kwargs)

        return make

    def budget_kwargs(self, nbytes):
        return {"max_memory_mb": nbytes / MIB}


class TestMemoryMetricsOff(CacheTierContract):
    @pytest.fixture
    def make_tier(self):
        def make(**kwargs):
            return TNFRHierarchicalCache(enable_metrics=False, **kwargs)

        return make
