"""A stack of tiers (memory, disk, Redis, in any subset and order) behaving as one tier.

Reads go top-down; a hit in a lower tier is promoted into every tier above it with its
dependencies, cost and remaining time to live, so the next read is served from the top.
Writes, deletes, invalidations and ``clear`` reach every tier. A tier that fails (it
raises :class:`~tnfr_fastcache.errors.FastCacheError` or :class:`OSError`, e.g. Redis is
down or the disk is full) is skipped for that operation and counted, never fatal; errors
that are the caller's fault (a bad level, key or ttl) still propagate.
"""

import logging
import math
import threading
import time

from ..errors import FastCacheError, InvalidArgumentError, UnhashableKeyError
from ..levels import as_level
from .base import DEFAULT_LEVEL, CacheTier

__all__ = ["TieredCache"]

logger = logging.getLogger(__name__)

#: Tier failures are logged at most once per this many seconds per TieredCache.
ERROR_LOG_INTERVAL = 60.0

# Failures of a tier, as opposed to errors in what the caller passed.
_TIER_ERRORS = (FastCacheError, OSError)
_CALLER_ERRORS = (UnhashableKeyError, InvalidArgumentError)


def _check_ttl(ttl):
    if ttl is None:
        return None
    try:
        ttl = float(ttl)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"ttl must be a positive number of seconds or None, not {ttl!r}") from None
    if not ttl > 0:  # also refuses NaN
        raise InvalidArgumentError(f"ttl must be a positive number of seconds or None, not {ttl!r}")
    return ttl


