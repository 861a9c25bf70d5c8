"""LRUCache: a byte-budgeted LRU (or GDSF) mapping, a drop-in for cachetools and lru-dict.

>>> from tnfr_fastcache import LRUCache
>>> cache = LRUCache(max_bytes=64 * 2**20)       # sizes from tnfr_fastcache.sizing.sizeof
>>> cache["w"] = b"x" * 1000
>>> cache["w"][:3]
b'xxx'
>>> LRUCache(max_entries=2).maxsize               # like cachetools.LRUCache(maxsize=2)
2
"""

from collections.abc import MutableMapping

from . import sizing
from ._impl import load
from .errors import InvalidArgumentError

__all__ = ["LRUCache"]

_lru = load("_lru")


class LRUCache(_lru.LRUIndex, MutableMapping):
    """A mapping that forgets its least recently used entries to stay within its budgets.

    The bookkeeping is a compiled index (a linked list and, for ``"gdsf"``, a heap over
    slots in C arrays, with one dict from key to slot): a hit is one dict lookup and a few
    stores, an insert or removal O(1) (``"lru"``) or O(log n) (``"gdsf"``).

    Parameters
    ----------
    max_bytes : int, optional
        Budget on the sum of the values' sizes. Sizes come from ``getsizeof``, or
        :func:`tnfr_fastcache.sizing.sizeof` (``nbytes`` of arrays, recursive estimates of
        containers) when only ``max_bytes`` is given.
    max_entries : int, optional
        Budget on the number of entries (cachetools' ``maxsize`` when sizes are 1).
    policy : {"lru", "gdsf"}, default "lru"
        ``"gdsf"`` evicts by greedy-dual-size-frequency (small, often used entries stay).
    getsizeof : callable, optional
        ``getsizeof(value) -> int``, as in cachetools; without it and without ``max_bytes``
        every entry has size 1, so ``currsize == len(cache)``.

    Raises
    ------
    ValueTooLargeError
        (a ``ValueError``, as cachetools raises) on storing a value larger than ``max_bytes``;
        the cache is left unchanged.

    Notes
    -----
    Each call is atomic under the GIL (compiled implementation), like lru-dict; compound
    sequences (check then set) need the caller's lock, as with cachetools.
    """

    def __init__(self, max_bytes=None, max_entries=None, policy="lru", getsizeof=None):
        if max_bytes is None and max_entries is None:
            raise InvalidArgumentError("give max_bytes, max_entries or both: an unbounded LRU is a dict")
        if getsizeof is None and max_bytes is not None:
            getsizeof = sizing.sizeof
        super().__init__(max_bytes=max_bytes, max_entries=max_entries, policy=policy,
                         getsizeof=getsizeof)

    @property
    def maxsize(self):
        """The budget ``currsize`` is held to: ``max_bytes`` if given, else ``max_entries``."""
        return self.max_bytes if self.max_bytes is not None else self.max_entries

    def setdefault(self, key, default=None):
        """Return ``self[key]`` if present, else store and return ``default``."""
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            self[key] = default
            return default
        return value

    def keys(self):
        """Keys from least to most recently used (a snapshot)."""
        return self.part_keys(0)

    def values(self):
        """Values from least to most recently used (a snapshot; does not mark them used)."""
        return [self.peek(key) for key in self.part_keys(0)]

    def items(self):
        """``(key, value)`` from least to most recently used (a snapshot; marks none used)."""
        return [(key, self.peek(key)) for key in self.part_keys(0)]

    def __repr__(self):
        return (
            f"LRUCache(max_bytes={self.max_bytes!r}, max_entries={self.max_entries!r}, "
            f"policy={self.policy!r}, currsize={self.currsize}, len={len(self)})"
        )


_ABSENT = object()
