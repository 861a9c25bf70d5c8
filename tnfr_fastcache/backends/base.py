"""The interface every tier offers: memory, disk, Redis, and the tiered stack of them.

The decorator and :class:`~tnfr_fastcache.backends.tiered.TieredCache` use nothing else,
and ``tests/contract.py`` checks every tier against it.

Keys are any value :func:`tnfr_fastcache.fingerprint` accepts (the memory tier accepts any
hashable); a key lives in one level, so ``("k", GRAPH_STRUCTURE)`` and ``("k", TEMPORARY)``
are two entries. Levels may be given as :class:`CacheLevel` members or their string values.
"""

import abc
from typing import Any, NamedTuple

from ..levels import CacheLevel

__all__ = ["CacheTier", "Entry", "MISSING", "DEFAULT_LEVEL"]

DEFAULT_LEVEL = CacheLevel.DERIVED_METRICS


class _Missing:
    """The miss sentinel, so that ``None`` is a value like any other."""

    __slots__ = ()

    def __repr__(self):
        return "MISSING"

    def __reduce__(self):
        return "MISSING"


MISSING = _Missing()


class Entry(NamedTuple):
    """A stored value with what promotion into another tier needs to keep."""

    value: Any
    dependencies: frozenset
    computation_cost: float
    expires_at: "float | None"  # time.time() seconds, None for no expiry


class CacheTier(abc.ABC):
    """One storage tier.

    Subclasses set ``tier_name`` (``"memory"``, ``"disk"``, ``"redis"`` or ``"tiered"``)
    and ``metrics`` (a :class:`~tnfr_fastcache.telemetry.CacheMetrics`, their own or one
    passed in), and implement the abstract methods.
    """

    tier_name = "tier"

    @abc.abstractmethod
    def lookup(self, key, level=DEFAULT_LEVEL, *, copy=False):
        """Return the :class:`Entry` stored under ``(key, level)``, or None on a miss.

        Expired and corrupt entries are misses. Arrays in the value are read-only unless
        ``copy=True`` asks for a private writeable copy.
        """

    def get(self, key, level=DEFAULT_LEVEL, default=None, *, copy=False):
        """Return the value stored under ``(key, level)``, or ``default`` on a miss."""
        entry = self.lookup(key, level, copy=copy)
        return default if entry is None else entry.value

    @abc.abstractmethod
    def set(self, key, value, level=DEFAULT_LEVEL, dependencies=(), computation_cost=1.0, ttl=None):
        """Store ``value``; return True if stored, False if refused as larger than the budget.

        ``dependencies`` are names (``"graph_topology"``) that
        :meth:`invalidate_by_dependency` removes the entry by; ``ttl`` is in seconds.
        """

    @abc.abstractmethod
    def delete(self, key, level=DEFAULT_LEVEL):
        """Remove ``(key, level)``; return True if it was present."""

    @abc.abstractmethod
    def invalidate_by_dependency(self, dependency):
        """Remove every entry that names ``dependency``; return how many were removed."""

    @abc.abstractmethod
    def invalidate_level(self, level):
        """Remove every entry of ``level``; return how many were removed."""

    @abc.abstractmethod
    def clear(self):
        """Remove every entry of this cache (and only this cache's)."""

    @abc.abstractmethod
    def get_stats(self):
        """Return a dict of counters (at least hits, misses, hit_rate, evictions, invalidations)."""

    @abc.abstractmethod
    def __len__(self):
        """Number of live entries."""

    def __contains__(self, item):
        key, level = item
        return self.lookup(key, level) is not None

    def close(self):
        """Release connections and file handles; the default has none."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