class TieredCache(CacheTier):
    """Several tiers, fastest first, used as one cache.

    Parameters
    ----------
    *tiers : CacheTier
        The tiers from fastest to slowest, e.g. ``TieredCache(memory, disk, redis)``;
        any non-empty subset, each tier at most once.
    metrics : CacheMetrics, optional
        Where the stack records its own hits, misses and errors (the tiers keep
        recording into their own metrics). A new instance when None.
    promote : bool, default True
        Copy a value found in a lower tier into the tiers above it.

    Notes
    -----
    ``len()`` and the counts returned by the invalidation methods are the largest over
    the tiers: a written-through entry lives in every tier but is one entry.
    """

    tier_name = "tiered"

    def __init__(self, *tiers, metrics=None, promote=True):
        if not tiers:
            raise InvalidArgumentError("TieredCache needs at least one tier, e.g. TieredCache(memory, disk)")
        for tier in tiers:
            if not isinstance(tier, CacheTier):
                raise InvalidArgumentError(
                    f"TieredCache takes CacheTier instances (memory, disk, Redis), not {type(tier).__name__}"
                )
            if tier is self:
                raise InvalidArgumentError("a TieredCache cannot contain itself")
        if len({id(t) for t in tiers}) != len(tiers):
            raise InvalidArgumentError("each tier may appear only once in a TieredCache")
        if metrics is None:
            from ..telemetry import CacheMetrics

            metrics = CacheMetrics()
        self.metrics = metrics
        self.promote = bool(promote)
        self._tiers = tuple(tiers)
        self._names = self._unique_names(tiers)
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._tier_hits = [0] * len(tiers)
        self._tier_errors = [0] * len(tiers)
        self._promotions = 0
        self._invalidations = 0
        self._last_error_log = -math.inf

    @staticmethod
    def _unique_names(tiers):
        names = []
        for i, tier in enumerate(tiers):
            name = str(getattr(tier, "tier_name", type(tier).__name__))
            names.append(name if name not in names else f"{name}{i}")
        return tuple(names)

    @property
    def tiers(self):
        """The tiers, fastest first (a tuple)."""
        return self._tiers

    # -- failures -------------------------------------------------------------------------

    def _failed(self, index, exc):
        if isinstance(exc, _CALLER_ERRORS):
            raise exc
        with self._lock:
            self._tier_errors[index] += 1
            now = time.monotonic()
            log = now - self._last_error_log >= ERROR_LOG_INTERVAL
            if log:
                self._last_error_log = now
        self.metrics.record_error(tier=self._names[index], exc=exc)
        if log:
            logger.warning(
                "cache tier %r failed (%s: %s); skipped, further failures are counted in "
                "get_stats()['errors'] and logged at most every %.0f s",
                self._names[index], type(exc).__name__, exc, ERROR_LOG_INTERVAL,
            )

    # -- reads ----------------------------------------------------------------------------

    def lookup(self, key, level=DEFAULT_LEVEL, *, copy=False):
        """Return the :class:`Entry` from the first tier that has ``(key, level)``, or None.

        A hit below the top is promoted into the tiers above it (with its dependencies,
        cost and remaining ttl) unless ``promote=False``.
        """
        return self._lookup(key, as_level(level), copy, count_miss=True)

    def _lookup(self, key, level, copy, count_miss):
        start = time.perf_counter()
        for index, tier in enumerate(self._tiers):
            try:
                entry = tier.lookup(key, level, copy=copy)
            except _TIER_ERRORS as exc:
                self._failed(index, exc)
                continue
            if entry is None:
                continue
            if index and self.promote:
                self._promote(index, key, level, entry)
            with self._lock:
                self._hits += 1
                self._tier_hits[index] += 1
            self.metrics.record_hit(level, time.perf_counter() - start, entry.computation_cost, tier=self.tier_name)
            return entry
        if count_miss:
            with self._lock:
                self._misses += 1
            self.metrics.record_miss(level, time.perf_counter() - start, tier=self.tier_name)
        return None

    def _promote(self, found_at, key, level, entry):
        ttl = None
        if entry.expires_at is not None:
            ttl = entry.expires_at - time.time()
            if ttl <= 0:
                return  # expired between the lower tier's check and now: nothing worth copying up
        promoted = False
        for index in range(found_at):
            try:
                promoted |= bool(
                    self._tiers[index].set(key, entry.value, level, entry.dependencies, entry.computation_cost, ttl)
                )
            except _TIER_ERRORS as exc:
                self._failed(index, exc)
        if promoted:
            with self._lock:
                self._promotions += 1

    # -- writes ---------------------------------------------------------------------------

    def set(self, key, value, level=DEFAULT_LEVEL, dependencies=(), computation_cost=1.0, ttl=None):
        """Write ``value`` through to every tier; True if at least one tier stored it.

        The slowest tier is written first, so an entry visible in a fast tier is already
        in the slower ones.
        """
        level = as_level(level)
        ttl = _check_ttl(ttl)
        dependencies = frozenset(dependencies)
        stored = False
        for index in range(len(self._tiers) - 1, -1, -1):
            try:
                stored |= bool(self._tiers[index].set(key, value, level, dependencies, computation_cost, ttl))
            except _TIER_ERRORS as exc:
                self._failed(index, exc)
        return stored

    def _each(self, method, *args):
        results = []
        for index, tier in enumerate(self._tiers):
            try:
                results.append(getattr(tier, method)(*args))
            except _TIER_ERRORS as exc:
                self._failed(index, exc)
        return results

    def delete(self, key, level=DEFAULT_LEVEL):
        """Remove ``(key, level)`` from every tier; True if any tier had it."""
        return any(self._each("delete", key, as_level(level)))

    def invalidate_by_dependency(self, dependency):
        """Remove every entry naming ``dependency`` from every tier; return the largest count."""
        removed = max(self._each("invalidate_by_dependency", dependency), default=0)
        with self._lock:
            self._invalidations += removed
        return removed

    def invalidate_level(self, level):
        """Remove every entry of ``level`` from every tier; return the largest count."""
        removed = max(self._each("invalidate_level", as_level(level)), default=0)
        with self._lock:
            self._invalidations += removed
        return removed

    def clear(self):
        """Clear every tier."""
        self._each("clear")

    def __len__(self):
        return max(self._each("__len__"), default=0)

    def close(self):
        """Close every tier."""
        self._each("close")

    def get_or_compute(self, key, level, compute, dependencies=(), computation_cost=1.0, ttl=None, *, copy=False,
                       missed=False):
        """Return the cached value, or compute it once across processes where a tier can lease.

        The first tier offering ``get_or_compute`` (the Redis tier: one process computes
        under a lease, the others wait for its result) is asked to produce the value; the
        result is then written into the other tiers. Without such a tier this is a
        lookup, then ``compute()`` and a write-through ``set``.

        ``missed=True`` says the caller has just missed this key through :meth:`get` or
        :meth:`lookup` and made sure no other thread of its own filled it since (the
        decorator does): that miss is the call's one lookup, so the tiers are not looked
        up again here (a lease tier still checks its own store under the lease).

        Returns
        -------
        object
            The value, cached or freshly computed.
        """
        level = as_level(level)
        if not missed:
            entry = self._lookup(key, level, copy, count_miss=True)
            if entry is not None:
                return entry.value
        results = []
        raised = []

        def once():
            # A lease tier failing after computing must not make us compute again.
            if not results:
                try:
                    results.append(compute())
                except BaseException as exc:
                    raised.append(exc)
                    raise
            return results[0]

        for index, tier in enumerate(self._tiers):
            lease = getattr(tier, "get_or_compute", None)
            if lease is None:
                continue
            try:
                value = lease(key, level, once, dependencies=dependencies,
                              computation_cost=computation_cost, ttl=ttl, copy=copy)
            except _TIER_ERRORS as exc:
                if raised and exc is raised[0]:
                    raise  # compute's own OSError, not the tier's
                self._failed(index, exc)
                break
            self._set_except(index, key, value, level, dependencies, computation_cost, ttl)
            return value
        value = once()
        self.set(key, value, level, dependencies, computation_cost, ttl)
        return value

    def _set_except(self, skipped, key, value, level, dependencies, computation_cost, ttl):
        dependencies = frozenset(dependencies)
        for index, tier in enumerate(self._tiers):
            if index == skipped:
                continue
            try:
                tier.set(key, value, level, dependencies, computation_cost, ttl)
            except _TIER_ERRORS as exc:
                self._failed(index, exc)

    # -- stats ----------------------------------------------------------------------------

    def get_stats(self):
        """Counters of the stack and of each tier.

        Returns
        -------
        dict
            ``hits``, ``misses``, ``hit_rate`` (of the stack as a whole), ``tier_hits``
            (hits served by each tier, by tier name), ``errors`` and ``tier_errors``
            (failures skipped), ``promotions``, ``invalidations``, ``evictions`` and
            ``rejected`` (sums over tiers) and ``tiers`` (each tier's own ``get_stats()``).
        """
        tier_stats = {}
        for index, (name, tier) in enumerate(zip(self._names, self._tiers)):
            try:
                tier_stats[name] = tier.get_stats()
            except _TIER_ERRORS as exc:
                self._failed(index, exc)
        with self._lock:
            hits, misses = self._hits, self._misses
            stats = {
                "hits": hits,
                "misses": misses,
                "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
                "tier_hits": dict(zip(self._names, self._tier_hits)),
                "errors": sum(self._tier_errors),
                "tier_errors": dict(zip(self._names, self._tier_errors)),
                "promotions": self._promotions,
                "invalidations": self._invalidations,
            }
        for counter in ("evictions", "rejected"):
            stats[counter] = sum(int(s.get(counter, 0)) for s in tier_stats.values())
        stats["tiers"] = tier_stats
        return stats

    def __repr__(self):
        return f"TieredCache({', '.join(self._names)})"
