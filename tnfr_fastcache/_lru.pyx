# cython: language_level=3, embedsignature=True
"""Byte-budgeted LRU / GDSF index: the bookkeeping behind LRUCache and the memory tier.

Entries live in numbered slots. Each partition (a cache level for the memory tier, a
single one for :class:`~tnfr_fastcache.lru.LRUCache`) has a dict ``key -> slot``; the slot
holds the key, value and an owner's ``extra`` in Python lists, and the size, cost, expiry,
recency links and heap position in C arrays. A hit is one dict lookup plus a few C stores;
an insert or removal is O(1) under ``"lru"`` and O(log n) under ``"gdsf"``
(greedy-dual-size-frequency: priority = clock + frequency * cost / size, the clock rising
to the priority of each evicted entry so that old favourites age out).

Thread safety: every public method finishes its bookkeeping before it can run Python code
that might switch threads (a key's ``__eq__``, a released value's ``__del__``): dict
operations come first and released objects are dropped last, so under the GIL each call
is atomic and no interleaving can hand out another key's value. Compound operations of an
owner (the memory tier) take the owner's lock.
"""

cimport cython
from cpython.dict cimport PyDict_DelItem
from cpython.exc cimport PyErr_Clear, PyErr_ExceptionMatches, PyErr_Occurred
from cpython.list cimport PyList_GET_ITEM
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint64_t
from libc.math cimport INFINITY
from libc.string cimport memcpy, memset

from .errors import CacheKeyError, InvalidArgumentError, UnhashableKeyError, ValueTooLargeError

cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object d, object key)
    PyObject* PyDict_SetDefault(object d, object key, object default)

__all__ = ["LRUIndex", "TierIndex", "POLICIES", "UNSET", "ATOMIC_CALLS"]

ATOMIC_CALLS = True
"""Each call is atomic under the GIL (see the module docstring)."""

POLICIES = ("lru", "gdsf")

cdef Py_ssize_t NONE = -1

# Rows of LRUIndex.stats, one int64 per partition each.
COUNTER_NAMES = ("hits", "misses", "sets", "bytes_written", "evictions", "evicted_bytes", "rejected")
cdef enum:
    HITS = 0
    MISSES = 1
    SETS = 2
    BYTES_WRITTEN = 3
    EVICTIONS = 4
    EVICTED_BYTES = 5
    REJECTED = 6
    NSTATS = 7
    COLLECT_NONE = 0
    COLLECT_ALL = 1
    COLLECT_WITH_EXTRA = 2
    COLLECT_EVICTED_WITH_EXTRA = 3
    # distinct dependency sets kept shared by TierIndex._intern before it starts over
    INTERN_LIMIT = 4096
    # parts[slot] of a free slot (partitions are 0..63)
    FREE_PART = 255

UNSET = object()
"""Default of ``TierIndex.tier_get``'s level: the owner's default partition."""
cdef Py_ssize_t INITIAL_CAPACITY = 16


cdef int64_t _limit(object value, str name) except -2:
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be a positive int or None, not {value!r}")
    if value < 1:
        raise InvalidArgumentError(f"{name} must be at least 1 (or None for no limit), not {value!r}")
    return value


cdef int _raise_unhashable(object key) except -1:
    # Only TypeError (unhashable) is translated; anything else a key's __eq__ raised passes through.
    if PyErr_ExceptionMatches(TypeError):
        PyErr_Clear()
        raise UnhashableKeyError(f"cache key {key!r} of type {type(key).__name__} is not hashable")
    return -1


