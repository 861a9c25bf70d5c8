# cython: language_level=3
"""C-level table of contents of the byte-budgeted LRU/GDSF index (see _lru.pyx)."""

from libc.stdint cimport int64_t, uint64_t


# One GDSF heap position: its key (which may lag below its entry's priority and tick) and
# the entry's slot, together so that a node's four children share two cache lines.
cdef struct HeapItem:
    double prio
    uint64_t tick
    Py_ssize_t slot


cdef class LRUIndex:
    # Python-visible state
    cdef readonly Py_ssize_t nparts
    cdef readonly str policy
    cdef readonly object getsizeof
    cdef object timer
    # per partition: dict key -> slot (a Python int)
    cdef list maps
    # per slot: the Python objects
    cdef list keys
    cdef list values
    cdef list extras
    cdef list slot_objs
    # per slot: the C bookkeeping (arrays of `capacity` items)
    cdef Py_ssize_t *prev
    cdef Py_ssize_t *next
    cdef int64_t *sizes
    cdef double *costs
    cdef double *expires
    cdef double *prios
    cdef uint64_t *ticks
    cdef Py_ssize_t *heap_pos
    cdef HeapItem *heap
    cdef unsigned char *parts
    cdef int64_t *freqs
    # per partition counters
    cdef int64_t *part_bytes_
    cdef int64_t *part_counts
    # NSTATS rows (hits, misses, sets, ...: see COUNTER_NAMES) of one int64 per partition
    cdef int64_t *stats
    # global state
    cdef Py_ssize_t capacity
    cdef Py_ssize_t count
    cdef Py_ssize_t free_head
    cdef Py_ssize_t oldest
    cdef Py_ssize_t newest
    cdef Py_ssize_t heap_len
    cdef int64_t total_bytes
    cdef int64_t max_bytes_
    cdef int64_t max_entries_
    cdef bint gdsf
    cdef double clock
    cdef uint64_t tick

    cdef int _grow(self) except -1
    cdef Py_ssize_t _find(self, Py_ssize_t part, object key) except -2
    cdef bint _expired(self, Py_ssize_t slot) except -1
    cdef void _touch(self, Py_ssize_t slot) noexcept
    cdef void _link_newest(self, Py_ssize_t slot) noexcept
    cdef void _unlink(self, Py_ssize_t slot) noexcept
    cdef void _heap_swap(self, Py_ssize_t i, Py_ssize_t j) noexcept
    cdef bint _heap_less(self, Py_ssize_t i, Py_ssize_t j) noexcept
    cdef void _sift_up(self, Py_ssize_t i) noexcept
    cdef void _sift_down(self, Py_ssize_t i) noexcept
    cdef void _heap_push(self, Py_ssize_t slot) noexcept
    cdef void _heap_remove(self, Py_ssize_t slot) noexcept
    cdef Py_ssize_t _victim(self, Py_ssize_t keep) noexcept
    cdef tuple _detach(self, Py_ssize_t slot, bint evicted, bint collect)
    cdef int64_t _size_of(self, object value) except -1
    cdef list _insert(self, Py_ssize_t part, object key, object value, int64_t size,
                      double cost, double expires, object extra, int collect)


cdef class TierIndex(LRUIndex):
    cdef tuple levels
    cdef Py_ssize_t default_part
    cdef dict level_parts
    cdef object resolve_level
    cdef object copier
    cdef object on_expired
    cdef object flush
    cdef object freeze
    cdef object sizeof
    cdef object check_cost
    cdef object check_ttl
    cdef object check_dependencies
    cdef object no_dependencies
    cdef dict scalar_sizes
    cdef tuple view_types
    cdef dict deps_index
    cdef dict interned
    cdef object lock_acquire
    cdef object lock_release
    cdef bint has_ttl
    cdef double flush_interval
    cdef double last_flush
    cdef bint timed
    # 1 lookup in about `sample_every` is timed: see TierIndex's docstring
    cdef readonly Py_ssize_t sample_every
    cdef Py_ssize_t sample_left
    cdef uint64_t sample_rng
    cdef Py_ssize_t nbounds
    cdef double *bounds
    # rows 0..nparts-1 are hits, nparts..2*nparts-1 misses; lat_events and lat_cost count
    # every lookup, the others only the timed ones
    cdef int64_t *lat_events
    cdef int64_t *hist
    cdef double *lat_sum
    cdef double *lat_cost
    cdef double *lat_min
    cdef double *lat_max

    cdef Py_ssize_t _part_of(self, object level) except -1
    cdef int _forget(self, list records, object dependency) except -1
    cdef int _unindex(self, object where, object deps, object dependency) except -1
    cdef object _intern(self, object deps)
    cdef void _zero_latency(self) noexcept
    cdef int _record(self, Py_ssize_t row, double seconds, double now) except -1
