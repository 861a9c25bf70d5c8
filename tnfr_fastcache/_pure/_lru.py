"""Pure-Python twin of ``tnfr_fastcache._lru``: the same slots, links and results.

Every method mirrors the compiled one (same eviction order, same GDSF priorities and
tie-breaks), so the twin tests can compare the two directly. The one difference is the
heap's shape, binary here and 4-ary there: eviction takes the unique minimum of
(priority, last use), whatever the shape. Unlike the
compiled index, a call here is not atomic under the GIL: owners that share an index
between threads take a lock around every call (the memory tier does).
"""

import bisect
import math
import operator
import time

from ..errors import CacheKeyError, InvalidArgumentError, UnhashableKeyError, ValueTooLargeError

__all__ = ["LRUIndex", "TierIndex", "POLICIES", "UNSET", "ATOMIC_CALLS"]

ATOMIC_CALLS = False
"""A call here can be interrupted by another thread: owners lock around it."""

POLICIES = ("lru", "gdsf")

NONE = -1
_now = time.perf_counter

COUNTER_NAMES = ("hits", "misses", "sets", "bytes_written", "evictions", "evicted_bytes", "rejected")
COLLECT_NONE = 0
COLLECT_ALL = 1
COLLECT_WITH_EXTRA = 2
COLLECT_EVICTED_WITH_EXTRA = 3
# distinct dependency sets kept shared by TierIndex._intern before it starts over
INTERN_LIMIT = 4096
# _parts[slot] of a free slot (partitions are 0..63)
FREE_PART = 255

# Seed and word mask of the xorshift64 generator that spaces out timed lookups (as _lru.pyx).
SAMPLE_SEED = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def _xorshift64(x):
    x ^= (x << 13) & _MASK64
    x ^= x >> 7
    x ^= (x << 17) & _MASK64
    return x


UNSET = object()
"""Default of ``TierIndex.tier_get``'s level: the owner's default partition."""
INITIAL_CAPACITY = 16


def _limit(value, name):
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be a positive int or None, not {value!r}")
    if value < 1:
        raise InvalidArgumentError(f"{name} must be at least 1 (or None for no limit), not {value!r}")
    return value


def _eff(size):
    return float(size if size > 0 else 1)


