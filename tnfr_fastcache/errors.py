"""The library's exceptions.

Every error is a :class:`FastCacheError` and also the builtin a caller would catch
without knowing this library (``ValueError`` for bad bytes or arguments, ``TypeError``
for unhashable keys, ``ConnectionError`` for an unreachable backend, ...).
"""

__all__ = [
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
]


class FastCacheError(Exception):
    """Base class of every exception raised by tnfr_fastcache."""


class InvalidArgumentError(FastCacheError, ValueError):
    """An argument has a value the function does not accept (names the value and what was expected)."""


class FrameError(FastCacheError, ValueError):
    """A frame is truncated, malformed or of an unknown version; the message says which field."""


class ChecksumError(FrameError):
    """A frame's header or one of its chunks does not match its stored checksum."""


class SignatureError(FrameError):
    """A frame's HMAC is missing or does not match the configured secret."""


class UnhashableKeyError(FastCacheError, TypeError):
    """A key argument has a type the fingerprint does not know how to digest."""


class ValueTooLargeError(FastCacheError, ValueError):
    """A value is larger than the cache's whole budget, so it cannot be stored."""


class BackendUnavailable(FastCacheError, ConnectionError):
    """A backend (Redis server, disk directory) cannot be reached right now."""


class BackendError(FastCacheError, OSError):
    """A backend failed for a reason other than reachability (disk full, permission denied, ...)."""


class UnsafePickleError(FastCacheError, PermissionError):
    """A pickled value came from a shared backend without a signature and ``allow_pickle`` is off."""


class CacheKeyError(FastCacheError, KeyError):
    """A key is not in the cache (raised by mapping-style access such as ``cache[key]``)."""
