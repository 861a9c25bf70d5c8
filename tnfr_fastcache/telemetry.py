"""Cache telemetry: counters, sizes, and bounded latency histograms.

:class:`CacheMetrics` keeps the upstream TNFR seed's fields and methods (``hits``,
``level_hits``, ``record_hit(level, duration, cost)``, ``get_summary()``, ...), so the
seed's dashboard code runs unchanged, and adds what tuning needs: per-tier and per-level
counters, evictions and invalidations by level, errors, corrupt and rejected values, bytes
written and read, the compression ratio, hashing time, and p50/p95/p99 latencies.

Memory is fixed however long a simulation runs: latencies go into histograms of
:data:`LATENCY_BUCKETS` (log-spaced, 10 per decade) instead of an ever-growing list, and
``hit_times`` / ``miss_times`` hold only the most recent :data:`RECENT_SAMPLES` samples.

Levels may be given as :class:`~tnfr_fastcache.levels.CacheLevel` members or strings (the
value ``"derived_metrics"`` or the name ``"DERIVED_METRICS"``); every per-level dict is
keyed by the level's string value (``"derived_metrics"``), so its keys are plain strings
whatever the callers passed.

Thread safety. ``record_hit`` and ``record_miss`` run on every cache lookup, so they take
no lock: each appends to per-(tier, level) lists with ``list.append``, which is one C call
and therefore atomic under the GIL. The lists are folded into the histograms, in
batches and under a lock, when they reach :data:`_FOLD_AT` items and whenever the metrics
are read. A fold copies the first ``n`` items and then deletes exactly those ``n``; appends
that land in between go after them, so none is lost or counted twice. The other, rarer
events (sets, evictions, errors, ...) update plain counters under the lock.
"""

import collections
import inspect
import math
import numbers
import os
import struct
import sys
import threading
import weakref

import numpy as np

from .errors import InvalidArgumentError
from .levels import as_level

__all__ = ["CacheMetrics", "FRONT_TIERS", "LATENCY_BUCKETS", "RECENT_SAMPLES", "percentile_from_buckets"]

#: Upper bounds (seconds) of the latency histogram buckets: 10 per decade from 100 ns to
#: 1000 s, plus an overflow bucket. Bucket ``i`` counts durations in
#: ``(LATENCY_BUCKETS[i-1], LATENCY_BUCKETS[i]]`` (Prometheus ``le`` semantics).
LATENCY_BUCKETS = tuple(float(f"{10.0 ** (k / 10):.6g}") for k in range(-70, 31))
_BOUNDS = np.array(LATENCY_BUCKETS)
_NBUCKETS = len(LATENCY_BUCKETS) + 1

#: Tiers that front others (outermost first). When one of them records into the same metrics
#: as the tiers below it, a single lookup is recorded once per layer it passes through, so
#: the totals (``hits``, ``hit_rate``, ``level_hits``, ...) count the outermost one only.
FRONT_TIERS = ("decorator", "tiered")

#: How many recent latency samples ``hit_times`` and ``miss_times`` keep.
RECENT_SAMPLES = 1024

# Pending hot-path items (floats) per (tier, level) before they are folded; bounds the
# memory of the lock-free lists and amortizes the fold (numpy) over many records.
_FOLD_AT = 4096

_MIB = 1024 * 1024

# Counters that are kept per (tier, level); the rest are per tier only.
_LEVEL_COUNTERS = ("sets", "evictions", "evicted_bytes", "invalidations", "rejected")
_TIER_COUNTERS = (
    "bytes_written",
    "stored_bytes_written",
    "compressible_bytes_written",
    "reads",
    "bytes_read",
    "stored_bytes_read",
    "errors",
    "corrupt",
)


def _number(value, name):
    """``value`` as a plain int or float (numpy scalars too, so snapshots stay JSON-able).

    Raises InvalidArgumentError for anything else, bools included.
    """
    if value.__class__ is int or value.__class__ is float:
        return value
    if not isinstance(value, bool):
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            return float(value)
    raise InvalidArgumentError(f"{name} must be a number, got {value!r}")


def _level_key(level):
    """The string value of ``level`` (raises InvalidArgumentError for an unknown level)."""
    return as_level(level).value


class _Latency:
    """A fixed-size latency histogram with exact count, sum and extremes."""

    __slots__ = ("count", "total", "cost", "counts", "low", "high", "recent")

    def __init__(self):
        self.count = 0  # events, including those whose duration was unusable
        self.total = 0.0  # sum of the usable durations
        self.cost = 0.0
        self.counts = np.zeros(_NBUCKETS, dtype=np.int64)
        self.low = math.inf
        self.high = -math.inf
        self.recent = collections.deque(maxlen=RECENT_SAMPLES)

    def add_durations(self, durations, samples=None):
        """Add a float64 array of durations (NaN, negative and infinite ones are skipped).

        ``samples``, the same durations as a list of floats, saves converting them back
        for the recent samples when every one is usable.
        """
        usable = durations[np.isfinite(durations) & (durations >= 0.0)]
        if usable.size:
            self.total += float(usable.sum())
            self.counts += np.bincount(np.searchsorted(_BOUNDS, usable), minlength=_NBUCKETS)
            self.low = min(self.low, float(usable.min()))
            self.high = max(self.high, float(usable.max()))
            if samples is not None and usable.size == len(samples):
                self.recent.extend(samples[-RECENT_SAMPLES:])
            else:
                self.recent.extend(usable[-RECENT_SAMPLES:].tolist())

    def merge(self, other):
        self.count += other["count"]
        self.total += other["sum"]
        self.cost += other.get("cost", 0.0)
        self.counts += np.asarray(other["buckets"], dtype=np.int64)
        if other["min"] is not None:
            self.low = min(self.low, other["min"])
            self.high = max(self.high, other["max"])

    def as_dict(self):
        return {
            "count": self.count,
            "sum": self.total,
            "cost": self.cost,
            "buckets": self.counts.tolist(),
            "min": None if self.low == math.inf else self.low,
            "max": None if self.high == -math.inf else self.high,
        }


