"""How many bytes a cached value holds, for byte budgets that hold.

``sys.getsizeof`` alone counts a 15 MB array view as 112 bytes and a list of arrays as
its pointer table. :func:`sizeof` counts what the value keeps alive instead:

- numpy arrays: ``nbytes`` of the data plus the array object's header (a view is counted
  as if it owned its data, since the caches keep private copies);
- ``bytes``, ``bytearray``, ``str``: their length plus the object header;
- ``memoryview``: ``nbytes`` plus its header;
- lists, tuples, sets, dicts: the container plus a recursive estimate of the items,
  bounded in depth and in items visited (the rest is extrapolated from the average of
  those seen), each object counted once (shared items and cycles are not double counted);
- objects with a ``__dict__`` or ``__slots__`` (scipy sparse matrices, networkx graphs,
  dataclasses): the object plus its attributes, with the same bounds;
- anything else: ``sys.getsizeof`` (its ``__sizeof__`` plus the GC header).

The disk tier and the decorator reuse it; every cache also takes a ``getsizeof=`` hook
that replaces it.
"""

import sys

import numpy as np

__all__ = ["sizeof", "MAX_DEPTH", "MAX_ITEMS"]

MAX_DEPTH = 8
"""Containers nested deeper than this are counted with ``sys.getsizeof`` only."""

MAX_ITEMS = 4096
"""Items visited in one call; the remaining items of a container are extrapolated."""

_ARRAY_HEADER = sys.getsizeof(np.empty(0))
_getsizeof = sys.getsizeof
_ndarray = np.ndarray
_SCALARS = frozenset({int, float, bool, complex, type(None), bytes, str, bytearray})
_SEQUENCES = (list, tuple, set, frozenset)


def sizeof(value):
    """Return the number of bytes ``value`` keeps alive (an estimate for large containers).

    Parameters
    ----------
    value : object
        Any Python object.

    Returns
    -------
    int
        A positive byte count.

    Examples
    --------
    >>> import numpy as np
    >>> sizeof(np.zeros((1000, 1000))) >= 8_000_000
    True
    """
    cls = type(value)
    if cls is _ndarray:
        return value.nbytes + _ARRAY_HEADER
    if cls in _SCALARS:
        return _getsizeof(value)
    return _Walker().size(value, 0)


class _Walker:
    """One bounded walk: the memo of objects already counted and the item allowance."""

    __slots__ = ("seen", "budget")

    def __init__(self):
        self.seen = set()
        self.budget = MAX_ITEMS

    def size(self, value, depth):
        cls = type(value)
        if cls in _SCALARS:
            return _getsizeof(value)
        ident = id(value)
        if ident in self.seen:
            return 0
        self.seen.add(ident)
        if isinstance(value, _ndarray):
            return value.nbytes + _ARRAY_HEADER
        if isinstance(value, memoryview):
            return value.nbytes + _getsizeof(value)
        own = _getsizeof(value)
        if depth >= MAX_DEPTH:
            return own
        if isinstance(value, dict):
            return own + self._items(value.items(), len(value), depth, pairs=True)
        if isinstance(value, _SEQUENCES):
            return own + self._items(value, len(value), depth, pairs=False)
        attrs = getattr(value, "__dict__", None)
        if isinstance(attrs, dict):
            own += self.size(attrs, depth + 1)
        for name in _slot_names(cls):
            try:
                item = getattr(value, name)
            except AttributeError:
                continue
            own += self.size(item, depth + 1)
        return own

    def _items(self, items, count, depth, pairs):
        if count == 0:
            return 0
        total = 0
        visited = 0
        for item in items:
            if self.budget <= 0:
                break
            self.budget -= 1
            visited += 1
            if pairs:
                total += self.size(item[0], depth + 1) + self.size(item[1], depth + 1)
            else:
                total += self.size(item, depth + 1)
        if visited < count:
            # Extrapolate from the items seen so a huge list is not counted as its first few.
            average = total / visited if visited else _getsizeof(0)
            total += int(average * (count - visited))
        return total


def _slot_names(cls):
    names = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        names.extend(s for s in slots if s not in ("__dict__", "__weakref__"))
    return names
