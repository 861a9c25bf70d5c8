"""The memory tier: :class:`TNFRHierarchicalCache`, upstream TNFR's cache with a budget that holds.

Compared with ``tnfr.utils.cache.TNFRHierarchicalCache`` (same constructor and methods):

- sizes are real (:func:`tnfr_fastcache.sizing.sizeof`: ``nbytes`` of arrays, recursive
  estimates of containers), the byte budget is never exceeded, and a value larger than the
  whole budget is refused (``set`` returns False, counted as ``rejected``) instead of
  evicting everything else;
- eviction is O(log n) (``"gdsf"``) or O(1) (``"lru"``) per entry, in the compiled index,
  instead of a sort of every entry on each overflowing insert;
- invalidation by dependency or level costs O(entries removed);
- one lock makes it safe to share between threads;
- stored arrays cannot be corrupted by callers (see :meth:`TNFRHierarchicalCache.set`).

Telemetry goes to a :class:`~tnfr_fastcache.telemetry.CacheMetrics`. Hits and misses are
counted exactly, and about one in ``metrics_sample_every`` (16) timed and bucketed, in the
compiled index (no Python call per lookup; see ``_lru.TierIndex`` for the sampling rule),
and, with the other counters, merged into the metrics in batches: at most ``metrics_flush_interval`` seconds
late while the cache is in use, and at once on :meth:`~TNFRHierarchicalCache.get_stats`,
:meth:`~TNFRHierarchicalCache.flush_metrics` and :meth:`~TNFRHierarchicalCache.close`.
The metrics' ``hit_times`` / ``miss_times`` samples are not filled by this tier (its
histograms and percentiles are).
"""

import copy as _copy
import math
import sys
import threading
import time
import types

import numpy as np

from .. import sizing
from .._impl import load
from ..errors import InvalidArgumentError, UnhashableKeyError
from ..levels import CacheLevel, as_level
from ..telemetry import LATENCY_BUCKETS, CacheMetrics
from .base import DEFAULT_LEVEL, CacheTier, Entry

__all__ = ["TNFRHierarchicalCache", "EVICTION_POLICIES"]

_lru = load("_lru")

EVICTION_POLICIES = ("gdsf", "lru")
_MIB = 1024 * 1024
_LEVELS = tuple(CacheLevel)
_LEVEL_PARTS = {}
for _part, _member in enumerate(_LEVELS):
    _LEVEL_PARTS[_member.value] = _part
    _LEVEL_PARTS[_member.name] = _part
del _part, _member
_NO_DEPS = frozenset()
_IMMUTABLE = frozenset({int, float, bool, complex, str, bytes, type(None)})
_FREEZE_DEPTH = 4
_SCALAR_SIZES = {cls: sys.getsizeof for cls in (int, bool, complex, str, bytes, type(None))}
_SCALAR_SIZES[float] = sys.getsizeof(0.0)


def _resolve_level(level):
    """Partition of a level spelled in a way the index's table lacks (upstream's members)."""
    return _LEVEL_PARTS[as_level(level).value]


def _level_table():
    """Spellings the hot path matches without a call: values, names, and upstream TNFR's
    own ``CacheLevel`` members when ``tnfr`` is already imported (its users pass them)."""
    table = dict(_LEVEL_PARTS)
    upstream = sys.modules.get("tnfr.utils.cache")
    for member in getattr(getattr(upstream, "CacheLevel", None), "__members__", {}).values():
        value = getattr(member, "value", None)
        if value in _LEVEL_PARTS:
            table[member] = _LEVEL_PARTS[value]
    return table