cdef class LRUIndex:
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

    def __cinit__(self):
        self.capacity = 0
        self.prev = NULL
        self.next = NULL
        self.sizes = NULL
        self.costs = NULL
        self.expires = NULL
        self.prios = NULL
        self.ticks = NULL
        self.heap_pos = NULL
        self.heap = NULL
        self.parts = NULL
        self.freqs = NULL
        self.part_bytes_ = NULL
        self.part_counts = NULL
        self.stats = NULL

    def __init__(self, max_bytes=None, max_entries=None, policy="lru", getsizeof=None,
                 nparts=1, timer=None):
        if policy not in POLICIES:
            raise InvalidArgumentError(f"policy must be one of {POLICIES}, not {policy!r}")
        if getsizeof is not None and not callable(getsizeof):
            raise InvalidArgumentError(f"getsizeof must be callable or None, not {getsizeof!r}")
        if isinstance(nparts, bool) or not isinstance(nparts, int) or not 1 <= nparts <= 64:
            raise InvalidArgumentError(f"nparts must be an int from 1 to 64, not {nparts!r}")
        if timer is None:
            import time
            timer = time.time
        elif not callable(timer):
            raise InvalidArgumentError(f"timer must be callable, not {timer!r}")
        self.max_bytes_ = _limit(max_bytes, "max_bytes")
        self.max_entries_ = _limit(max_entries, "max_entries")
        if self.part_bytes_ != NULL:
            raise InvalidArgumentError("LRUIndex.__init__ may only be called once")
        self.policy = policy
        self.gdsf = policy == "gdsf"
        self.getsizeof = getsizeof
        self.timer = timer
        self.nparts = nparts
        self.part_bytes_ = <int64_t *>PyMem_Realloc(NULL, nparts * sizeof(int64_t))
        self.part_counts = <int64_t *>PyMem_Realloc(NULL, nparts * sizeof(int64_t))
        self.stats = <int64_t *>PyMem_Realloc(NULL, NSTATS * nparts * sizeof(int64_t))
        if self.part_bytes_ == NULL or self.part_counts == NULL or self.stats == NULL:
            raise MemoryError()
        memset(self.stats, 0, NSTATS * nparts * sizeof(int64_t))
        self.keys = []
        self.values = []
        self.extras = []
        self.slot_objs = []
        self._reset()

    def __dealloc__(self):
        PyMem_Free(self.prev)
        PyMem_Free(self.next)
        PyMem_Free(self.sizes)
        PyMem_Free(self.costs)
        PyMem_Free(self.expires)
        PyMem_Free(self.prios)
        PyMem_Free(self.ticks)
        PyMem_Free(self.heap_pos)
        PyMem_Free(self.heap)
        PyMem_Free(self.parts)
        PyMem_Free(self.freqs)
        PyMem_Free(self.part_bytes_)
        PyMem_Free(self.part_counts)
        PyMem_Free(self.stats)

    def _reset(self):
        """Forget every entry (the slot arrays are kept for reuse)."""
        self.maps = [{} for _ in range(self.nparts)]
        memset(self.part_bytes_, 0, self.nparts * sizeof(int64_t))
        memset(self.part_counts, 0, self.nparts * sizeof(int64_t))
        cdef Py_ssize_t i
        self.free_head = NONE
        for i in range(self.capacity - 1, -1, -1):
            self.next[i] = self.free_head
            self.free_head = i
        self.count = 0
        self.oldest = NONE
        self.newest = NONE
        self.heap_len = 0
        self.total_bytes = 0
        self.clock = 0.0
        self.tick = 0
        old = (self.keys, self.values, self.extras)
        self.keys = [None] * self.capacity
        self.values = [None] * self.capacity
        self.extras = [None] * self.capacity
        del old  # released only now that the index is consistent

    # -- C internals ---------------------------------------------------------------------

    cdef int _grow(self) except -1:
        cdef Py_ssize_t new_cap = INITIAL_CAPACITY if self.capacity == 0 else self.capacity * 2
        cdef Py_ssize_t i
        self.prev = <Py_ssize_t *>_realloc(self.prev, new_cap * sizeof(Py_ssize_t))
        self.next = <Py_ssize_t *>_realloc(self.next, new_cap * sizeof(Py_ssize_t))
        self.sizes = <int64_t *>_realloc(self.sizes, new_cap * sizeof(int64_t))
        self.costs = <double *>_realloc(self.costs, new_cap * sizeof(double))
        self.expires = <double *>_realloc(self.expires, new_cap * sizeof(double))
        self.prios = <double *>_realloc(self.prios, new_cap * sizeof(double))
        self.ticks = <uint64_t *>_realloc(self.ticks, new_cap * sizeof(uint64_t))
        self.heap_pos = <Py_ssize_t *>_realloc(self.heap_pos, new_cap * sizeof(Py_ssize_t))
        self.heap = <HeapItem *>_realloc(self.heap, new_cap * sizeof(HeapItem))
        self.parts = <unsigned char *>_realloc(self.parts, new_cap * sizeof(unsigned char))
        self.freqs = <int64_t *>_realloc(self.freqs, new_cap * sizeof(int64_t))
        # One int object per slot, made once, so an insert never allocates one.
        self.slot_objs.extend(range(self.capacity, new_cap))
        pad = [None] * (new_cap - self.capacity)
        self.keys.extend(pad)
        self.values.extend(pad)
        self.extras.extend(pad)
        for i in range(new_cap - 1, self.capacity - 1, -1):
            self.next[i] = self.free_head
            self.free_head = i
        self.capacity = new_cap
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef Py_ssize_t _find(self, Py_ssize_t part, object key) except -2:
        cdef PyObject *found
        # The one gate to self.maps: an unchecked index here would read past the list.
        if <size_t>part >= <size_t>self.nparts:
            _check_part(part, self.nparts)
        found = PyDict_GetItemWithError(<dict>PyList_GET_ITEM(self.maps, part), key)
        if found == NULL:
            if PyErr_Occurred():
                _raise_unhashable(key)
                return -2
            return NONE
        return <Py_ssize_t>(<object>found)

    cdef bint _expired(self, Py_ssize_t slot) except -1:
        return self.expires[slot] != 0.0 and self.timer() >= self.expires[slot]

    cdef void _link_newest(self, Py_ssize_t slot) noexcept:
        self.prev[slot] = self.newest
        self.next[slot] = NONE
        if self.newest == NONE:
            self.oldest = slot
        else:
            self.next[self.newest] = slot
        self.newest = slot

    cdef void _unlink(self, Py_ssize_t slot) noexcept:
        cdef Py_ssize_t p = self.prev[slot], n = self.next[slot]
        if p == NONE:
            self.oldest = n
        else:
            self.next[p] = n
        if n == NONE:
            self.newest = p
        else:
            self.prev[n] = p

    cdef void _touch(self, Py_ssize_t slot) noexcept:
        if slot != self.newest:
            self._unlink(slot)
            self._link_newest(slot)
        self.tick += 1
        self.ticks[slot] = self.tick
        if self.gdsf:
            self.freqs[slot] += 1
            # Only the entry's own priority rises; its heap key catches up lazily (_victim).
            self.prios[slot] = self.clock + self.freqs[slot] * self.costs[slot] / _eff(self.sizes[slot])

    cdef bint _heap_less(self, Py_ssize_t i, Py_ssize_t j) noexcept:
        if self.heap[i].prio != self.heap[j].prio:
            return self.heap[i].prio < self.heap[j].prio
        return self.heap[i].tick < self.heap[j].tick

    cdef void _heap_swap(self, Py_ssize_t i, Py_ssize_t j) noexcept:
        cdef HeapItem item = self.heap[i]
        self.heap[i] = self.heap[j]
        self.heap[j] = item
        self.heap_pos[self.heap[i].slot] = i
        self.heap_pos[item.slot] = j

    cdef void _heap_push(self, Py_ssize_t slot) noexcept:
        cdef Py_ssize_t i = self.heap_len
        self.heap[i].slot = slot
        self.heap[i].prio = self.prios[slot]
        self.heap[i].tick = self.ticks[slot]
        self.heap_pos[slot] = i
        self.heap_len += 1
        self._sift_up(i)

    cdef void _sift_up(self, Py_ssize_t i) noexcept:
        cdef Py_ssize_t parent
        while i > 0:
            parent = (i - 1) >> 2
            if not self._heap_less(i, parent):
                break
            self._heap_swap(i, parent)
            i = parent

    cdef void _sift_down(self, Py_ssize_t i) noexcept:
        # A 4-ary heap: half the depth of a binary one, and the four children side by side.
        cdef Py_ssize_t child, last, smallest
        while True:
            smallest = i
            child = 4 * i + 1
            last = child + 4 if child + 4 < self.heap_len else self.heap_len
            while child < last:
                if self._heap_less(child, smallest):
                    smallest = child
                child += 1
            if smallest == i:
                return
            self._heap_swap(i, smallest)
            i = smallest

    cdef void _heap_remove(self, Py_ssize_t slot) noexcept:
        cdef Py_ssize_t i = self.heap_pos[slot]
        cdef Py_ssize_t last = self.heap_len - 1
        if i == NONE:
            return
        if i != last:
            self._heap_swap(i, last)
        self.heap_len -= 1
        self.heap_pos[slot] = NONE
        if i != last:
            self._sift_down(i)
            self._sift_up(i)

    cdef Py_ssize_t _victim(self, Py_ssize_t keep) noexcept:
        """The entry to evict next, other than ``keep`` (NONE if there is none).

        GDSF keys in the heap may lag behind their entries' priorities (hits raise only the
        entry's own, see _touch): a root whose key is stale is refreshed and sunk until the
        root is current, and then it is the true minimum, since keys only ever lag below.
        ``keep`` is never in the heap while it is being inserted.
        """
        cdef Py_ssize_t slot
        if not self.gdsf:
            slot = self.oldest
            return self.next[slot] if slot == keep and slot != NONE else slot
        while self.heap_len:
            slot = self.heap[0].slot
            if self.heap[0].prio == self.prios[slot] and self.heap[0].tick == self.ticks[slot]:
                return slot
            self.heap[0].prio = self.prios[slot]
            self.heap[0].tick = self.ticks[slot]
            self._sift_down(0)
        return NONE

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef tuple _detach(self, Py_ssize_t slot, bint evicted, bint collect):
        """Remove ``slot``. With ``collect`` return ``(part, key, value, size, extra)``;
        the released objects are dropped only after the bookkeeping is consistent."""
        cdef Py_ssize_t part = self.parts[slot]
        cdef int64_t size = self.sizes[slot]
        self.parts[slot] = FREE_PART
        key = self.keys[slot]
        PyDict_DelItem(<dict>PyList_GET_ITEM(self.maps, part), key)
        value = self.values[slot]
        extra = self.extras[slot]
        self.keys[slot] = None
        self.values[slot] = None
        self.extras[slot] = None
        self._unlink(slot)
        if evicted:
            self.stats[EVICTIONS * self.nparts + part] += 1
            self.stats[EVICTED_BYTES * self.nparts + part] += size
        if self.gdsf:
            if evicted:
                self.clock = self.prios[slot]
            self._heap_remove(slot)
        self.total_bytes -= size
        self.part_bytes_[part] -= size
        self.part_counts[part] -= 1
        self.count -= 1
        self.next[slot] = self.free_head
        self.free_head = slot
        if collect:
            return (part, key, value, size, extra)
        return None

    cdef int64_t _size_of(self, object value) except -1:
        if self.getsizeof is None:
            return 1
        size = self.getsizeof(value)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidArgumentError(
                f"getsizeof must return a non-negative int, it returned {size!r} for a "
                f"{type(value).__name__}"
            )
        return size

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef list _insert(self, Py_ssize_t part, object key, object value, int64_t size,
                      double cost, double expires, object extra, int collect):
        """Store an entry; return the removed ones' records (the replaced one first) as the
        ``collect`` mode asks (COLLECT_NONE, COLLECT_ALL, COLLECT_WITH_EXTRA: only those
        whose extra is truthy, or COLLECT_EVICTED_WITH_EXTRA: those but the replaced one),
        or None when there are none."""
        # The new entry goes in first and eviction follows, skipping it: each step leaves the
        # index consistent, so a released value's __del__ running mid-way sees a whole index.
        cdef Py_ssize_t slot, victim
        cdef int64_t old_size
        cdef bint want
        cdef PyObject *found
        cdef list removed = None
        _check_part(part, self.nparts)
        if self.max_bytes_ >= 0 and size > self.max_bytes_:
            raise ValueTooLargeError(
                f"a value of {size} bytes cannot fit in a budget of {self.max_bytes_} bytes"
            )
        if self.free_head == NONE:
            self._grow()
        # One dict operation finds an existing entry or claims the first free slot.
        found = PyDict_SetDefault(<dict>PyList_GET_ITEM(self.maps, part), key,
                                  <object>PyList_GET_ITEM(self.slot_objs, self.free_head))
        if found == NULL:
            _raise_unhashable(key)
        slot = <Py_ssize_t>(<object>found)
        if slot != self.free_head:
            old_size = self.sizes[slot]
            old_value = self.values[slot]
            old_extra = self.extras[slot]
            self.values[slot] = value
            self.extras[slot] = extra
            self._unlink(slot)
            if self.gdsf:
                self._heap_remove(slot)
            self.total_bytes += size - old_size
            self.part_bytes_[part] += size - old_size
            if collect == COLLECT_ALL or (collect == COLLECT_WITH_EXTRA and old_extra):
                removed = [(part, self.keys[slot], old_value, old_size, old_extra)]
        else:
            self.free_head = self.next[slot]
            self.keys[slot] = key
            self.values[slot] = value
            self.extras[slot] = extra
            self.parts[slot] = <unsigned char>part
            self.total_bytes += size
            self.part_bytes_[part] += size
            self.part_counts[part] += 1
            self.count += 1
            self.heap_pos[slot] = NONE
        self.stats[SETS * self.nparts + part] += 1
        self.stats[BYTES_WRITTEN * self.nparts + part] += size
        self.sizes[slot] = size
        self.costs[slot] = cost
        self.expires[slot] = expires
        self.freqs[slot] = 1
        self.tick += 1
        self.ticks[slot] = self.tick
        self._link_newest(slot)
        while (self.max_entries_ >= 0 and self.count > self.max_entries_) or (
            self.max_bytes_ >= 0 and self.total_bytes > self.max_bytes_
        ):
            victim = self._victim(slot)
            if victim == NONE:
                break
            want = collect == COLLECT_ALL or (collect != COLLECT_NONE and self.extras[victim])
            record = self._detach(victim, True, want)
            if want:
                if removed is None:
                    removed = []
                removed.append(record)
        # Into the heap only now, priced at the clock the evictions left. (A __del__ run by
        # an eviction may have removed it, or even reused its slot, pushing it itself.)
        if self.gdsf and self.parts[slot] != FREE_PART and self.heap_pos[slot] == NONE:
            self.prios[slot] = self.clock + cost / _eff(size)
            self._heap_push(slot)
        return removed

    # -- mapping API (partition 0), what LRUCache exposes ---------------------------------

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def __getitem__(self, key):
        cdef Py_ssize_t slot = self._find(0, key)
        if slot < 0:
            raise CacheKeyError(key)
        self._touch(slot)
        return self.values[slot]

    def __setitem__(self, key, value):
        self._insert(0, key, value, self._size_of(value), 1.0, 0.0, None, COLLECT_NONE)

    def __delitem__(self, key):
        cdef Py_ssize_t slot = self._find(0, key)
        if slot < 0:
            raise CacheKeyError(key)
        self._detach(slot, False, False)

    def __contains__(self, key):
        return self._find(0, key) >= 0

    def __len__(self):
        return self.count

    def __iter__(self):
        return iter(self.part_keys(0))

    def get(self, key, default=None):
        """Return the value of ``key`` (marking it recently used), or ``default``."""
        cdef Py_ssize_t slot = self._find(0, key)
        if slot < 0:
            return default
        self._touch(slot)
        return self.values[slot]

    def peek(self, key, default=None):
        """Return the value of ``key`` without marking it used, or ``default``."""
        cdef Py_ssize_t slot = self._find(0, key)
        return default if slot < 0 else self.values[slot]

    def pop(self, key, *default):
        """Remove ``key`` and return its value; ``default`` if given and absent, else KeyError."""
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        cdef Py_ssize_t slot = self._find(0, key)
        if slot < 0:
            if default:
                return default[0]
            raise CacheKeyError(key)
        return self._detach(slot, False, True)[2]

    def popitem(self):
        """Remove and return ``(key, value)`` of the entry the policy would evict next."""
        cdef Py_ssize_t slot = self._victim(NONE)
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
        return self.total_bytes

    @property
    def max_bytes(self):
        """The byte budget, or None."""
        return None if self.max_bytes_ < 0 else self.max_bytes_

    @property
    def max_entries(self):
        """The entry budget, or None."""
        return None if self.max_entries_ < 0 else self.max_entries_

    # -- partitioned API, what the memory tier uses -----------------------------------------

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def part_get(self, Py_ssize_t part, key, default):
        """Return the value under ``(part, key)`` and count a hit, or count a miss and return
        ``default`` (also for an expired entry, which stays until removed by its owner)."""
        _check_part(part, self.nparts)
        cdef Py_ssize_t slot = self._find(part, key)
        if slot < 0 or (self.expires[slot] != 0.0 and self._expired(slot)):
            self.stats[MISSES * self.nparts + part] += 1
            return default
        self._touch(slot)
        self.stats[HITS * self.nparts + part] += 1
        return self.values[slot]

    def part_lookup(self, Py_ssize_t part, key, bint touch=True):
        """Return ``(value, extra, cost, expires)`` of a live entry (marking it used when
        ``touch``), or None. Counts nothing: see :meth:`TierIndex.record_lookup`."""
        _check_part(part, self.nparts)
        cdef Py_ssize_t slot = self._find(part, key)
        if slot < 0 or self._expired(slot):
            return None
        if touch:
            self._touch(slot)
        return (self.values[slot], self.extras[slot], self.costs[slot], self.expires[slot])

    def part_expired(self, Py_ssize_t part, key):
        """True if ``(part, key)`` is present but past its expiry time."""
        _check_part(part, self.nparts)
        cdef Py_ssize_t slot = self._find(part, key)
        return slot >= 0 and self._expired(slot)

    def part_insert(self, Py_ssize_t part, key, value, int64_t size, double cost=1.0,
                    double expires=0.0, extra=None):
        """Store ``(part, key) -> value``, evicting as the budgets require.

        Returns the removed entries as ``(part, key, value, size, extra)`` tuples, the
        replaced entry (if any) first, then the evicted ones in eviction order; their
        ``extra`` tells them apart for an owner that keeps one per entry.

        Raises
        ------
        ValueTooLargeError
            If ``size`` exceeds ``max_bytes`` (nothing is changed).
        """
        _check_part(part, self.nparts)
        if size < 0:
            raise InvalidArgumentError(f"size must be >= 0, not {size}")
        if not cost >= 0.0 or cost == float("inf"):
            raise InvalidArgumentError(f"cost must be a finite number >= 0, not {cost!r}")
        return self._insert(part, key, value, size, cost, expires, extra, COLLECT_ALL) or []

    def part_remove(self, Py_ssize_t part, key, extra=None):
        """Remove ``(part, key)`` (only if its extra is ``extra`` when one is given);
        return its ``(part, key, value, size, extra)`` record, or None."""
        _check_part(part, self.nparts)
        cdef Py_ssize_t slot = self._find(part, key)
        if slot < 0 or (extra is not None and self.extras[slot] is not extra):
            return None
        return self._detach(slot, False, True)

    def remove_records(self, records):
        """Remove each ``((part, key), extra)`` whose entry still carries that ``extra``
        (``records`` may be a dict's ``items()``); return the removed entries' records
        (same form as :meth:`part_insert`'s)."""
        cdef list removed = []
        cdef Py_ssize_t slot, part
        for (part, key), extra in records:
            slot = self._find(part, key)
            if slot >= 0 and self.extras[slot] is extra:
                removed.append(self._detach(slot, False, True))
        return removed

    def clear_part(self, Py_ssize_t part):
        """Remove every entry of ``part``; return their records."""
        _check_part(part, self.nparts)
        cdef list removed = []
        cdef Py_ssize_t slot
        for slot in list(self.maps[part].values()):
            removed.append(self._detach(slot, False, True))
        return removed

    def part_keys(self, Py_ssize_t part):
        """Keys of ``part``, least recently used first (a snapshot list)."""
        _check_part(part, self.nparts)
        cdef list out = []
        cdef Py_ssize_t slot = self.oldest
        while slot != NONE:
            if self.parts[slot] == part:
                out.append(self.keys[slot])
            slot = self.next[slot]
        return out

    def part_len(self, Py_ssize_t part):
        """Number of entries in ``part`` (expired ones included until removed)."""
        return self.part_counts[_check_part(part, self.nparts)]

    def part_bytes(self, Py_ssize_t part):
        """Sum of the sizes of ``part``'s entries."""
        return self.part_bytes_[_check_part(part, self.nparts)]

    def counters(self):
        """Cumulative counts per partition: ``{name: [count of partition 0, 1, ...]}`` for
        ``hits``, ``misses``, ``sets``, ``bytes_written``, ``evictions``, ``evicted_bytes``
        and ``rejected``."""
        cdef Py_ssize_t i, p
        return {
            name: [self.stats[i * self.nparts + p] for p in range(self.nparts)]
            for i, name in enumerate(COUNTER_NAMES)
        }

    def reset_counters(self):
        """Zero every counter of :meth:`counters`."""
        memset(self.stats, 0, NSTATS * self.nparts * sizeof(int64_t))

    def expired_records(self):
        """``(part, key, extra)`` of every entry past its expiry time (O(n))."""
        cdef list out = []
        cdef Py_ssize_t slot = self.oldest
        cdef object now = None
        while slot != NONE:
            if self.expires[slot] != 0.0:
                if now is None:
                    now = self.timer()
                if now >= self.expires[slot]:
                    out.append((self.parts[slot], self.keys[slot], self.extras[slot]))
            slot = self.next[slot]
        return out

    def check(self):
        """Verify every internal invariant (for tests); raise AssertionError on the first broken."""
        cdef Py_ssize_t slot = self.oldest, seen = 0, prev = NONE, i
        cdef int64_t total = 0
        counts = [0] * self.nparts
        nbytes = [0] * self.nparts
        while slot != NONE:
            assert self.prev[slot] == prev, "broken prev link"
            assert self.maps[self.parts[slot]].get(self.keys[slot]) == slot, "map and slot disagree"
            total += self.sizes[slot]
            counts[self.parts[slot]] += 1
            nbytes[self.parts[slot]] += self.sizes[slot]
            seen += 1
            prev = slot
            slot = self.next[slot]
        assert prev == self.newest, "newest is not the list tail"
        assert seen == self.count == sum(len(m) for m in self.maps), "entry count mismatch"
        assert total == self.total_bytes, "byte total mismatch"
        assert counts == [self.part_counts[i] for i in range(self.nparts)], "partition counts"
        assert nbytes == [self.part_bytes_[i] for i in range(self.nparts)], "partition bytes"
        if self.max_bytes_ >= 0:
            assert self.total_bytes <= self.max_bytes_, "byte budget exceeded"
        if self.max_entries_ >= 0:
            assert self.count <= self.max_entries_, "entry budget exceeded"
        if self.gdsf:
            assert self.heap_len == self.count, "heap size mismatch"
            for i in range(self.heap_len):
                slot = self.heap[i].slot
                assert self.heap_pos[slot] == i, "heap position mismatch"
                assert (self.heap[i].prio, self.heap[i].tick) <= (self.prios[slot], self.ticks[slot]), \
                    "heap key ahead of its entry"
                if i:
                    assert not self._heap_less(i, (i - 1) >> 2), "heap order broken"


