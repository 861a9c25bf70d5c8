"""tnfr_fastcache: a Cython-optimized cache for TNFR computations.

Tiers (memory, disk, Redis, or stacked), a zero-copy checksummed frame codec for numpy
arrays, stable content fingerprints of call arguments, a decorator, and telemetry.

Public names are imported on first use (PEP 562), so ``import tnfr_fastcache`` stays
cheap and the Redis and Prometheus extras are only needed by the code that uses them.
"""

import importlib

from .backends.base import MISSING
from .errors import (
    BackendError,
    BackendUnavailable,
    CacheKeyError,
    ChecksumError,
    FastCacheError,
    FrameError,
    InvalidArgumentError,
    SignatureError,
    UnhashableKeyError,
    UnsafePickleError,
    ValueTooLargeError,
)
from .levels import CacheLevel

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "dumps": "serialize",
    "loads": "serialize",
    "frame_info": "serialize",
    "verify_frame": "serialize",
    "fingerprint": "keys",
    "fingerprint_hex": "keys",
    "register_fingerprint": "keys",
    "Prehashed": "keys",
    "DIGEST_VERSION": "keys",
    "LRUCache": "lru",
    "TNFRHierarchicalCache": "backends.memory",
    "PersistentTNFRCache": "backends.disk",
    "CompressedPersistentCache": "backends.disk",
    "RedisCache": "backends.redis",
    "TieredCache": "backends.tiered",
    "cache_tnfr_computation": "decorator",
    "cached": "decorator",
    "invalidate_function_cache": "decorator",
    "get_global_cache": "decorator",
    "set_global_cache": "decorator",
    "reset_global_cache": "decorator",
    "GraphChangeTracker": "decorator",
    "track_node_property_update": "decorator",
    "CacheMetrics": "telemetry",
    "export_metrics_to_prometheus": "prometheus",
    "start_metrics_server": "prometheus",
}

__all__ = [
    "CacheLevel",
    "MISSING",
    "FastCacheError",
    "FrameError",
    "ChecksumError",
    "SignatureError",
    "UnhashableKeyError",
    "ValueTooLargeError",
    "InvalidArgumentError",
    "BackendUnavailable",
    "BackendError",
    "UnsafePickleError",
    "CacheKeyError",
    "IMPLEMENTATION",
    *_LAZY,
]


def __getattr__(name):
    if name == "IMPLEMENTATION":
        from ._impl import implementation

        value = implementation()
    elif name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'tnfr_fastcache' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