def _freeze(value, depth=0):
    """``value`` as stored: arrays become read-only private copies (an array that is already
    read-only and owns its data is kept as is); tuples, lists and dicts holding arrays are
    rebuilt around frozen copies, to ``_FREEZE_DEPTH`` levels."""
    cls = type(value)
    if cls in _IMMUTABLE:
        return value
    if isinstance(value, np.ndarray):
        if value.flags.owndata and not value.flags.writeable:
            return value
        frozen = value.copy(order="K")
        frozen.flags.writeable = False
        return frozen
    if depth >= _FREEZE_DEPTH:
        return value
    if cls is tuple or cls is list:
        items = [_freeze(item, depth + 1) for item in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return cls(items)
    if cls is dict:
        items = {k: _freeze(v, depth + 1) for k, v in value.items()}
        if all(items[k] is v for k, v in value.items()):
            return value
        return items
    return value


def _private_copy(value):
    """A copy the caller may change (``copy=True``): writeable arrays, copied containers."""
    if type(value) in _IMMUTABLE:
        return value
    if isinstance(value, np.ndarray):
        return value.copy(order="K")
    return _copy.deepcopy(value)


def _check_dependencies(dependencies):
    if dependencies is None:
        return _NO_DEPS
    if isinstance(dependencies, (str, bytes)):
        raise InvalidArgumentError(
            f"dependencies must be a collection of names such as {{'graph_topology'}}, "
            f"not the single {type(dependencies).__name__} {dependencies!r}"
        )
    try:
        deps = frozenset(dependencies)
    except TypeError as exc:
        raise InvalidArgumentError(
            f"dependencies must be an iterable of hashable names, not {dependencies!r}"
        ) from exc
    return deps if deps else _NO_DEPS


def _check_cost(cost):
    if isinstance(cost, bool) or not isinstance(cost, (int, float, np.number)):
        raise InvalidArgumentError(f"computation_cost must be a number, not {cost!r}")
    cost = float(cost)
    if not (cost >= 0.0 and math.isfinite(cost)):
        raise InvalidArgumentError(f"computation_cost must be finite and >= 0, not {cost!r}")
    return cost


def _check_ttl(ttl):
    if ttl is None:
        return 0.0
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float, np.number)):
        raise InvalidArgumentError(f"ttl must be a number of seconds or None, not {ttl!r}")
    ttl = float(ttl)
    if not (ttl > 0.0 and math.isfinite(ttl)):
        raise InvalidArgumentError(f"ttl must be a finite number of seconds > 0, not {ttl!r}")
    return time.time() + ttl