cdef inline double _eff(int64_t size) noexcept:
    return <double>(size if size > 0 else 1)


cdef inline Py_ssize_t _check_part(Py_ssize_t part, Py_ssize_t nparts) except -1:
    if part < 0 or part >= nparts:
        raise InvalidArgumentError(f"partition {part} out of range 0..{nparts - 1}")
    return part


cdef void *_realloc(void *ptr, size_t nbytes) except NULL:
    cdef void *out = PyMem_Realloc(ptr, nbytes)
    if out == NULL:
        raise MemoryError()
    return out


cdef extern from *:
    """
    #if defined(_WIN32)
    #include <windows.h>
    static double tnfr_lru_now(void) {
        LARGE_INTEGER freq, count;
        QueryPerformanceFrequency(&freq);
        QueryPerformanceCounter(&count);
        return (double)count.QuadPart / (double)freq.QuadPart;
    }
    #else
    #include <time.h>
    static double tnfr_lru_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    #endif
    """
    double tnfr_lru_now() nogil

# Seed of the xorshift64 generator that spaces out timed lookups (any odd constant would do;
# a fixed one makes the choice of timed lookups reproducible, and the same in the pure twin).
cdef uint64_t SAMPLE_SEED = 0x9E3779B97F4A7C15ULL


cdef inline uint64_t _xorshift64(uint64_t x) noexcept nogil:
    x ^= x << 13
    x ^= x >> 7
    x ^= x << 17
    return x