def _to_float_array(items):
    """``items`` as float64; entries that are not numbers become NaN instead of raising."""
    try:
        # struct unboxes a list of floats several times faster than np.array(list)
        return np.frombuffer(struct.pack(f"{len(items)}d", *items), dtype=np.float64)
    except (struct.error, TypeError, OverflowError):
        out = np.empty(len(items))
        for i, item in enumerate(items):
            try:
                out[i] = float(item)
            except (TypeError, ValueError, OverflowError):
                out[i] = math.nan
        return out


def _sum_finite(values):
    """Sum of the finite numbers in ``values`` (the rest are ignored, never raised on)."""
    try:
        total = float(sum(values))
    except (TypeError, OverflowError):
        total = math.nan
    if math.isfinite(total):
        return total
    array = _to_float_array(values)
    return float(array[np.isfinite(array)].sum())


def _check_snapshot(snap):
    """Refuse, before anything is added, data that is not a :meth:`CacheMetrics.snapshot`."""
    if not isinstance(snap, dict):
        raise InvalidArgumentError(f"expected a CacheMetrics or its snapshot(), got {type(snap).__name__}")
    missing = {"buckets", "latency", "set_latency", "hash_latency", "level_counters",
               "tier_counters", "sizes", "error_types", "last_error"} - set(snap)
    if missing:
        raise InvalidArgumentError(f"not a CacheMetrics snapshot: missing {sorted(missing)}")
    if list(snap["buckets"]) != list(LATENCY_BUCKETS):
        raise InvalidArgumentError("cannot merge a snapshot taken with different latency buckets")
    unknown = (
        (set(snap["latency"]) - {"hit", "miss"})
        | (set(snap["level_counters"]) - set(_LEVEL_COUNTERS))
        | (set(snap["tier_counters"]) - set(_TIER_COUNTERS))
    )
    if unknown:
        raise InvalidArgumentError(f"snapshot has unknown series {sorted(unknown)}")
    histograms = [snap["hash_latency"], *snap["set_latency"].values()]
    for by_tier in snap["latency"].values():
        for by_level in by_tier.values():
            histograms.extend(by_level.values())
    for hist in histograms:
        if len(hist["buckets"]) != _NBUCKETS:
            raise InvalidArgumentError(
                f"a snapshot histogram has {len(hist['buckets'])} buckets, expected {_NBUCKETS}"
            )