class TNFRHierarchicalCache(CacheTier):
    """In-memory cache of TNFR computations by level, with dependency-aware invalidation.

    Parameters
    ----------
    max_memory_mb : float, default 512
        Byte budget in MiB (2**20 bytes, as upstream). Never exceeded: entries are evicted
        to make room, and a value larger than the whole budget is refused.
    enable_metrics : bool, default True
        Record hits, misses, latencies, sets, evictions and sizes into ``metrics``. When
        False nothing is timed or recorded (``get_stats`` still counts hits and misses).
    eviction : {"gdsf", "lru"}, default "gdsf"
        ``"gdsf"`` (greedy-dual-size-frequency) keeps what is expensive to recompute,
        often used and small: priority = clock + hits * computation_cost / size.
        ``"lru"`` evicts the least recently used.
    metrics : CacheMetrics, optional
        Where to record (shared by several caches, for instance); a new one by default.
    max_entries : int, optional
        Also cap the number of entries.
    getsizeof : callable, optional
        ``getsizeof(value) -> int`` bytes, replacing :func:`tnfr_fastcache.sizing.sizeof`.
    metrics_flush_interval : float, default 0.25
        Longest delay, in seconds of use, before counted events reach ``metrics`` (checked
        at sets and timed lookups).
    metrics_sample_every : int, default 16
        ``get`` times about one lookup in this many (1: every one), as two clock reads per
        call would cost more than half of a hit. Hits, misses and saved cost stay exact;
        latency means and percentiles come from the timed lookups, chosen deterministically
        but not periodically, so they stay representative.

    Examples
    --------
    >>> from tnfr_fastcache import CacheLevel
    >>> cache = TNFRHierarchicalCache(max_memory_mb=128)
    >>> cache.set("coherence_global", 0.95, CacheLevel.DERIVED_METRICS,
    ...           dependencies={"graph_topology", "all_node_vf"}, computation_cost=100.0)
    True
    >>> cache.get("coherence_global", CacheLevel.DERIVED_METRICS)
    0.95
    >>> cache.invalidate_by_dependency("graph_topology")
    1
    >>> cache.get("coherence_global", "derived_metrics") is None
    True
    """

    tier_name = "memory"

    def __init__(self, max_memory_mb=512, enable_metrics=True, eviction="gdsf", metrics=None,
                 *, max_entries=None, getsizeof=None, metrics_flush_interval=0.25,
                 metrics_sample_every=16):
        if isinstance(max_memory_mb, bool) or not isinstance(max_memory_mb, (int, float)):
            raise InvalidArgumentError(f"max_memory_mb must be a number, not {max_memory_mb!r}")
        max_bytes = int(max_memory_mb * _MIB) if math.isfinite(max_memory_mb) else 0
        if max_bytes < 1:
            raise InvalidArgumentError(
                f"max_memory_mb must be a finite number > 0, not {max_memory_mb!r}"
            )
        if eviction not in EVICTION_POLICIES:
            raise InvalidArgumentError(f"eviction must be one of {EVICTION_POLICIES}, not {eviction!r}")
        if metrics is not None and not isinstance(metrics, CacheMetrics):
            raise InvalidArgumentError(f"metrics must be a CacheMetrics or None, not {metrics!r}")
        if getsizeof is not None and not callable(getsizeof):
            raise InvalidArgumentError(f"getsizeof must be callable or None, not {getsizeof!r}")
        if isinstance(metrics_flush_interval, bool) or not (
            isinstance(metrics_flush_interval, (int, float)) and metrics_flush_interval >= 0
        ):
            raise InvalidArgumentError(
                f"metrics_flush_interval must be a number of seconds >= 0, not {metrics_flush_interval!r}"
            )
        if isinstance(metrics_sample_every, bool) or not (
            isinstance(metrics_sample_every, int) and 1 <= metrics_sample_every <= 1 << 30
        ):
            raise InvalidArgumentError(
                f"metrics_sample_every must be an int in [1, 2**30], not {metrics_sample_every!r}"
            )
        self.metrics = metrics if metrics is not None else CacheMetrics()
        self.eviction = eviction
        self._enable_metrics = bool(enable_metrics)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._deps = {}  # dependency -> {(part, key): the entry's frozenset of dependencies}
        self._invalidations = [0] * len(_LEVELS)
        self._expired = [0] * len(_LEVELS)
        # What the metrics have been given so far, to send only the difference.
        self._flushed = self._zero_flushed()
        hooks = types.SimpleNamespace(
            resolve_level=_resolve_level,
            copier=_private_copy,
            on_expired=self._drop_expired,
            flush=self.flush_metrics,
            freeze=_freeze,
            sizeof=getsizeof if getsizeof is not None else sizing.sizeof,
            check_cost=_check_cost,
            check_ttl=_check_ttl,
            check_dependencies=_check_dependencies,
            no_dependencies=_NO_DEPS,
            # what sizing.sizeof would say, without its call; a getsizeof hook sees every value
            scalar_sizes={} if getsizeof is not None else _SCALAR_SIZES,
            view_types=(np.ndarray,),
        )
        self._index = _lru.TierIndex(
            levels=_LEVELS,
            level_parts=_level_table(),
            default_part=_LEVELS.index(DEFAULT_LEVEL),
            hooks=hooks,
            deps_index=self._deps,
            lock=self._lock,
            bounds=LATENCY_BUCKETS if self._enable_metrics else None,
            flush_interval=float(metrics_flush_interval),
            sample_every=metrics_sample_every,
            max_bytes=max_bytes,
            max_entries=max_entries,
            policy=eviction,
            nparts=len(_LEVELS),
        )
        if self._enable_metrics:
            # readers of the metrics (get_summary, report, a Prometheus scrape) see every count
            self.metrics.register_flush(self.flush_metrics)
        # The hot paths: bound methods of the compiled index, no Python frame in between.
        self.get = self._index.tier_get
        self.set = self._index.tier_set

    # -- reading ------------------------------------------------------------------------

    def get(self, key, level=DEFAULT_LEVEL, default=None, *, copy=False):
        """Return the value under ``(key, level)``, or ``default`` (None, as upstream) on a miss.

        Arrays come back as read-only views (``writeable=False``, and numpy refuses to turn
        it back on); ``copy=True`` returns a private, writeable copy instead. Arrays inside
        containers are read-only too (their flag could be forced back on: do not). Pass ``default=MISSING`` to tell a stored None from a miss.
        (Instances bind ``get`` straight to the compiled index; this is the same call.)
        """
        return self._index.tier_get(key, level, default, copy=copy)

    def lookup(self, key, level=DEFAULT_LEVEL, *, copy=False):
        """Return the :class:`~tnfr_fastcache.backends.base.Entry` under ``(key, level)``, or None."""
        part = self._index.part_of(level)
        started = time.perf_counter()
        with self._lock:
            found = self._index.part_lookup(part, key, True)
            expired = found is None and self._index.ttl_used and self._index.part_expired(part, key)
        if found is None:
            self._index.record_lookup(part, False, time.perf_counter() - started)
            if expired:
                self._drop_expired(part, key)
            return None
        value, deps, cost, expires = found
        if copy:
            value = _private_copy(value)
        elif isinstance(value, np.ndarray):
            value = value.view()
        self._index.record_lookup(part, True, time.perf_counter() - started, cost)
        return Entry(value, deps, cost, expires if expires else None)

    def __contains__(self, item):
        key, level = item
        part = self._index.part_of(level)
        with self._lock:
            return self._index.part_lookup(part, key, False) is not None

    def __len__(self):
        with self._lock:
            self._purge_expired()
            return len(self._index)

    # -- writing ------------------------------------------------------------------------

    def set(self, key, value, level=DEFAULT_LEVEL, dependencies=(), computation_cost=1.0, ttl=None):
        """Store ``value`` under ``(key, level)``; return False if it is larger than the budget.

        (Instances bind ``set`` straight to the compiled index; this is the same call.)

        Parameters
        ----------
        key : hashable
        value : object
            Arrays are stored as read-only private copies, so changing the caller's array
            afterwards does not change the cached value; an array that is already read-only
            and owns its data is stored without a copy (do not make it writeable again).
            Tuples, lists and dicts holding arrays are rebuilt around such copies; other
            objects are stored as they are (do not mutate them after storing).
        level : CacheLevel or str
        dependencies : iterable of hashable
            Names that :meth:`invalidate_by_dependency` removes this entry by.
        computation_cost : float
            What recomputing costs (>= 0); ``"gdsf"`` keeps costly entries longer.
        ttl : float, optional
            Seconds until the entry expires.

        Returns
        -------
        bool
            True if stored. False if the value alone exceeds the budget: it is not stored,
            an older value under the same key and level is removed (it would be stale),
            and ``rejected`` is counted.
        """
        return self._index.tier_set(key, value, level, dependencies, computation_cost, ttl)

    def delete(self, key, level=DEFAULT_LEVEL):
        """Remove ``(key, level)``; return True if it was present."""
        part = self._index.part_of(level)
        with self._lock:
            record = self._index.part_remove(part, key)
            if record is None:
                return False
            self._index.forget([record])
            return True

    def invalidate_by_dependency(self, dependency):
        """Remove every entry that names ``dependency``; return how many were removed.

        Costs O(entries removed), whatever the size of the cache.
        """
        with self._lock:
            try:
                entries = self._deps.pop(dependency, None)
            except TypeError:
                raise UnhashableKeyError(
                    f"dependency {dependency!r} of type {type(dependency).__name__} is not hashable"
                ) from None
            if not entries:
                return 0
            counts = self._index.invalidate_entries(entries, dependency)
            for part, count in enumerate(counts):
                self._invalidations[part] += count
            return sum(counts)

    def invalidate_level(self, level):
        """Remove every entry of ``level``; return how many were removed."""
        part = self._index.part_of(level)
        with self._lock:
            removed = self._index.invalidate_part(part)
            self._invalidations[part] += removed
            return removed

    def _drop_expired(self, part, key):
        """Remove ``(part, key)`` if it has expired (called by lookups that met it)."""
        with self._lock:
            if self._index.part_expired(part, key):
                self._remove_expired([(part, key)])

    def _purge_expired(self):
        """Remove every expired entry. Caller holds the lock."""
        if self._index.ttl_used:
            self._remove_expired([(part, key) for part, key, _ in self._index.expired_records()])

    def _remove_expired(self, where):
        for part, key in where:
            record = self._index.part_remove(part, key)
            if record is not None:
                self._index.forget([record])
                self._expired[part] += 1

    def clear(self):
        """Remove every entry and reset the counters (as upstream does)."""
        self.flush_metrics()
        with self._lock:
            sizes = [self._index.part_bytes(p) for p in range(len(_LEVELS))]
            self._index.clear()
            self._index.reset_counters()
            self._deps.clear()
            self._invalidations = [0] * len(_LEVELS)
            self._expired = [0] * len(_LEVELS)
            # the metrics were given the sizes just dropped: tell them they are gone
            self._flushed = self._zero_flushed()
            self._flushed["size"] = sizes
        self.flush_metrics()

    # -- telemetry ----------------------------------------------------------------------

    @staticmethod
    def _zero_flushed():
        zeros = [0] * len(_LEVELS)
        return {name: list(zeros) for name in (*_lru.COUNTER_NAMES, "invalidations", "size")}

    def flush_metrics(self):
        """Merge the events counted since the last flush into ``metrics`` now."""
        if not self._enable_metrics:
            return
        latency = self._index.take_latency()
        with self._lock:
            now = self._index.counters()
            now["invalidations"] = [a + b for a, b in zip(self._invalidations, self._expired)]
            now["size"] = [self._index.part_bytes(p) for p in range(len(_LEVELS))]
            before, self._flushed = self._flushed, now
        delta = {name: [a - b for a, b in zip(now[name], before[name])] for name in now}
        self.metrics.merge(_snapshot_delta(delta, latency))

    def flush_dirty_caches(self):
        """Upstream's name for pushing pending work out: here, :meth:`flush_metrics`."""
        self.flush_metrics()

    def close(self):
        """Flush pending metrics (the entries stay until the cache is dropped)."""
        self.flush_metrics()

    def get_stats(self):
        """Counters of this cache (upstream's keys and more).

        Returns
        -------
        dict
            ``hits``, ``misses``, ``hit_rate``, ``evictions``, ``invalidations`` (by dependency
            or level), ``expired``, ``rejected``, ``memory_used_mb``, ``memory_limit_mb`` (MiB),
            ``memory_used_bytes``, ``memory_limit_bytes``, ``entries``, ``entry_counts`` and
            ``size_by_level`` (bytes) keyed by level value, and ``eviction``.
        """
        self.flush_metrics()
        index = self._index
        with self._lock:
            self._purge_expired()
            counts = index.counters()
            hits = sum(counts["hits"])
            misses = sum(counts["misses"])
            used = index.currsize
            return {
                "hits": hits,
                "misses": misses,
                "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
                "evictions": sum(counts["evictions"]),
                "invalidations": sum(self._invalidations),
                "expired": sum(self._expired),
                "rejected": sum(counts["rejected"]),
                "memory_used_mb": used / _MIB,
                "memory_limit_mb": self._max_bytes / _MIB,
                "memory_used_bytes": used,
                "memory_limit_bytes": self._max_bytes,
                "entries": len(index),
                "entry_counts": {lv.value: index.part_len(p) for p, lv in enumerate(_LEVELS)},
                "size_by_level": {lv.value: index.part_bytes(p) for p, lv in enumerate(_LEVELS)},
                "eviction": self.eviction,
            }

    def memory_profile(self):
        """Retained bytes by level and the limit (upstream's method and keys)."""
        with self._lock:
            by_level = {lv.value: self._index.part_bytes(p) for p, lv in enumerate(_LEVELS)}
        return {
            "retained_bytes": sum(by_level.values()),
            "retained_bytes_by_level": by_level,
            "memory_limit_bytes": self._max_bytes,
        }

    def _counter(self, name):
        return sum(self._index.counters()[name])

    @property
    def hits(self):
        """Hits since creation or the last :meth:`clear`."""
        return self._counter("hits")

    @property
    def misses(self):
        """Misses since creation or the last :meth:`clear`."""
        return self._counter("misses")

    @property
    def evictions(self):
        """Entries evicted to stay within the budget."""
        return self._counter("evictions")

    @property
    def invalidations(self):
        """Entries removed by :meth:`invalidate_by_dependency` and :meth:`invalidate_level`."""
        return sum(self._invalidations)

    @property
    def rejected(self):
        """Values refused because they alone exceed the budget."""
        return self._counter("rejected")

    @property
    def max_memory_mb(self):
        """The budget in MiB."""
        return self._max_bytes / _MIB

    def __repr__(self):
        return (
            f"TNFRHierarchicalCache(max_memory_mb={self.max_memory_mb:g}, "
            f"eviction={self.eviction!r}, entries={len(self._index)}, "
            f"used_mb={self._index.currsize / _MIB:.3f})"
        )


def _empty_histogram():
    return {"count": 0, "sum": 0.0, "cost": 0.0, "buckets": [0] * (len(LATENCY_BUCKETS) + 1),
            "min": None, "max": None}


def _snapshot_delta(delta, latency, tier="memory"):
    """Counter differences and latency histograms in the form ``CacheMetrics.merge`` takes."""
    def by_level(counts):
        return {_LEVELS[p].value: n for p, n in enumerate(counts) if n}

    return {
        "buckets": list(LATENCY_BUCKETS),
        "latency": {
            kind: {tier: {_LEVELS[p].value: hist for p, hist in rows.items()}}
            for kind, rows in latency.items()
        },
        "set_latency": {},
        "hash_latency": _empty_histogram(),
        "level_counters": {
            name: {tier: by_level(delta[name])}
            for name in ("sets", "evictions", "evicted_bytes", "invalidations", "rejected")
        },
        "tier_counters": {"bytes_written": {tier: sum(delta["bytes_written"])}},
        "sizes": {tier: by_level(delta["size"])},
        "error_types": {},
        "last_error": {},
    }