cdef class TierIndex(LRUIndex):
    """An :class:`LRUIndex` with the memory tier's get and set in C.

    Hits and misses are counted, and timed into per-partition latency histograms, here, in
    C, and handed over in batches (:meth:`take_latency`), so a hit allocates nothing and
    calls no Python code. A set of a float (or another type of
    ``hooks.scalar_sizes``) with no dependencies calls no Python code either; anything
    else goes through the owner's hooks.

    Every lookup is counted (and a hit's cost summed), but only about one in
    ``sample_every`` is timed: its two clock reads and bucket search would otherwise cost
    more than half of a hit. The rule is deterministic: the first lookup of the index is
    timed, then each next timed one comes ``1 + r % (2 * sample_every - 1)`` lookups later
    (hits and misses of every partition alike), ``r`` the next number of a xorshift64
    generator seeded with ``0x9E3779B97F4A7C15``. The gaps average ``sample_every`` but are
    not periodic, so a workload that repeats a pattern of lookups (a hit then a miss, say)
    has every kind timed in proportion, and the histograms stay representative.

    Parameters
    ----------
    levels : tuple
        The level of each partition, matched by identity first (an enum member's hash is a
        Python-level call).
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
        The owner's lock, held by :meth:`tier_set` around the index and ``deps_index``.
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

    def __cinit__(self):
        self.bounds = NULL
        self.lat_events = NULL
        self.hist = NULL
        self.lat_sum = NULL
        self.lat_cost = NULL
        self.lat_min = NULL
        self.lat_max = NULL

    def __init__(self, levels, level_parts, default_part, hooks, deps_index, lock, bounds=None,
                 flush_interval=0.25, sample_every=1, **kwargs):
        super().__init__(**kwargs)
        cdef Py_ssize_t i, n
        self.levels = tuple(levels)
        if len(self.levels) != self.nparts:
            raise InvalidArgumentError(f"levels needs {self.nparts} items, got {len(self.levels)}")
        self.default_part = _check_part(default_part, self.nparts)
        self.level_parts = dict(level_parts)
        for part in self.level_parts.values():
            _check_part(part, self.nparts)
        self.resolve_level = hooks.resolve_level
        self.copier = hooks.copier
        self.on_expired = hooks.on_expired
        self.flush = hooks.flush if bounds is not None else None
        self.freeze = hooks.freeze
        self.sizeof = hooks.sizeof
        self.check_cost = hooks.check_cost
        self.check_ttl = hooks.check_ttl
        self.check_dependencies = hooks.check_dependencies
        self.no_dependencies = hooks.no_dependencies
        self.scalar_sizes = dict(hooks.scalar_sizes)
        self.view_types = tuple(hooks.view_types)
        if not isinstance(deps_index, dict):
            raise InvalidArgumentError(f"deps_index must be a dict, not {deps_index!r}")
        self.deps_index = deps_index
        self.interned = {}
        self.lock_acquire = lock.acquire
        self.lock_release = lock.release
        self.has_ttl = False
        self.flush_interval = flush_interval
        if isinstance(sample_every, bool) or not isinstance(sample_every, int) or not (
                1 <= sample_every <= 1 << 30):
            raise InvalidArgumentError(f"sample_every must be an int in [1, 2**30], not {sample_every!r}")
        self.sample_every = sample_every
        self.sample_left = 1
        self.sample_rng = SAMPLE_SEED
        self.timed = bounds is not None
        self.nbounds = 0
        if self.timed:
            bounds = [float(b) for b in bounds]
            if not bounds or any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
                raise InvalidArgumentError("bounds must be a non-empty increasing sequence")
            n = len(bounds)
            self.nbounds = n
            self.bounds = <double *>_realloc(NULL, n * sizeof(double))
            for i in range(n):
                self.bounds[i] = bounds[i]
            self.lat_events = <int64_t *>_realloc(NULL, 2 * self.nparts * sizeof(int64_t))
            self.hist = <int64_t *>_realloc(NULL, 2 * self.nparts * (n + 1) * sizeof(int64_t))
            self.lat_sum = <double *>_realloc(NULL, 2 * self.nparts * sizeof(double))
            self.lat_cost = <double *>_realloc(NULL, 2 * self.nparts * sizeof(double))
            self.lat_min = <double *>_realloc(NULL, 2 * self.nparts * sizeof(double))
            self.lat_max = <double *>_realloc(NULL, 2 * self.nparts * sizeof(double))
            self._zero_latency()
        self.last_flush = tnfr_lru_now()

    def __dealloc__(self):
        PyMem_Free(self.bounds)
        PyMem_Free(self.lat_events)
        PyMem_Free(self.hist)
        PyMem_Free(self.lat_sum)
        PyMem_Free(self.lat_cost)
        PyMem_Free(self.lat_min)
        PyMem_Free(self.lat_max)

    cdef Py_ssize_t _part_of(self, object level) except -1:
        cdef Py_ssize_t i
        cdef PyObject *found
        if level is UNSET:
            return self.default_part
        for i in range(self.nparts):
            if <PyObject *>level == PyTuple_GET_ITEM(self.levels, i):
                return i
        found = PyDict_GetItemWithError(self.level_parts, level)
        if found != NULL:
            return <Py_ssize_t>(<object>found)  # checked in __init__
        if PyErr_Occurred():
            PyErr_Clear()
        return _check_part(self.resolve_level(level), self.nparts)

    def part_of(self, level=UNSET):
        """The partition of ``level`` (the default partition when not given)."""
        return self._part_of(level)

    cdef int _forget(self, list records, object dependency) except -1:
        for record in records:
            deps = (<tuple>record)[4]
            if len(deps) > (0 if dependency is None else 1):
                self._unindex(((<tuple>record)[0], (<tuple>record)[1]), deps, dependency)
        return 0

    def forget(self, records, dependency=None):
        """Drop removed entries' ``(part, key)`` from ``deps_index`` (except under
        ``dependency``, already popped by the caller). Caller holds the lock."""
        self._forget(list(records), dependency)

    cdef int _unindex(self, object where, object deps, object dependency) except -1:
        """Drop ``where`` = (part, key) from ``deps_index`` under each of ``deps`` but
        ``dependency``."""
        for dep in deps:
            if dependency is not None and dep == dependency:
                continue
            entries = self.deps_index.get(dep)
            if entries is not None:
                (<dict>entries).pop(where, None)
                if not entries:
                    del self.deps_index[dep]
        return 0

    def invalidate_entries(self, entries, dependency):
        """Remove the entries of ``entries`` (``dependency``'s dict, popped from
        ``deps_index`` by the caller) that still carry the dependencies recorded there, and
        drop them from ``deps_index`` under their other dependencies. Caller holds the lock.

        Returns the number removed per partition. Builds no per-entry objects, so that
        removing 200k entries does not set off the cyclic garbage collector.
        """
        cdef Py_ssize_t slot, part
        cdef list counts = [0] * self.nparts
        for where, deps in (<dict?>entries).items():
            part = (<tuple?>where)[0]
            slot = self._find(part, (<tuple>where)[1])
            if slot < 0 or self.extras[slot] is not deps:
                continue
            self._detach(slot, False, False)
            counts[part] += 1
            if len(deps) > 1:
                self._unindex(where, deps, dependency)
        return counts

    def invalidate_part(self, Py_ssize_t part):
        """Remove every entry of ``part`` and drop them from ``deps_index``; return how many.
        Caller holds the lock."""
        _check_part(part, self.nparts)
        cdef Py_ssize_t slot, removed = 0
        for key, slot_obj in list(self.maps[part].items()):
            slot = slot_obj
            deps = self.extras[slot]
            self._detach(slot, False, False)
            removed += 1
            if deps:
                self._unindex((part, key), deps, None)
        return removed

    cdef object _intern(self, object deps):
        """One shared frozenset per distinct set of dependencies: thousands of entries that
        name the same ones cost one object, not thousands for the garbage collector to walk."""
        shared = self.interned.get(deps)
        if shared is not None:
            return shared
        if len(self.interned) >= INTERN_LIMIT:
            self.interned.clear()
        self.interned[deps] = deps
        return deps

    def tier_set(self, key, value, level=UNSET, dependencies=(), computation_cost=1.0, ttl=None):
        """``set(key, value, level, dependencies=(), computation_cost=1.0, ttl=None)`` of the
        memory tier: True if stored, False if refused as larger than the byte budget (an
        older value under the same key is then removed, and ``rejected`` counted)."""
        cdef Py_ssize_t part = self._part_of(level), slot
        cdef double cost, expires = 0.0
        cdef int64_t size
        cdef type cost_type = type(computation_cost)
        if cost_type is float or cost_type is int:
            cost = computation_cost
            if not (cost >= 0.0 and cost < INFINITY):
                cost = self.check_cost(computation_cost)
        else:
            cost = self.check_cost(computation_cost)
        if ttl is not None:
            expires = self.check_ttl(ttl)
        deps_type = type(dependencies)
        raw_set = None  # a set resolved under the lock, against the entry it replaces
        if (deps_type is tuple or deps_type is set or deps_type is frozenset
                or deps_type is list) and len(dependencies) == 0:
            deps = self.no_dependencies
        elif deps_type is set or deps_type is frozenset:
            raw_set = dependencies
            deps = None
        elif deps_type is tuple or deps_type is list:
            try:
                deps = frozenset(dependencies)
            except TypeError:
                deps = self.check_dependencies(dependencies)  # raises, naming the culprit
        else:
            deps = self.check_dependencies(dependencies)
        if deps:
            deps = self._intern(deps)
        known = self.scalar_sizes.get(type(value))
        if known is not None:
            stored = value
            size = known if type(known) is int else known(value)
        else:
            stored = self.freeze(value)
            size_obj = self.sizeof(stored)
            if isinstance(size_obj, bool) or not isinstance(size_obj, int) or size_obj < 0:
                raise InvalidArgumentError(f"getsizeof returned {size_obj!r}; expected an int >= 0")
            size = size_obj
        self.lock_acquire()
        try:
            if self.max_bytes_ >= 0 and size > self.max_bytes_:
                slot = self._find(part, key)
                if slot >= 0:
                    self._forget([self._detach(slot, False, True)], None)
                self.stats[REJECTED * self.nparts + part] += 1
                return False
            same_deps = False
            if deps is None or deps:
                # Same dependencies as the entry replaced: reuse its frozenset, so the
                # dependency index (which names entries by it) needs no change at all.
                slot = self._find(part, key)
                if slot >= 0:
                    old_deps = self.extras[slot]
                    if old_deps is deps or old_deps == (raw_set if deps is None else deps):
                        deps = old_deps
                        same_deps = True
                if deps is None:
                    deps = self._intern(frozenset(raw_set))  # members of a set are hashable
            removed = self._insert(part, key, stored, size, cost, expires, deps,
                                   COLLECT_EVICTED_WITH_EXTRA if same_deps else COLLECT_WITH_EXTRA)
            if removed is not None:
                self._forget(removed, None)
            if deps and not same_deps:
                where = (part, key)
                for dep in deps:
                    entries = self.deps_index.get(dep)
                    if entries is None:
                        self.deps_index[dep] = {where: deps}
                    else:
                        (<dict>entries)[where] = deps
            if expires != 0.0:
                self.has_ttl = True
        finally:
            self.lock_release()
        if self.flush is not None and tnfr_lru_now() - self.last_flush >= self.flush_interval:
            self.last_flush = tnfr_lru_now()
            self.flush()
        return True

    @property
    def ttl_used(self):
        """True once an entry with an expiry time has been stored (until :meth:`clear`)."""
        return self.has_ttl

    def clear(self):
        """Remove every entry (counters are kept)."""
        self._reset()
        self.has_ttl = False

    cdef void _zero_latency(self) noexcept:
        cdef Py_ssize_t i
        memset(self.hist, 0, 2 * self.nparts * (self.nbounds + 1) * sizeof(int64_t))
        for i in range(2 * self.nparts):
            self.lat_events[i] = 0
            self.lat_sum[i] = 0.0
            self.lat_cost[i] = 0.0
            self.lat_min[i] = INFINITY
            self.lat_max[i] = -INFINITY

    @cython.boundscheck(False)
    @cython.wraparound(False)
    @cython.cdivision(True)
    cdef int _record(self, Py_ssize_t row, double seconds, double now) except -1:
        """Add the duration of a timed lookup (already counted) to row ``row`` (``part`` for
        hits, ``nparts + part`` for misses); bucket i holds (bounds[i-1], bounds[i]], the
        last one the overflow. Draws the gap to the next timed lookup, and flushes if due."""
        cdef Py_ssize_t lo = 0, hi = self.nbounds, mid
        if seconds < 0.0:
            seconds = 0.0
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.bounds[mid] < seconds:
                lo = mid + 1
            else:
                hi = mid
        self.hist[row * (self.nbounds + 1) + lo] += 1
        self.lat_sum[row] += seconds
        if seconds < self.lat_min[row]:
            self.lat_min[row] = seconds
        if seconds > self.lat_max[row]:
            self.lat_max[row] = seconds
        self.sample_rng = _xorshift64(self.sample_rng)
        self.sample_left = 1 + <Py_ssize_t>(self.sample_rng % <uint64_t>(2 * self.sample_every - 1))
        if self.flush is not None and now - self.last_flush >= self.flush_interval:
            # Reset first so a flush that fails is not retried on every lookup.
            self.last_flush = now
            self.flush()
        return 0

    def record_lookup(self, Py_ssize_t part, bint hit, double seconds, double cost=0.0):
        """Count a lookup timed by the owner (a hit or a miss of ``seconds``): its time is
        recorded whatever ``sample_every`` (the owner paid for it already)."""
        _check_part(part, self.nparts)
        cdef Py_ssize_t row = part if hit else self.nparts + part
        if hit:
            self.stats[HITS * self.nparts + part] += 1
        else:
            self.stats[MISSES * self.nparts + part] += 1
            cost = 0.0
        if self.timed:
            self.lat_events[row] += 1
            self.lat_cost[row] += cost
            self._record(row, seconds, tnfr_lru_now())

    def take_latency(self):
        """Return and reset the histograms: ``{"hit"|"miss": {part: {"count", "sum", "cost",
        "buckets", "min", "max"}}}`` for the partitions with lookups since the last call.

        ``count`` (lookups) and ``cost`` (of the hits) are exact; ``buckets``, ``sum``,
        ``min`` and ``max`` are of the timed lookups (``min``/``max`` None if none was).
        """
        cdef Py_ssize_t row, i, base, rows = 2 * self.nparts, width = self.nbounds + 1
        cdef int64_t timed
        out = {"hit": {}, "miss": {}}
        self.last_flush = tnfr_lru_now()
        if not self.timed:
            return out
        # Copy and zero in C before building Python objects: building them can run other
        # threads' lookups, which must land in the fresh histograms, not be zeroed away.
        cdef int64_t *hist = <int64_t *>_realloc(NULL, (rows * width + rows) * sizeof(int64_t))
        cdef int64_t *events = hist + rows * width
        cdef double *sums = <double *>_realloc(NULL, 4 * rows * sizeof(double))
        memcpy(hist, self.hist, rows * width * sizeof(int64_t))
        memcpy(events, self.lat_events, rows * sizeof(int64_t))
        memcpy(sums, self.lat_sum, rows * sizeof(double))
        memcpy(sums + rows, self.lat_cost, rows * sizeof(double))
        memcpy(sums + 2 * rows, self.lat_min, rows * sizeof(double))
        memcpy(sums + 3 * rows, self.lat_max, rows * sizeof(double))
        self._zero_latency()
        try:
            for row in range(rows):
                if events[row] == 0:
                    continue
                base = row * width
                timed = 0
                for i in range(width):
                    timed += hist[base + i]
                out["hit" if row < self.nparts else "miss"][row % self.nparts] = {
                    "count": events[row],
                    "sum": sums[row],
                    "cost": sums[rows + row],
                    "buckets": [hist[base + i] for i in range(width)],
                    "min": sums[2 * rows + row] if timed else None,
                    "max": sums[3 * rows + row] if timed else None,
                }
        finally:
            PyMem_Free(hist)
            PyMem_Free(sums)
        return out

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def tier_get(self, key, level=UNSET, default=None, *, bint copy=False):
        """``get(key, level, default=None, *, copy=False)`` of the memory tier.

        Returns the value (read-only arrays; a private copy with ``copy=True``), or
        ``default`` on a miss or an expired entry.
        """
        cdef Py_ssize_t part = self._part_of(level), row
        cdef double started = 0.0, now
        cdef bint sampled = False
        if self.timed:
            self.sample_left -= 1
            # <= : a timed lookup that raised before its _record leaves it at 0, then below
            if self.sample_left <= 0:
                sampled = True
                started = tnfr_lru_now()
        cdef Py_ssize_t slot = self._find(part, key)
        if slot < 0 or (self.expires[slot] != 0.0 and self._expired(slot)):
            self.stats[MISSES * self.nparts + part] += 1
            if self.timed:
                row = self.nparts + part
                self.lat_events[row] += 1
                if sampled:
                    now = tnfr_lru_now()
                    self._record(row, now - started, now)
            if slot >= 0:
                self.on_expired(part, key)
            return default
        self._touch(slot)
        self.stats[HITS * self.nparts + part] += 1
        value = self.values[slot]
        cdef double cost = self.costs[slot]
        if copy:
            value = self.copier(value)
        elif isinstance(value, self.view_types):
            # A view: its writeable flag cannot be turned back on, the owner's could.
            value = value.view()
        if self.timed:
            self.lat_events[part] += 1
            self.lat_cost[part] += cost
            if sampled:
                now = tnfr_lru_now()
                self._record(part, now - started, now)
        return value