def percentile_from_buckets(counts, q, low=None, high=None):
    """Estimate the ``q``-quantile of a :data:`LATENCY_BUCKETS` histogram.

    The bucket holding the rank is found from the cumulative counts and the value is
    interpolated geometrically inside it (buckets are log-spaced), then clamped to the
    observed extremes when given.

    Parameters
    ----------
    counts : sequence of int
        ``len(LATENCY_BUCKETS) + 1`` bucket counts (the last is the overflow bucket), as in
        the ``"buckets"`` of a :meth:`CacheMetrics.snapshot` histogram.
    q : float
        In [0, 1].
    low, high : float, optional
        The smallest and largest value observed.

    Returns
    -------
    float
        Seconds; 0.0 for an empty histogram.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        return 0.0
    rank = q * n
    cumulative = np.cumsum(counts)
    i = int(np.searchsorted(cumulative, max(rank, 1e-12), side="left"))
    i = min(i, _NBUCKETS - 1)
    before = int(cumulative[i - 1]) if i else 0
    in_bucket = int(counts[i])
    lo = _BOUNDS[i - 1] if i else _BOUNDS[0] / 10.0
    hi = _BOUNDS[i] if i < len(_BOUNDS) else _BOUNDS[-1] * 10.0
    if low is not None:
        lo = max(lo, low)
        hi = max(hi if high is None else min(hi, high), lo)
    elif high is not None:
        hi = max(min(hi, high), lo)
    fraction = (rank - before) / in_bucket if in_bucket else 1.0
    fraction = min(max(fraction, 0.0), 1.0)
    value = lo * (hi / lo) ** fraction if lo > 0.0 else lo + (hi - lo) * fraction
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    return float(value)


# Every live CacheMetrics, so that a forked child (multiprocessing's default on Linux) gets
# fresh locks: a lock another parent thread held at fork time would never be released.
_instances = weakref.WeakSet()


def _renew_locks_after_fork():
    for metrics in list(_instances):
        metrics._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_locks_after_fork)


class CacheMetrics:
    """Counters, sizes and latency histograms of one cache (or several sharing it).

    Every tier takes ``metrics=None`` (a fresh instance) or a shared one, and records into
    it with the ``record_*`` methods. Every field below is read-only and computed when read;
    per-level dicts are keyed by the level's string value (``"derived_metrics"``).

    Attributes
    ----------
    hits, misses : int
        Lookups over every level. When a front tier (:data:`FRONT_TIERS`: a
        ``TieredCache`` or the decorator) records into the same metrics as the tiers it
        stacks, one lookup is recorded by every layer it reaches, so these, the per-level
        dicts, ``saved_computation_cost``, the samples and ``get_summary()``'s totals count
        the outermost layer only; ``tier_hits`` and ``tier_misses`` show every tier.
    evictions, invalidations : int
        Totals over every tier and level.
    level_hits, level_misses, level_evictions, level_invalidations : dict of str to int
    total_size_bytes : int
        Sum of the sizes kept with :meth:`adjust_size` (every tier recording here).
    size_by_level : dict of str to int
    saved_computation_cost : float
        Sum of the ``cost`` of every hit: the computation the cache saved.
    hit_times, miss_times : list of float
        The most recent (at most :data:`RECENT_SAMPLES`) hit and miss durations, seconds.

    Examples
    --------
    >>> from tnfr_fastcache import CacheLevel
    >>> metrics = CacheMetrics()
    >>> metrics.record_hit("derived_metrics", 2e-6, cost=5.0)
    >>> metrics.record_miss(CacheLevel.DERIVED_METRICS, 1e-6, tier="memory")
    >>> metrics.get_summary()["hit_rate"]
    0.5
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._reset_state()
        # sources that count on their own and push with merge(): called before every read
        self._flushes = []
        self._pulling = threading.local()
        _instances.add(self)

    def register_flush(self, flush):
        """Have ``flush()`` called before every read of these metrics.

        For a source that counts events itself and pushes them in batches with
        :meth:`merge` (the memory tier counts in its compiled index): readers then always
        see its latest counts. A bound method is held weakly, so registering does not keep
        its cache alive.

        Parameters
        ----------
        flush : callable
            Takes no argument. It may call :meth:`merge` (reads made inside it do not
            call the flushes again). Registering the same one twice has no effect.
        """
        if not callable(flush):
            raise InvalidArgumentError(f"flush must be callable, got {flush!r}")
        if inspect.ismethod(flush):
            ref = weakref.WeakMethod(flush)
        else:
            def ref(flush=flush):
                return flush
        with self._lock:
            if not any(existing() == flush for existing in self._flushes):
                self._flushes.append(ref)

    def _pull(self):
        """Run the registered flushes (outside the lock: they call :meth:`merge`)."""
        if not self._flushes or getattr(self._pulling, "active", False):
            return
        self._pulling.active = True
        try:
            for ref in list(self._flushes):
                flush = ref()
                if flush is None:
                    with self._lock:
                        self._flushes = [r for r in self._flushes if r is not ref]
                else:
                    flush()
        finally:
            self._pulling.active = False

    def _reset_state(self):
        # tier -> {level as passed (CacheLevel value or str) -> pending lists}:
        # (durations, costs) for hits, durations for misses
        self._hit_logs = {}
        self._miss_logs = {}
        # (kind, tier, level) -> _Latency; kind is "hit" or "miss"
        self._latency = {}
        self._set_latency = {}  # tier -> _Latency
        self._hash_latency = _Latency()
        # every pending list once, with the histogram it folds into:
        # (durations, costs or None, _Latency)
        self._hash_log = []
        self._logs = [(self._hash_log, None, self._hash_latency)]
        self._set_logs = {}  # tier -> pending write durations
        self._level_counts = collections.Counter()  # (name, tier, level) -> number
        self._tier_counts = collections.Counter()  # (name, tier) -> number
        self._sizes = collections.Counter()  # (tier, level) -> bytes
        self._error_types = collections.Counter()  # (tier, exception class name) -> number
        self._last_error = {}  # tier -> "ExcType: message"

    # ------------------------------------------------------------------ hot path
    def record_hit(self, level, duration, cost=0.0, *, tier="memory"):
        """Record a hit: ``duration`` seconds, saving ``cost`` units of computation.

        Parameters
        ----------
        level : CacheLevel or str
        duration : float
            Seconds the lookup took. Values that are not finite non-negative numbers are
            counted as hits but left out of the latency statistics.
        cost : float, optional
            The computation cost of the value served (summed in ``saved_computation_cost``).
        tier : str, optional
            The tier that served it (``"memory"``, ``"disk"``, ``"redis"``, ...).
        """
        try:
            durations, costs = self._hit_logs[tier][
                level if level.__class__ is str else level._value_
            ]
        except (KeyError, AttributeError, TypeError):
            durations, costs = self._new_log("hit", tier, level)
        # two single appends are cheaper than one ``+= (duration, cost)``; the two lists
        # are folded independently, so they need not be appended to atomically together
        durations.append(duration)
        costs.append(cost)
        if len(durations) >= _FOLD_AT:
            with self._lock:
                self._fold()

    def record_miss(self, level, duration=0.0, *, tier="memory"):
        """Record a miss that took ``duration`` seconds (see :meth:`record_hit`)."""
        try:
            durations = self._miss_logs[tier][level if level.__class__ is str else level._value_]
        except (KeyError, AttributeError, TypeError):
            durations = self._new_log("miss", tier, level)
        durations.append(duration)
        if len(durations) >= _FOLD_AT:
            with self._lock:
                self._fold()

    def _new_log(self, kind, tier, level):
        """The pending list(s) of ``(kind, tier, level)``, created on first use; validates both.

        A hit has a list of durations and one of costs, a miss only durations.
        """
        if not isinstance(tier, str):
            raise InvalidArgumentError(f"tier must be a str such as 'memory', got {tier!r}")
        key = _level_key(level)
        raw = level if isinstance(level, str) else key
        logs = self._hit_logs if kind == "hit" else self._miss_logs
        with self._lock:
            by_level = logs.setdefault(tier, {})
            log = by_level.get(key)
            if log is None:
                durations, costs = [], [] if kind == "hit" else None
                stats = self._latency.get((kind, tier, key))
                if stats is None:
                    stats = self._latency[kind, tier, key] = _Latency()
                self._logs.append((durations, costs, stats))
                log = by_level[key] = durations if costs is None else (durations, costs)
            # a level name ("DERIVED_METRICS") shares the list(s) of its value
            by_level[raw] = log
        return log

    def _fold(self):
        """Move every pending hot-path item into its histogram. Caller holds the lock."""
        for durations, costs, stats in self._logs:
            n = len(durations)
            m = 0 if costs is None else len(costs)
            if not (n or m):
                continue
            # Copy the first n, then delete exactly those n: only appends race with us,
            # and they land after index n, so nothing is lost or counted twice.
            if m:
                pending_costs = costs[:m]
                del costs[:m]
                stats.cost += _sum_finite(pending_costs)
            if n:
                pending = durations[:n]
                del durations[:n]
                stats.count += n
                stats.add_durations(_to_float_array(pending), pending)

    # ------------------------------------------------------------------ other events
    def record_set(self, level, nbytes, *, tier="memory", stored_nbytes=None, duration=None):
        """Record a value stored: ``nbytes`` raw, ``stored_nbytes`` after compression.

        ``duration`` (seconds), when given, goes into the per-tier write latency histogram.
        """
        key = _level_key(level)
        nbytes = _number(nbytes, "nbytes")
        if stored_nbytes is not None:
            stored_nbytes = _number(stored_nbytes, "stored_nbytes")
        with self._lock:
            self._level_counts["sets", tier, key] += 1
            self._tier_counts["bytes_written", tier] += nbytes
            if stored_nbytes is not None:
                self._tier_counts["stored_bytes_written", tier] += stored_nbytes
                self._tier_counts["compressible_bytes_written", tier] += nbytes
            if duration is not None:
                log = self._set_logs.get(tier)
                if log is None:
                    log = self._set_logs[tier] = []
                    stats = self._set_latency.get(tier)
                    if stats is None:
                        stats = self._set_latency[tier] = _Latency()
                    self._logs.append((log, None, stats))
                log.append(duration)
                if len(log) >= _FOLD_AT:
                    self._fold()

    def record_read(self, nbytes, *, tier, stored_nbytes=None):
        """Record a value read from storage: ``nbytes`` decoded, ``stored_nbytes`` as stored."""
        nbytes = _number(nbytes, "nbytes")
        if stored_nbytes is not None:
            stored_nbytes = _number(stored_nbytes, "stored_nbytes")
        with self._lock:
            self._tier_counts["reads", tier] += 1
            self._tier_counts["bytes_read", tier] += nbytes
            self._tier_counts["stored_bytes_read", tier] += (
                nbytes if stored_nbytes is None else stored_nbytes
            )

    def record_eviction(self, level, count=1, *, tier="memory", nbytes=0):
        """Record ``count`` entries evicted for space, ``nbytes`` in total.

        Sizes are not changed here: the tier reports them with :meth:`adjust_size`.
        """
        key = _level_key(level)
        count = _number(count, "count")
        nbytes = _number(nbytes, "nbytes")
        with self._lock:
            self._level_counts["evictions", tier, key] += count
            self._level_counts["evicted_bytes", tier, key] += nbytes

    def record_invalidation(self, level, count=1, *, tier="memory"):
        """Record ``count`` entries removed by invalidation (dependency, level or TTL)."""
        key = _level_key(level)
        count = _number(count, "count")
        with self._lock:
            self._level_counts["invalidations", tier, key] += count

    def record_rejected(self, level, *, tier="memory"):
        """Record a value refused because it is larger than the tier's whole budget."""
        key = _level_key(level)
        with self._lock:
            self._level_counts["rejected", tier, key] += 1

    def record_error(self, *, tier, exc=None):
        """Record a tier failure (caught and treated as a miss); keeps the last message."""
        with self._lock:
            self._tier_counts["errors", tier] += 1
            if exc is not None:
                name = type(exc).__name__
                self._error_types[tier, name] += 1
                self._last_error[tier] = f"{name}: {exc}"

    def record_corrupt(self, *, tier):
        """Record an entry found corrupt (bad checksum or frame) and dropped."""
        with self._lock:
            self._tier_counts["corrupt", tier] += 1

    def record_hash_time(self, duration):
        """Record the seconds spent fingerprinting one call's arguments.

        Lock-free like :meth:`record_hit`: the decorator calls it on every call.
        """
        log = self._hash_log
        log.append(duration)
        if len(log) >= _FOLD_AT:
            with self._lock:
                self._fold()

    def adjust_size(self, level, delta_bytes, *, tier="memory"):
        """Add ``delta_bytes`` (negative when entries leave) to the size of ``(tier, level)``."""
        key = _level_key(level)
        delta_bytes = _number(delta_bytes, "delta_bytes")
        with self._lock:
            self._sizes[tier, key] += delta_bytes

    def reset(self):
        """Forget everything recorded so far (counters, sizes, histograms, samples).

        Tiers keep their entries, so sizes restart from zero too: call this when the cache
        itself is cleared, or read the sizes from the tier's ``get_stats()``. Events recorded
        by other threads while this runs may be dropped.
        """
        with self._lock:
            self._reset_state()

    # ------------------------------------------------------------------ reading
    def snapshot(self):
        """Everything recorded, as plain JSON-serializable data.

        Returns
        -------
        dict
            ``{"latency": {"hit"|"miss": {tier: {level: hist}}}, "set_latency": {tier: hist},
            "hash_latency": hist, "level_counters": {name: {tier: {level: n}}},
            "tier_counters": {name: {tier: n}}, "sizes": {tier: {level: bytes}},
            "error_types": {tier: {name: n}}, "last_error": {tier: str},
            "buckets": LATENCY_BUCKETS}`` where ``hist`` is ``{"count", "sum", "cost",
            "buckets", "min", "max"}`` (``buckets`` has one more count than the bounds:
            the last is the overflow bucket). This is what the Prometheus collector reads
            and what :meth:`merge` accepts.
        """
        self._pull()
        with self._lock:
            self._fold()
            latency = {"hit": {}, "miss": {}}
            for (kind, tier, level), stats in self._latency.items():
                latency[kind].setdefault(tier, {})[level] = stats.as_dict()
            level_counters = {name: {} for name in _LEVEL_COUNTERS}
            for (name, tier, level), n in self._level_counts.items():
                level_counters[name].setdefault(tier, {})[level] = n
            tier_counters = {name: {} for name in _TIER_COUNTERS}
            for (name, tier), n in self._tier_counts.items():
                tier_counters[name][tier] = n
            sizes = {}
            for (tier, level), n in self._sizes.items():
                sizes.setdefault(tier, {})[level] = n
            error_types = {}
            for (tier, name), n in self._error_types.items():
                error_types.setdefault(tier, {})[name] = n
            return {
                "buckets": list(LATENCY_BUCKETS),
                "latency": latency,
                "set_latency": {t: s.as_dict() for t, s in self._set_latency.items()},
                "hash_latency": self._hash_latency.as_dict(),
                "level_counters": level_counters,
                "tier_counters": tier_counters,
                "sizes": sizes,
                "error_types": error_types,
                "last_error": dict(self._last_error),
            }

    def merge(self, other):
        """Add another :class:`CacheMetrics` (or its :meth:`snapshot`) into this one.

        For example, worker processes send ``metrics.snapshot()`` to the parent, which
        merges them into one report. Recent samples are not carried over.
        """
        snap = other.snapshot() if isinstance(other, CacheMetrics) else other
        _check_snapshot(snap)
        with self._lock:
            self._fold()
            for kind, by_tier in snap["latency"].items():
                for tier, by_level in by_tier.items():
                    for level, hist in by_level.items():
                        stats = self._latency.get((kind, tier, level))
                        if stats is None:
                            stats = self._latency[kind, tier, level] = _Latency()
                        stats.merge(hist)
            for tier, hist in snap["set_latency"].items():
                self._set_latency.setdefault(tier, _Latency()).merge(hist)
            self._hash_latency.merge(snap["hash_latency"])
            for name, by_tier in snap["level_counters"].items():
                for tier, by_level in by_tier.items():
                    for level, n in by_level.items():
                        self._level_counts[name, tier, level] += n
            for name, by_tier in snap["tier_counters"].items():
                for tier, n in by_tier.items():
                    self._tier_counts[name, tier] += n
            for tier, by_level in snap["sizes"].items():
                for level, n in by_level.items():
                    self._sizes[tier, level] += n
            for tier, by_name in snap["error_types"].items():
                for name, n in by_name.items():
                    self._error_types[tier, name] += n
            self._last_error.update(snap["last_error"])

    def __reduce__(self):
        # a lock cannot be pickled: send the data, so metrics can cross process boundaries
        return (_from_snapshot, (self.snapshot(),))

    def _latency_rows(self, kind, front=False):
        """``[(tier, level, _Latency)]`` for hits or misses, after folding.

        With ``front=True``, only the outermost tier's when a :data:`FRONT_TIERS` tier
        recorded any lookup (see :func:`_front_tier`).
        """
        self._pull()
        with self._lock:
            self._fold()
            keep = _front_tier(t for _, t, _ in self._latency) if front else None
            return [
                (t, lv, s)
                for (k, t, lv), s in self._latency.items()
                if k == kind and (keep is None or t == keep)
            ]

    def _count_by(self, kind, by):
        """``{tier or level: events}`` of hits or misses; ``by`` is "tier" or "level".

        Per level, the lookups of the outermost tier (the totals' rule); per tier, all.
        """
        out = collections.Counter()
        for tier, level, stats in self._latency_rows(kind, front=by == "level"):
            out[tier if by == "tier" else level] += stats.count
        return dict(out)

    def _level_counter(self, name):
        """``{level: n}`` of a per-level counter, summed over tiers."""
        self._pull()
        with self._lock:
            out = collections.Counter()
            for (n, _, level), count in self._level_counts.items():
                if n == name:
                    out[level] += count
            return dict(out)

    def _tier_counter(self, name):
        """``{tier: n}`` of a per-tier counter."""
        self._pull()
        with self._lock:
            return {tier: count for (n, tier), count in self._tier_counts.items() if n == name}

    # seed fields ----------------------------------------------------------
    @property
    def hits(self):
        """Hits over every level (of the outermost tier, see :data:`FRONT_TIERS`)."""
        return sum(s.count for _, _, s in self._latency_rows("hit", front=True))

    @property
    def misses(self):
        """Misses over every level (of the outermost tier, see :data:`FRONT_TIERS`)."""
        return sum(s.count for _, _, s in self._latency_rows("miss", front=True))

    @property
    def evictions(self):
        """Entries evicted for space, over every tier and level."""
        return sum(self._level_counter("evictions").values())

    @property
    def invalidations(self):
        """Entries removed by invalidation, over every tier and level."""
        return sum(self._level_counter("invalidations").values())

    @property
    def level_hits(self):
        """``{level value: hits}`` (of the outermost tier, see :data:`FRONT_TIERS`)."""
        return self._count_by("hit", "level")

    @property
    def level_misses(self):
        """``{level value: misses}`` (of the outermost tier, see :data:`FRONT_TIERS`)."""
        return self._count_by("miss", "level")

    @property
    def total_size_bytes(self):
        """Bytes currently stored, as reported with :meth:`adjust_size`."""
        self._pull()
        with self._lock:
            return sum(self._sizes.values())

    @property
    def size_by_level(self):
        """``{level value: bytes}`` summed over tiers."""
        self._pull()
        with self._lock:
            out = collections.Counter()
            for (_, level), n in self._sizes.items():
                out[level] += n
            return dict(out)

    @property
    def saved_computation_cost(self):
        """Sum of the ``cost`` of every hit (of the outermost tier, see :data:`FRONT_TIERS`)."""
        return sum(s.cost for _, _, s in self._latency_rows("hit", front=True))

    @property
    def hit_times(self):
        """The most recent hit durations (seconds), at most :data:`RECENT_SAMPLES`."""
        return self._recent("hit")

    @property
    def miss_times(self):
        """The most recent miss durations (seconds), at most :data:`RECENT_SAMPLES`."""
        return self._recent("miss")

    def _recent(self, kind):
        rows = self._latency_rows(kind, front=True)
        samples = []
        for _, _, stats in rows:
            samples.extend(stats.recent)
        return samples[-RECENT_SAMPLES:]

    # added fields ---------------------------------------------------------
    @property
    def level_evictions(self):
        """``{level value: entries evicted}`` summed over tiers."""
        return self._level_counter("evictions")

    @property
    def level_invalidations(self):
        """``{level value: entries invalidated}`` summed over tiers."""
        return self._level_counter("invalidations")

    @property
    def tier_hits(self):
        """``{tier: hits}``."""
        return self._count_by("hit", "tier")

    @property
    def tier_misses(self):
        """``{tier: misses}``."""
        return self._count_by("miss", "tier")

    @property
    def tier_errors(self):
        """``{tier: failures caught and treated as misses}``."""
        return self._tier_counter("errors")

    @property
    def errors(self):
        """Tier failures over every tier."""
        return sum(self._tier_counter("errors").values())

    @property
    def corrupt(self):
        """Corrupt entries found (and dropped) over every tier."""
        return sum(self._tier_counter("corrupt").values())

    @property
    def rejected(self):
        """Values refused as larger than a tier's budget."""
        return sum(self._level_counter("rejected").values())

    @property
    def sets(self):
        """Values stored, over every tier and level."""
        return sum(self._level_counter("sets").values())

    @property
    def bytes_written(self):
        """Raw (uncompressed) bytes of every value stored."""
        return sum(self._tier_counter("bytes_written").values())

    @property
    def bytes_read(self):
        """Decoded bytes of every value read back from storage."""
        return sum(self._tier_counter("bytes_read").values())

    @property
    def compression_ratio(self):
        """Raw bytes / stored bytes over the writes that reported both (1.0 if none did)."""
        raw = sum(self._tier_counter("compressible_bytes_written").values())
        stored = sum(self._tier_counter("stored_bytes_written").values())
        return raw / stored if stored else 1.0

    @property
    def hash_time(self):
        """Total seconds spent fingerprinting arguments."""
        self._pull()
        with self._lock:
            self._fold()
            return self._hash_latency.total

    @property
    def hash_count(self):
        """Number of argument fingerprints timed."""
        self._pull()
        with self._lock:
            self._fold()
            return self._hash_latency.count

    def latency_percentiles(self, kind="hit", quantiles=(0.5, 0.95, 0.99), *, tier=None, level=None):
        """Latency quantiles in seconds, from the bounded histograms.

        Parameters
        ----------
        kind : {"hit", "miss", "set", "hash"}
        quantiles : sequence of float
            Each in [0, 1].
        tier, level : str or CacheLevel, optional
            Restrict to one tier and/or level (``kind`` "hit" or "miss" only). Without
            ``tier``, the lookups the totals count (see :data:`FRONT_TIERS`).

        Returns
        -------
        dict
            ``{q: seconds}``; 0.0 for every q when nothing was recorded. Values are
            interpolated inside log-spaced buckets (about 12% wide), so they are estimates.
        """
        for q in quantiles:
            if not 0.0 <= q <= 1.0:
                raise InvalidArgumentError(f"quantile must be within [0, 1], got {q!r}")
        if kind in ("hit", "miss"):
            key = None if level is None else _level_key(level)
            rows = [
                s
                for t, lv, s in self._latency_rows(kind, front=tier is None)
                if (tier is None or t == tier) and (key is None or lv == key)
            ]
        elif kind in ("set", "hash"):
            if level is not None or (kind == "hash" and tier is not None):
                raise InvalidArgumentError(f"latency of kind {kind!r} is not kept per level")
            self._pull()
            with self._lock:
                self._fold()
                if kind == "hash":
                    rows = [self._hash_latency]
                else:
                    rows = [s for t, s in self._set_latency.items() if tier is None or t == tier]
        else:
            raise InvalidArgumentError(f"kind must be 'hit', 'miss', 'set' or 'hash', got {kind!r}")
        counts = np.zeros(_NBUCKETS, dtype=np.int64)
        low, high = math.inf, -math.inf
        for stats in rows:
            counts += stats.counts
            low, high = min(low, stats.low), max(high, stats.high)
        bounds = (None, None) if low == math.inf else (low, high)
        return {q: percentile_from_buckets(counts, q, *bounds) for q in quantiles}

    # ------------------------------------------------------------------ summaries
    def get_summary(self):
        """The seed's summary, plus the added numbers.

        Returns
        -------
        dict
            The seed's keys: ``hit_rate``, ``total_accesses``, ``avg_hit_time_ms``,
            ``avg_miss_time_ms``, ``saved_computation_cost``, ``memory_mb`` (MiB recorded
            with :meth:`adjust_size`), ``level_breakdown`` (``{level: hits}``); and ``hits``,
            ``misses``, ``evictions``, ``invalidations``, ``rejected``, ``errors``,
            ``corrupt``, ``sets``, ``p50/p95/p99_hit_ms``, ``p50/p95/p99_miss_ms``,
            ``bytes_written``, ``bytes_read``, ``compression_ratio``, ``hash_time_ms``,
            ``tiers`` (``{tier: {"hits", "misses", "hit_rate", "errors", "size_bytes"}}``)
            and ``levels`` (``{level: {"hits", "misses", "hit_rate", "evictions",
            "invalidations", "size_bytes"}}``).
        """
        snap = self.snapshot()
        all_hit_rows = [(t, lv, h) for t, by in snap["latency"]["hit"].items() for lv, h in by.items()]
        all_miss_rows = [(t, lv, h) for t, by in snap["latency"]["miss"].items() for lv, h in by.items()]
        front = _front_tier(t for t, _, _ in all_hit_rows + all_miss_rows)
        # totals and per-level numbers count each lookup once: at the outermost tier
        hit_rows = [row for row in all_hit_rows if front is None or row[0] == front]
        miss_rows = [row for row in all_miss_rows if front is None or row[0] == front]
        hits = sum(h["count"] for _, _, h in hit_rows)
        misses = sum(h["count"] for _, _, h in miss_rows)
        total = hits + misses

        def mean_ms(rows):
            timed = sum(sum(h["buckets"]) for _, _, h in rows)
            return sum(h["sum"] for _, _, h in rows) / timed * 1000.0 if timed else 0.0

        def per_level(name):
            out = collections.Counter()
            for by_level in snap["level_counters"][name].values():
                for level, n in by_level.items():
                    out[level] += n
            return out

        def tier_total(name):
            return sum(snap["tier_counters"][name].values())

        level_hits, level_misses = collections.Counter(), collections.Counter()
        tier_hits, tier_misses = collections.Counter(), collections.Counter()
        for _, level, h in hit_rows:
            level_hits[level] += h["count"]
        for _, level, h in miss_rows:
            level_misses[level] += h["count"]
        for tier, _, h in all_hit_rows:
            tier_hits[tier] += h["count"]
        for tier, _, h in all_miss_rows:
            tier_misses[tier] += h["count"]
        size_level, size_tier = collections.Counter(), collections.Counter()
        for tier, by_level in snap["sizes"].items():
            for level, n in by_level.items():
                size_level[level] += n
                size_tier[tier] += n
        evictions, invalidations = per_level("evictions"), per_level("invalidations")
        hit_q = self.latency_percentiles("hit")
        miss_q = self.latency_percentiles("miss")
        stored = tier_total("stored_bytes_written")

        def rate(h, m):
            return h / (h + m) if h + m else 0.0

        tiers = sorted(set(tier_hits) | set(tier_misses) | set(size_tier)
                       | set(snap["tier_counters"]["errors"]))
        levels = sorted(set(level_hits) | set(level_misses) | set(size_level)
                        | set(evictions) | set(invalidations))
        return {
            "hit_rate": rate(hits, misses),
            "total_accesses": total,
            "avg_hit_time_ms": mean_ms(hit_rows),
            "avg_miss_time_ms": mean_ms(miss_rows),
            "saved_computation_cost": sum(h["cost"] for _, _, h in hit_rows),
            "memory_mb": sum(size_level.values()) / _MIB,
            "level_breakdown": dict(level_hits),
            "hits": hits,
            "misses": misses,
            "evictions": sum(evictions.values()),
            "invalidations": sum(invalidations.values()),
            "rejected": sum(per_level("rejected").values()),
            "errors": tier_total("errors"),
            "corrupt": tier_total("corrupt"),
            "sets": sum(per_level("sets").values()),
            "p50_hit_ms": hit_q[0.5] * 1000.0,
            "p95_hit_ms": hit_q[0.95] * 1000.0,
            "p99_hit_ms": hit_q[0.99] * 1000.0,
            "p50_miss_ms": miss_q[0.5] * 1000.0,
            "p95_miss_ms": miss_q[0.95] * 1000.0,
            "p99_miss_ms": miss_q[0.99] * 1000.0,
            "bytes_written": tier_total("bytes_written"),
            "bytes_read": tier_total("bytes_read"),
            "compression_ratio": (
                tier_total("compressible_bytes_written") / stored if stored else 1.0
            ),
            "hash_time_ms": snap["hash_latency"]["sum"] * 1000.0,
            "tiers": {
                t: {
                    "hits": tier_hits[t],
                    "misses": tier_misses[t],
                    "hit_rate": rate(tier_hits[t], tier_misses[t]),
                    "errors": snap["tier_counters"]["errors"].get(t, 0),
                    "size_bytes": size_tier[t],
                }
                for t in tiers
            },
            "levels": {
                lv: {
                    "hits": level_hits[lv],
                    "misses": level_misses[lv],
                    "hit_rate": rate(level_hits[lv], level_misses[lv]),
                    "evictions": evictions[lv],
                    "invalidations": invalidations[lv],
                    "size_bytes": size_level[lv],
                }
                for lv in levels
            },
        }

    def report(self, file=None):
        """Print the seed's "Cache Performance Report", then per-tier, per-level and I/O detail.

        Parameters
        ----------
        file : file-like, optional
            Where to print (default ``sys.stdout``).

        Returns
        -------
        str
            The text printed.
        """
        s = self.get_summary()
        lines = [
            "Cache Performance Report",
            "=" * 50,
            f"Hit Rate: {s['hit_rate']:.1%}",
            f"Total Accesses: {s['total_accesses']}",
            f"Avg Hit Time: {s['avg_hit_time_ms']:.3f} ms",
            f"Avg Miss Time: {s['avg_miss_time_ms']:.3f} ms",
            f"Saved Computation: {s['saved_computation_cost']:.1f} units",
            f"Memory Usage: {s['memory_mb']:.2f} MB",
            "",
            "Level Breakdown:",
        ]
        lines += [f"  {level}: {hits} hits" for level, hits in s["level_breakdown"].items()]
        lines += [
            "",
            "Latency (ms)       p50        p95        p99",
            f"  hit      {s['p50_hit_ms']:10.4f} {s['p95_hit_ms']:10.4f} {s['p99_hit_ms']:10.4f}",
            f"  miss     {s['p50_miss_ms']:10.4f} {s['p95_miss_ms']:10.4f} {s['p99_miss_ms']:10.4f}",
            "",
            f"{'Tier':<12}{'hits':>10}{'misses':>10}{'hit rate':>10}{'errors':>8}{'size MB':>10}",
        ]
        for tier, t in s["tiers"].items():
            lines.append(
                f"{tier:<12}{t['hits']:>10}{t['misses']:>10}{t['hit_rate']:>10.1%}"
                f"{t['errors']:>8}{t['size_bytes'] / _MIB:>10.2f}"
            )
        lines += [
            "",
            f"{'Level':<18}{'hits':>9}{'misses':>9}{'hit rate':>10}{'evicted':>9}"
            f"{'invalid.':>9}{'size MB':>10}",
        ]
        for level, lv in s["levels"].items():
            lines.append(
                f"{level:<18}{lv['hits']:>9}{lv['misses']:>9}{lv['hit_rate']:>10.1%}"
                f"{lv['evictions']:>9}{lv['invalidations']:>9}{lv['size_bytes'] / _MIB:>10.2f}"
            )
        lines += [
            "",
            f"Stores: {s['sets']}  rejected (too large): {s['rejected']}",
            f"Written: {s['bytes_written'] / _MIB:.2f} MB  read: {s['bytes_read'] / _MIB:.2f} MB"
            f"  compression ratio: {s['compression_ratio']:.2f}x",
            f"Errors: {s['errors']}  corrupt entries: {s['corrupt']}",
            f"Hashing: {s['hash_time_ms']:.3f} ms total",
        ]
        text = "\n".join(lines) + "\n"
        print(text, end="", file=sys.stdout if file is None else file)
        return text

    def __repr__(self):
        s = self.get_summary()
        return (
            f"CacheMetrics(hits={s['hits']}, misses={s['misses']}, "
            f"hit_rate={s['hit_rate']:.3f}, size_bytes={int(s['memory_mb'] * _MIB)})"
        )


def _front_tier(tiers):
    """The outermost of :data:`FRONT_TIERS` among ``tiers``, or None when there is none."""
    present = set(tiers)
    for name in FRONT_TIERS:
        if name in present:
            return name
    return None


def _from_snapshot(snap):
    """A new :class:`CacheMetrics` holding ``snap`` (what unpickling a CacheMetrics calls)."""
    metrics = CacheMetrics()
    metrics.merge(snap)
    return metrics