class LRUIndex:
    """Byte-budgeted LRU or GDSF index of ``(partition, key) -> value``.

    Parameters
    ----------
    max_bytes : int or None
        Budget on the sum of entry sizes; None for none.
    max_entries : int or None
        Budget on the number of entries; None for none.
    policy : {"lru", "gdsf"}
        Which entry to evict: the least recently used, or the lowest
        greedy-dual-size-frequency priority.
    getsizeof : callable or None
        Size of a value for the mapping API (``index[key] = value``); None counts 1 per entry.
    nparts : int
        Number of partitions (1 to 64).
    timer : callable or None
        Clock for expiry times (default ``time.time``); only called for entries with an expiry.
    """

    def __init__(self, max_bytes=None, max_entries=None, policy="lru", getsizeof=None,
                 nparts=1, timer=None):
        if policy not in POLICIES:
            raise InvalidArgumentError(f"policy must be one of {POLICIES}, not {policy!r}")
        if getsizeof is not None and not callable(getsizeof):
            raise InvalidArgumentError(f"getsizeof must be callable or None, not {getsizeof!r}")
        if isinstance(nparts, bool) or not isinstance(nparts, int) or not 1 <= nparts <= 64:
            raise InvalidArgumentError(f"nparts must be an int from 1 to 64, not {nparts!r}")
        if timer is None:
            timer = time.time
        elif not callable(timer):
            raise InvalidArgumentError(f"timer must be callable, not {timer!r}")
        self._max_bytes = _limit(max_bytes, "max_bytes")
        self._max_entries = _limit(max_entries, "max_entries")
        if hasattr(self, "_stats"):
            raise InvalidArgumentError("LRUIndex.__init__ may only be called once")
        self.policy = policy
        self._gdsf = policy == "gdsf"
        self.getsizeof = getsizeof
        self._timer = timer
        self.nparts = nparts
        self._stats = {name: [0] * nparts for name in COUNTER_NAMES}
        self._capacity = 0
        self._prev = []
        self._next = []
        self._sizes = []
        self._costs = []
        self._expires = []
        self._prios = []
        self._ticks = []
        self._heap_pos = []
        self._heap = []
        self._heap_prio = []
        self._heap_tick = []
        self._parts = []
        self._freqs = []
        self._keys = []
        self._values = []
        self._extras = []
        self._reset()

    def _reset(self):
        """Forget every entry (the slot arrays are kept for reuse)."""
        self._maps = [{} for _ in range(self.nparts)]
        self._part_bytes = [0] * self.nparts
        self._part_counts = [0] * self.nparts
        self._free_head = NONE
        for i in range(self._capacity - 1, -1, -1):
            self._next[i] = self._free_head
            self._free_head = i
        self._count = 0
        self._oldest = NONE
        self._newest = NONE
        self._heap_len = 0
        self._total_bytes = 0
        self._clock = 0.0
        self._tick = 0
        old = (self._keys, self._values, self._extras)
        self._keys = [None] * self._capacity
        self._values = [None] * self._capacity
        self._extras = [None] * self._capacity
        del old  # released only now that the index is consistent

    # -- internals ----------------------------------------------------------------------

    def _grow(self):
        new_cap = INITIAL_CAPACITY if self._capacity == 0 else self._capacity * 2
        extra = new_cap - self._capacity
        for arr, fill in ((self._prev, NONE), (self._next, NONE), (self._sizes, 0),
                          (self._costs, 0.0), (self._expires, 0.0), (self._prios, 0.0),
                          (self._ticks, 0), (self._heap_pos, 0), (self._heap, 0),
                          (self._heap_prio, 0.0), (self._heap_tick, 0),
                          (self._parts, 0), (self._freqs, 0), (self._keys, None),
                          (self._values, None), (self._extras, None)):
            arr.extend([fill] * extra)
        for i in range(new_cap - 1, self._capacity - 1, -1):
            self._next[i] = self._free_head
            self._free_head = i
        self._capacity = new_cap

    def _find(self, part, key):
        if not 0 <= part < self.nparts:
            self._check_part(part)
        try:
            return self._maps[part].get(key, NONE)
        except TypeError:
            raise UnhashableKeyError(
                f"cache key {key!r} of type {type(key).__name__} is not hashable"
            ) from None

    def _expired(self, slot):
        return self._expires[slot] != 0.0 and self._timer() >= self._expires[slot]

    def _link_newest(self, slot):
        self._prev[slot] = self._newest
        self._next[slot] = NONE
        if self._newest == NONE:
            self._oldest = slot
        else:
            self._next[self._newest] = slot
        self._newest = slot

    def _unlink(self, slot):
        p, n = self._prev[slot], self._next[slot]
        if p == NONE:
            self._oldest = n
        else:
            self._next[p] = n
        if n == NONE:
            self._newest = p
        else:
            self._prev[n] = p

    def _touch(self, slot):
        if slot != self._newest:
            self._unlink(slot)
            self._link_newest(slot)
        self._tick += 1
        self._ticks[slot] = self._tick
        if self._gdsf:
            self._freqs[slot] += 1
            # Only the entry's own priority rises; its heap key catches up lazily (_victim).
            self._prios[slot] = self._clock + self._freqs[slot] * self._costs[slot] / _eff(self._sizes[slot])

    def _heap_less(self, i, j):
        if self._heap_prio[i] != self._heap_prio[j]:
            return self._heap_prio[i] < self._heap_prio[j]
        return self._heap_tick[i] < self._heap_tick[j]

    def _heap_swap(self, i, j):
        a, b = self._heap[i], self._heap[j]
        self._heap[i], self._heap[j] = b, a
        self._heap_prio[i], self._heap_prio[j] = self._heap_prio[j], self._heap_prio[i]
        self._heap_tick[i], self._heap_tick[j] = self._heap_tick[j], self._heap_tick[i]
        self._heap_pos[b] = i
        self._heap_pos[a] = j

    def _heap_push(self, slot):
        i = self._heap_len
        self._heap[i] = slot
        self._heap_prio[i] = self._prios[slot]
        self._heap_tick[i] = self._ticks[slot]
        self._heap_pos[slot] = i
        self._heap_len += 1
        self._sift_up(i)

    def _sift_up(self, i):
        while i > 0:
            parent = (i - 1) >> 1
            if not self._heap_less(i, parent):
                break
            self._heap_swap(i, parent)
            i = parent

    def _sift_down(self, i):
        while True:
            smallest = i
            child = 2 * i + 1
            if child < self._heap_len and self._heap_less(child, smallest):
                smallest = child
            child += 1
            if child < self._heap_len and self._heap_less(child, smallest):
                smallest = child
            if smallest == i:
                return
            self._heap_swap(i, smallest)
            i = smallest

    def _heap_remove(self, slot):
        i = self._heap_pos[slot]
        last = self._heap_len - 1
        if i == NONE:
            return
        if i != last:
            self._heap_swap(i, last)
        self._heap_len -= 1
        self._heap_pos[slot] = NONE
        if i != last:
            self._sift_down(i)
            self._sift_up(i)

    def _victim(self, keep):
        """The entry to evict next, other than ``keep`` (NONE if there is none).

        GDSF keys in the heap may lag behind their entries' priorities (hits raise only the
        entry's own, see _touch): a root whose key is stale is refreshed and sunk until the
        root is current, and then it is the true minimum, since keys only ever lag below.
        ``keep`` is never in the heap while it is being inserted.
        """
        if not self._gdsf:
            slot = self._oldest
            return self._next[slot] if slot == keep and slot != NONE else slot
        while self._heap_len:
            slot = self._heap[0]
            if self._heap_prio[0] == self._prios[slot] and self._heap_tick[0] == self._ticks[slot]:
                return slot
            self._heap_prio[0] = self._prios[slot]
            self._heap_tick[0] = self._ticks[slot]
            self._sift_down(0)
        return NONE

    def _detach(self, slot, evicted, collect):
        part = self._parts[slot]
        size = self._sizes[slot]
        self._parts[slot] = FREE_PART
        key = self._keys[slot]
        del self._maps[part][key]
        value = self._values[slot]
        extra = self._extras[slot]
        self._keys[slot] = None
        self._values[slot] = None
        self._extras[slot] = None
        self._unlink(slot)
        if evicted:
            self._stats["evictions"][part] += 1
            self._stats["evicted_bytes"][part] += size
        if self._gdsf:
            if evicted:
                self._clock = self._prios[slot]
            self._heap_remove(slot)
        self._total_bytes -= size
        self._part_bytes[part] -= size
        self._part_counts[part] -= 1
        self._count -= 1
        self._next[slot] = self._free_head
        self._free_head = slot
        if collect:
            return (part, key, value, size, extra)
        return None

    def _size_of(self, value):
        if self.getsizeof is None:
            return 1
        size = self.getsizeof(value)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidArgumentError(
                f"getsizeof must return a non-negative int, it returned {size!r} for a "
                f"{type(value).__name__}"
            )
        return size

    def _insert(self, part, key, value, size, cost, expires, extra, collect):
        """Store an entry; return the removed ones' records (the replaced one first) as the
        ``collect`` mode asks (COLLECT_NONE, COLLECT_ALL, COLLECT_WITH_EXTRA: only those
        whose extra is truthy, or COLLECT_EVICTED_WITH_EXTRA: those but the replaced one),
        or None when there are none."""
        removed = None
        if self._max_bytes >= 0 and size > self._max_bytes:
            raise ValueTooLargeError(
                f"a value of {size} bytes cannot fit in a budget of {self._max_bytes} bytes"
            )
        slot = self._find(part, key)
        if slot >= 0:
            old_size = self._sizes[slot]
            old_value = self._values[slot]
            old_extra = self._extras[slot]
            self._values[slot] = value
            self._extras[slot] = extra
            self._unlink(slot)
            if self._gdsf:
                self._heap_remove(slot)
            self._total_bytes += size - old_size
            self._part_bytes[part] += size - old_size
            if collect == COLLECT_ALL or (collect == COLLECT_WITH_EXTRA and old_extra):
                removed = [(part, self._keys[slot], old_value, old_size, old_extra)]
        else:
            if self._free_head == NONE:
                self._grow()
            slot = self._free_head
            self._maps[part][key] = slot
            self._free_head = self._next[slot]
            self._keys[slot] = key
            self._values[slot] = value
            self._extras[slot] = extra
            self._parts[slot] = part
            self._total_bytes += size
            self._part_bytes[part] += size
            self._part_counts[part] += 1
            self._count += 1
            self._heap_pos[slot] = NONE
        self._stats["sets"][part] += 1
        self._stats["bytes_written"][part] += size
        self._sizes[slot] = size
        self._costs[slot] = float(cost)
        self._expires[slot] = float(expires)
        self._freqs[slot] = 1
        self._tick += 1
        self._ticks[slot] = self._tick
        self._link_newest(slot)
        while (self._max_entries >= 0 and self._count > self._max_entries) or (
            self._max_bytes >= 0 and self._total_bytes > self._max_bytes
        ):
            victim = self._victim(slot)
            if victim == NONE:
                break
            want = collect == COLLECT_ALL or (collect != COLLECT_NONE and bool(self._extras[victim]))
            record = self._detach(victim, True, want)
            if want:
                if removed is None:
                    removed = []
                removed.append(record)
        # Into the heap only now, priced at the clock the evictions left. (A __del__ run by
        # an eviction may have removed it, or even reused its slot, pushing it itself.)
        if self._gdsf and self._parts[slot] != FREE_PART and self._heap_pos[slot] == NONE:
            self._prios[slot] = self._clock + cost / _eff(size)
            self._heap_push(slot)
        return removed

    def _check_part(self, part):
        if isinstance(part, bool) or not isinstance(part, int):
            raise TypeError(f"partition must be an int, not {type(part).__name__}")
        if part < 0 or part >= self.nparts:
            raise InvalidArgumentError(f"partition {part} out of range 0..{self.nparts - 1}")
        return part

    # -- mapping API (partition 0), what LRUCache exposes ---------------------------------

    def __getitem__(self, key):
        slot = self._find(0, key)
        if slot < 0:
            raise CacheKeyError(key)
        self._touch(slot)
        return self._values[slot]

    def __setitem__(self, key, value):
        self._insert(0, key, value, self._size_of(value), 1.0, 0.0, None, COLLECT_NONE)

    def __delitem__(self, key):
        slot = self._find(0, key)
        if slot < 0:
            raise CacheKeyError(key)
        self._detach(slot, False, False)

    def __contains__(self, key):
        return self._find(0, key) >= 0

    def __len__(self):
        return self._count

    def __iter__(self):
        return iter(self.part_keys(0))

    def get(self, key, default=None):
        """Return the value of ``key`` (marking it recently used), or ``default``."""
        slot = self._find(0, key)
        if slot < 0:
            return default
        self._touch(slot)
        return self._values[slot]

    def peek(self, key, default=None):
        """Return the value of ``key`` without marking it used, or ``default``."""
        slot = self._find(0, key)
        return default if slot < 0 else self._values[slot]

    def pop(self, key, *default):
        """Remove ``key`` and return its value; ``default`` if given and absent, else KeyError."""
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        slot = self._find(0, key)
        if slot < 0:
            if default:
                return default[0]
            raise CacheKeyError(key)
        return self._detach(slot, False, True)[2]

    def popitem(self):
        """Remove and return ``(key, value)`` of the entry the policy would evict next."""
        slot = self._victim(NONE)
        if slot == NONE:
            raise CacheKeyError("popitem(): cache is empty")
        record = self._detach(slot, True, True)
        return record[1], record[2]

    def clear(self):
        """Remove every entry (hit and miss counters are kept)."""
        self._reset()

    @property
    def currsize(self):
        """Sum of the entries' sizes (bytes when sized, else the number of entries)."""
        return self._total_bytes

    @property
    def max_bytes(self):
        """The byte budget, or None."""
        return None if self._max_bytes < 0 else self._max_bytes

    @property
    def max_entries(self):
        """The entry budget, or None."""
        return None if self._max_entries < 0 else self._max_entries

    # -- partitioned API, what the memory tier uses -----------------------------------------

    def part_get(self, part, key, default):
        """Return the value under ``(part, key)`` and count a hit, or count a miss and return
        ``default`` (also for an expired entry, which stays until removed by its owner)."""
        self._check_part(part)
        slot = self._find(part, key)
        if slot < 0 or (self._expires[slot] != 0.0 and self._expired(slot)):
            self._stats["misses"][part] += 1
            return default
        self._touch(slot)
        self._stats["hits"][part] += 1
        return self._values[slot]

    def part_lookup(self, part, key, touch=True):
        """Return ``(value, extra, cost, expires)`` of a live entry (marking it used when
        ``touch``), or None. Counts nothing: see :meth:`TierIndex.record_lookup`."""
        self._check_part(part)
        slot = self._find(part, key)
        if slot < 0 or self._expired(slot):
            return None
        if touch:
            self._touch(slot)
        return (self._values[slot], self._extras[slot], self._costs[slot], self._expires[slot])

    def part_expired(self, part, key):
        """True if ``(part, key)`` is present but past its expiry time."""
        self._check_part(part)
        slot = self._find(part, key)
        return slot >= 0 and self._expired(slot)

    def part_insert(self, part, key, value, size, cost=1.0, expires=0.0, extra=None):
        """Store ``(part, key) -> value``, evicting as the budgets require.

        Returns the removed entries as ``(part, key, value, size, extra)`` tuples, the
        replaced entry (if any) first, then the evicted ones in eviction order; their
        ``extra`` tells them apart for an owner that keeps one per entry.

        Raises
        ------
        ValueTooLargeError
            If ``size`` exceeds ``max_bytes`` (nothing is changed).
        """
        self._check_part(part)
        size = operator.index(size)
        if size < 0:
            raise InvalidArgumentError(f"size must be >= 0, not {size}")
        if isinstance(cost, (str, bytes)):
            raise TypeError(f"cost must be a number, not {type(cost).__name__}")
        cost = float(cost)
        if not cost >= 0.0 or cost == float("inf"):
            raise InvalidArgumentError(f"cost must be a finite number >= 0, not {cost!r}")
        return self._insert(part, key, value, size, cost, float(expires), extra, COLLECT_ALL) or []

    def part_remove(self, part, key, extra=None):
        """Remove ``(part, key)`` (only if its extra is ``extra`` when one is given);
        return its ``(part, key, value, size, extra)`` record, or None."""
        self._check_part(part)
        slot = self._find(part, key)
        if slot < 0 or (extra is not None and self._extras[slot] is not extra):
            return None
        return self._detach(slot, False, True)

    def remove_records(self, records):
        """Remove each ``((part, key), extra)`` whose entry still carries that ``extra``
        (``records`` may be a dict's ``items()``); return the removed entries' records
        (same form as :meth:`part_insert`'s)."""
        removed = []
        for (part, key), extra in records:
            slot = self._find(part, key)
            if slot >= 0 and self._extras[slot] is extra:
                removed.append(self._detach(slot, False, True))
        return removed

    def clear_part(self, part):
        """Remove every entry of ``part``; return their records."""
        self._check_part(part)
        return [self._detach(slot, False, True) for slot in list(self._maps[part].values())]

    def part_keys(self, part):
        """Keys of ``part``, least recently used first (a snapshot list)."""
        self._check_part(part)
        out = []
        slot = self._oldest
        while slot != NONE:
            if self._parts[slot] == part:
                out.append(self._keys[slot])
            slot = self._next[slot]
        return out

    def part_len(self, part):
        """Number of entries in ``part`` (expired ones included until removed)."""
        return self._part_counts[self._check_part(part)]

    def part_bytes(self, part):
        """Sum of the sizes of ``part``'s entries."""
        return self._part_bytes[self._check_part(part)]

    def counters(self):
        """Cumulative counts per partition: ``{name: [count of partition 0, 1, ...]}`` for
        ``hits``, ``misses``, ``sets``, ``bytes_written``, ``evictions``, ``evicted_bytes``
        and ``rejected``."""
        return {name: list(counts) for name, counts in self._stats.items()}

    def reset_counters(self):
        """Zero every counter of :meth:`counters`."""
        self._stats = {name: [0] * self.nparts for name in COUNTER_NAMES}

    def expired_records(self):
        """``(part, key, extra)`` of every entry past its expiry time (O(n))."""
        out = []
        slot = self._oldest
        now = None
        while slot != NONE:
            if self._expires[slot] != 0.0:
                if now is None:
                    now = self._timer()
                if now >= self._expires[slot]:
                    out.append((self._parts[slot], self._keys[slot], self._extras[slot]))
            slot = self._next[slot]
        return out

    def check(self):
        """Verify every internal invariant (for tests); raise AssertionError on the first broken."""
        slot, seen, prev, total = self._oldest, 0, NONE, 0
        counts = [0] * self.nparts
        nbytes = [0] * self.nparts
        while slot != NONE:
            assert self._prev[slot] == prev, "broken prev link"
            assert self._maps[self._parts[slot]].get(self._keys[slot]) == slot, "map and slot disagree"
            total += self._sizes[slot]
            counts[self._parts[slot]] += 1
            nbytes[self._parts[slot]] += self._sizes[slot]
            seen += 1
            prev = slot
            slot = self._next[slot]
        assert prev == self._newest, "newest is not the list tail"
        assert seen == self._count == sum(len(m) for m in self._maps), "entry count mismatch"
        assert total == self._total_bytes, "byte total mismatch"
        assert counts == self._part_counts, "partition counts"
        assert nbytes == self._part_bytes, "partition bytes"
        if self._max_bytes >= 0:
            assert self._total_bytes <= self._max_bytes, "byte budget exceeded"
        if self._max_entries >= 0:
            assert self._count <= self._max_entries, "entry budget exceeded"
        if self._gdsf:
            assert self._heap_len == self._count, "heap size mismatch"
            for i in range(self._heap_len):
                slot = self._heap[i]
                assert self._heap_pos[slot] == i, "heap position mismatch"
                assert (self._heap_prio[i], self._heap_tick[i]) <= (self._prios[slot], self._ticks[slot]), \
                    "heap key ahead of its entry"
                if i:
                    assert not self._heap_less(i, (i - 1) >> 1), "heap order broken"


class TierIndex(LRUIndex):
    """An :class:`LRUIndex` with the memory tier's get and set in one call each.

    Hits and misses are counted, and timed into per-partition latency histograms, here,
    and handed over in batches (:meth:`take_latency`).

    Every lookup is counted (and a hit's cost summed), but only about one in
    ``sample_every`` is timed, by the compiled index's rule: the first lookup is timed,
    then each next timed one comes ``1 + r % (2 * sample_every - 1)`` lookups later, ``r``
    the next number of a xorshift64 generator seeded with :data:`SAMPLE_SEED`: not
    periodic, so a repeating pattern of lookups has every kind timed in proportion.

    Parameters
    ----------
    levels : tuple
        The level of each partition, matched by identity first.
    level_parts : dict
        Every other accepted spelling of a level (value, name) -> partition number.
    default_part : int
        The partition of a call that names no level.
    hooks : object
        The owner's callables, read once: ``resolve_level(level) -> part`` (for spellings
        not in ``level_parts``; raises for an unknown level), ``copier(value)`` (a private
        copy, for ``copy=True``), ``on_expired(part, key)`` (a lookup met an expired entry),
        ``flush()`` or None (called every ``flush_interval`` seconds of use),
        ``freeze(value)`` (the value as stored), ``sizeof(value) -> int``,
        ``check_cost(cost) -> float``, ``check_ttl(ttl) -> expiry time``,
        ``check_dependencies(deps) -> frozenset``, ``no_dependencies`` (the empty frozenset
        given to entries without any), ``scalar_sizes`` (dict: exact type of immutable
        values, stored as they are -> their size, or a callable giving it) and
        ``view_types`` (types of stored values handed out as ``value.view()``).
    deps_index : dict
        ``dependency -> {(part, key): the entry's dependencies}``, kept up to date by
        :meth:`tier_set` and :meth:`forget`.
    lock : lock
        The owner's lock. Held by :meth:`tier_set` and, since a pure-Python call is not
        atomic, around the index work of :meth:`tier_get`, :meth:`record_lookup` and
        :meth:`take_latency` (call those without holding it).
    bounds : sequence of float or None
        Upper bounds (seconds, increasing) of the latency histogram buckets, plus one
        overflow bucket; None times nothing (and never calls ``flush``).
    flush_interval : float
        See ``hooks.flush``; checked when a lookup is timed and at each set.
    sample_every : int, default 1
        Time about one lookup in ``sample_every`` (1: every one); see above.
    **kwargs
        Passed to :class:`LRUIndex`.
    """

    def __init__(self, levels, level_parts, default_part, hooks, deps_index, lock, bounds=None,
                 flush_interval=0.25, sample_every=1, **kwargs):
        super().__init__(**kwargs)
        self._levels = tuple(levels)
        if len(self._levels) != self.nparts:
            raise InvalidArgumentError(f"levels needs {self.nparts} items, got {len(self._levels)}")
        self._default_part = self._check_part(default_part)
        self._level_parts = dict(level_parts)
        for part in self._level_parts.values():
            self._check_part(part)
        self._resolve_level = hooks.resolve_level
        self._copier = hooks.copier
        self._on_expired = hooks.on_expired
        self._flush = hooks.flush if bounds is not None else None
        self._freeze = hooks.freeze
        self._sizeof = hooks.sizeof
        self._check_cost = hooks.check_cost
        self._check_ttl = hooks.check_ttl
        self._check_dependencies = hooks.check_dependencies
        self._no_dependencies = hooks.no_dependencies
        self._scalar_sizes = dict(hooks.scalar_sizes)
        self._view_types = tuple(hooks.view_types)
        if not isinstance(deps_index, dict):
            raise InvalidArgumentError(f"deps_index must be a dict, not {deps_index!r}")
        self._deps_index = deps_index
        self._interned = {}
        self._lock = lock
        self._has_ttl = False
        self._flush_interval = float(flush_interval)
        if isinstance(sample_every, bool) or not isinstance(sample_every, int) or not (
                1 <= sample_every <= 1 << 30):
            raise InvalidArgumentError(f"sample_every must be an int in [1, 2**30], not {sample_every!r}")
        self.sample_every = sample_every
        self._sample_left = 1
        self._sample_rng = SAMPLE_SEED
        self._timed = bounds is not None
        self._bounds = []
        if self._timed:
            bounds = [float(b) for b in bounds]
            if not bounds or any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
                raise InvalidArgumentError("bounds must be a non-empty increasing sequence")
            self._bounds = bounds
        self._zero_latency()
        self._last_flush = _now()

    def part_of(self, level=UNSET):
        """The partition of ``level`` (the default partition when not given)."""
        if level is UNSET:
            return self._default_part
        for i, candidate in enumerate(self._levels):
            if level is candidate:
                return i
        try:
            return self._level_parts[level]
        except (KeyError, TypeError):
            return self._check_part(self._resolve_level(level))

    def _unindex(self, where, deps, dependency):
        """Drop ``where`` = (part, key) from ``deps_index`` under each of ``deps`` but
        ``dependency``."""
        deps_index = self._deps_index
        for dep in deps:
            if dependency is not None and dep == dependency:
                continue
            entries = deps_index.get(dep)
            if entries is not None:
                entries.pop(where, None)
                if not entries:
                    del deps_index[dep]

    def forget(self, records, dependency=None):
        """Drop removed entries' ``(part, key)`` from ``deps_index`` (except under
        ``dependency``, already popped by the caller). Caller holds the lock."""
        for part, key, _value, _size, deps in records:
            if len(deps) > (0 if dependency is None else 1):
                self._unindex((part, key), deps, dependency)

    def invalidate_entries(self, entries, dependency):
        """Remove the entries of ``entries`` (``dependency``'s dict, popped from
        ``deps_index`` by the caller) that still carry the dependencies recorded there, and
        drop them from ``deps_index`` under their other dependencies. Caller holds the lock.

        Returns the number removed per partition.
        """
        counts = [0] * self.nparts
        for where, deps in entries.items():
            part, key = where
            slot = self._find(part, key)
            if slot < 0 or self._extras[slot] is not deps:
                continue
            self._detach(slot, False, False)
            counts[part] += 1
            if len(deps) > 1:
                self._unindex(where, deps, dependency)
        return counts

    def invalidate_part(self, part):
        """Remove every entry of ``part`` and drop them from ``deps_index``; return how many.
        Caller holds the lock."""
        self._check_part(part)
        removed = 0
        for key, slot in list(self._maps[part].items()):
            deps = self._extras[slot]
            self._detach(slot, False, False)
            removed += 1
            if deps:
                self._unindex((part, key), deps, None)
        return removed

    def _intern(self, deps):
        """One shared frozenset per distinct set of dependencies: thousands of entries that
        name the same ones cost one object, not thousands for the garbage collector to walk."""
        shared = self._interned.get(deps)
        if shared is not None:
            return shared
        if len(self._interned) >= INTERN_LIMIT:
            self._interned.clear()
        self._interned[deps] = deps
        return deps

    def tier_set(self, key, value, level=UNSET, dependencies=(), computation_cost=1.0, ttl=None):
        """``set(key, value, level, dependencies=(), computation_cost=1.0, ttl=None)`` of the
        memory tier: True if stored, False if refused as larger than the byte budget (an
        older value under the same key is then removed, and ``rejected`` counted)."""
        part = self.part_of(level)
        if type(computation_cost) in (float, int) and 0.0 <= computation_cost < math.inf:
            cost = float(computation_cost)
        else:
            cost = self._check_cost(computation_cost)
        expires = 0.0 if ttl is None else self._check_ttl(ttl)
        deps_type = type(dependencies)
        raw_set = None  # a set resolved under the lock, against the entry it replaces
        if deps_type in (tuple, set, frozenset, list) and not dependencies:
            deps = self._no_dependencies
        elif deps_type is set or deps_type is frozenset:
            raw_set = dependencies
            deps = None
        elif deps_type is tuple or deps_type is list:
            try:
                deps = frozenset(dependencies)
            except TypeError:
                deps = self._check_dependencies(dependencies)  # raises, naming the culprit
        else:
            deps = self._check_dependencies(dependencies)
        if deps:
            deps = self._intern(deps)
        size = self._scalar_sizes.get(type(value))
        if size is not None:
            stored = value
            if type(size) is not int:
                size = size(value)
        else:
            stored = self._freeze(value)
            size = self._sizeof(stored)
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidArgumentError(f"getsizeof returned {size!r}; expected an int >= 0")
        with self._lock:
            if self._max_bytes >= 0 and size > self._max_bytes:
                slot = self._find(part, key)
                if slot >= 0:
                    self.forget([self._detach(slot, False, True)])
                self._stats["rejected"][part] += 1
                return False
            same_deps = False
            if deps is None or deps:
                # Same dependencies as the entry replaced: reuse its frozenset, so the
                # dependency index (which names entries by it) needs no change at all.
                slot = self._find(part, key)
                if slot >= 0:
                    old_deps = self._extras[slot]
                    if old_deps is deps or old_deps == (raw_set if deps is None else deps):
                        deps = old_deps
                        same_deps = True
                if deps is None:
                    deps = self._intern(frozenset(raw_set))
            removed = self._insert(part, key, stored, size, cost, expires, deps,
                                   COLLECT_EVICTED_WITH_EXTRA if same_deps else COLLECT_WITH_EXTRA)
            if removed is not None:
                self.forget(removed)
            if deps and not same_deps:
                for dep in deps:
                    entries = self._deps_index.get(dep)
                    if entries is None:
                        self._deps_index[dep] = {(part, key): deps}
                    else:
                        entries[part, key] = deps
            if expires != 0.0:
                self._has_ttl = True
        if self._flush is not None and _now() - self._last_flush >= self._flush_interval:
            self._last_flush = _now()
            self._flush()
        return True

    @property
    def ttl_used(self):
        """True once an entry with an expiry time has been stored (until :meth:`clear`)."""
        return self._has_ttl

    def clear(self):
        """Remove every entry (counters are kept)."""
        self._reset()
        self._has_ttl = False

    def _zero_latency(self):
        rows = 2 * self.nparts
        self._lat_events = [0] * rows
        self._hist = [[0] * (len(self._bounds) + 1) for _ in range(rows)]
        self._lat_sum = [0.0] * rows
        self._lat_cost = [0.0] * rows
        self._lat_min = [math.inf] * rows
        self._lat_max = [-math.inf] * rows

    def _sampled(self):
        """Whether this lookup is timed (the countdown of the compiled index). Caller holds
        the lock."""
        self._sample_left -= 1
        return self._sample_left <= 0

    def _record(self, row, seconds, now):
        """Add a timed lookup's duration (already counted); draw the gap to the next."""
        seconds = max(seconds, 0.0)
        with self._lock:
            self._hist[row][bisect.bisect_left(self._bounds, seconds)] += 1
            self._lat_sum[row] += seconds
            self._lat_min[row] = min(self._lat_min[row], seconds)
            self._lat_max[row] = max(self._lat_max[row], seconds)
            self._sample_rng = _xorshift64(self._sample_rng)
            self._sample_left = 1 + self._sample_rng % (2 * self.sample_every - 1)
            due = self._flush is not None and now - self._last_flush >= self._flush_interval
            if due:
                self._last_flush = now
        if due:
            self._flush()

    def record_lookup(self, part, hit, seconds, cost=0.0):
        """Count a lookup timed by the owner (a hit or a miss of ``seconds``): its time is
        recorded whatever ``sample_every`` (the owner paid for it already).

        Takes the lock: call it without holding that lock.
        """
        self._check_part(part)
        row = part if hit else self.nparts + part
        seconds, cost = float(seconds), float(cost) if hit else 0.0
        with self._lock:
            self._stats["hits" if hit else "misses"][part] += 1
            if self._timed:
                self._lat_events[row] += 1
                self._lat_cost[row] += cost
        if self._timed:
            self._record(row, seconds, _now())

    def take_latency(self):
        """Return and reset the histograms: ``{"hit"|"miss": {part: {"count", "sum", "cost",
        "buckets", "min", "max"}}}`` for the partitions with lookups since the last call.

        ``count`` (lookups) and ``cost`` (of the hits) are exact; ``buckets``, ``sum``,
        ``min`` and ``max`` are of the timed lookups (``min``/``max`` None if none was).
        """
        out = {"hit": {}, "miss": {}}
        self._last_flush = _now()
        if not self._timed:
            return out
        with self._lock:
            events, hist, sums, costs = self._lat_events, self._hist, self._lat_sum, self._lat_cost
            lows, highs = self._lat_min, self._lat_max
            self._zero_latency()
        for row, buckets in enumerate(hist):
            if events[row]:
                timed = sum(buckets)
                out["hit" if row < self.nparts else "miss"][row % self.nparts] = {
                    "count": events[row],
                    "sum": sums[row],
                    "cost": costs[row],
                    "buckets": buckets,
                    "min": lows[row] if timed else None,
                    "max": highs[row] if timed else None,
                }
        return out

    def tier_get(self, key, level=UNSET, default=None, *, copy=False):
        """``get(key, level, default=None, *, copy=False)`` of the memory tier.

        Returns the value (read-only arrays; a private copy with ``copy=True``), or
        ``default`` on a miss or an expired entry.
        """
        part = self.part_of(level)
        with self._lock:
            sampled = self._timed and self._sampled()
            started = _now() if sampled else 0.0
            slot = self._find(part, key)
            hit = slot >= 0 and not (self._expires[slot] != 0.0 and self._expired(slot))
            if hit:
                self._touch(slot)
                self._stats["hits"][part] += 1
                value = self._values[slot]
                cost = self._costs[slot]
                if self._timed:
                    self._lat_events[part] += 1
                    self._lat_cost[part] += cost
            else:
                self._stats["misses"][part] += 1
                if self._timed:
                    self._lat_events[self.nparts + part] += 1
        # Recording may flush, which takes the lock: only once it is released.
        if not hit:
            if sampled:
                now = _now()
                self._record(self.nparts + part, now - started, now)
            if slot >= 0:
                self._on_expired(part, key)
            return default
        if copy:
            value = self._copier(value)
        elif isinstance(value, self._view_types):
            # A view: its writeable flag cannot be turned back on, the owner's could.
            value = value.view()
        if sampled:
            now = _now()
            self._record(part, now - started, now)
        return value
