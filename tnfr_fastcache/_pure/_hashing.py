"""Stable content digests of call arguments: the pure-Python twin of ``_hashing.pyx``.

The digest is xxh3_128 of a self-delimiting byte encoding of the arguments (the scheme
below, version :data:`DIGEST_VERSION`). Both implementations produce the same bytes; this
module also owns what they share: :class:`Prehashed`, the registry of user rules and the
classification of uncommon types (:func:`resolve_type`), so a type is never treated one
way by the compiled walker and another way here.

Encoding (integers are little-endian; ``u64`` is an unsigned 8-byte length or count)::

    header    HEADER, then b"a" u64(n) and each argument
    None      b"N"            True b"T"       False b"F"
    int       b"i" i64        (outside int64: b"I" u64(k) k-byte two's complement)
    float     b"f" f64        (every NaN is 0x7ff8000000000000; -0.0 stays -0.0)
    complex   b"c" f64 f64
    str       b"s" u64(k) UTF-8 (surrogates pass)   bytes b"b" ...   bytearray b"y" ...
    tuple     b"t" u64(n) items                     list b"l" u64(n) items
    dict      b"d" u64(n) sorted 16-byte digests of (key, value) encodings
    set       b"S" u64(n) sorted digests of items   frozenset b"Z" ...
    Prehashed b"H" 16 bytes
    ndarray   b"A" str(dtype) u64(ndim) u64(dim)... zeros to an 8-byte stream offset,
              payload (C order, NaNs canonical)
    numpy scalar b"n" + the 0-d array          graph b"G" ... (see ``_Walker.encode_graph``)
    subclass of a builtin   b"X" str(type name) + the builtin value
    rule      b"U" str(type name) + value      __fastcache_key__  b"K" str(type name) + value
    other known types  b"R" str(tag) + canonical value (see ``_REDUCERS``)
"""

import dataclasses
import datetime
import decimal
import enum
import fractions
import pathlib
import struct
import sys

import numpy as np
import xxhash

from ..errors import InvalidArgumentError, UnhashableKeyError

__all__ = [
    "DIGEST_VERSION",
    "Prehashed",
    "fingerprint",
    "fingerprint_hex",
    "register_fingerprint",
    "resolve_type",
]

DIGEST_VERSION = 1
HEADER = b"tnfr_fastcache.key/" + bytes([DIGEST_VERSION])

# Nesting limit, and the depth from which active containers are tracked by id: deeper
# than that, a container seen again on the current path is a cycle. Shallow keys pay nothing.
MAX_DEPTH = 200
TRACK_DEPTH = 16

# Payloads are fed to xxh3 in blocks of this many bytes (the pure twin's row copies too).
BLOCK_BYTES = 1 << 16

# resolve_type() kinds; the compiled walker switches on the same numbers.
KIND_RULE = 1
KIND_KEY_METHOD = 2
KIND_REDUCE = 3
KIND_SUBCLASS = 4
KIND_ARRAY_SUBCLASS = 5
KIND_NUMPY_SCALAR = 6
KIND_GRAPH = 7

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_NAN64 = struct.pack("<Q", 0x7FF8000000000000)
_pack_u64 = struct.Struct("<Q").pack
_pack_i64 = struct.Struct("<q").pack
_pack_f64 = struct.Struct("<d").pack

# x87 extended precision leaves uninitialised padding bytes in every element.
LONGDOUBLE_IS_EXTENDED = np.dtype(np.longdouble).itemsize != 8

_BUILTIN_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray, tuple, list, dict, set, frozenset)
# The builtin base a subclass is digested as; order matters only for multiple inheritance.
_SUBCLASS_BASES = (int, float, complex, str, bytes, bytearray, tuple, list, dict, frozenset, set)
_TO_BASE = {
    int: int.__int__,
    float: float.__float__,
    complex: lambda value: complex(value.real, value.imag),
    str: str.__str__,
    bytes: bytes,
    bytearray: bytearray,
    tuple: tuple,
    list: list,
    dict: dict,
    set: set,
    frozenset: frozenset,
}


class Prehashed:
    """An argument whose 16-byte digest is already known (e.g. a tracked graph's cached one).

    Fingerprints as ``b"H" + digest``, so it never equals plain bytes with the same content.

    Parameters
    ----------
    digest : bytes-like
        Exactly 16 bytes, typically from :func:`fingerprint`.
    """

    __slots__ = ("_digest",)

    def __init__(self, digest):
        try:
            value = bytes(memoryview(digest))
        except TypeError:
            raise InvalidArgumentError(
                f"Prehashed needs a 16-byte bytes-like digest, got {type(digest).__name__}"
            ) from None
        if len(value) != 16:
            raise InvalidArgumentError(f"Prehashed needs a 16-byte digest, got {len(value)} bytes")
        self._digest = value

    @property
    def digest(self):
        """The 16 digest bytes (read-only: a key must not change under the cache)."""
        return self._digest

    def __eq__(self, other):
        return isinstance(other, Prehashed) and other.digest == self.digest

    def __hash__(self):
        return hash((Prehashed, self.digest))

    def __repr__(self):
        return f"Prehashed({self.digest.hex()!r})"


def qualified_name(tp):
    """``module.QualName`` of a type, the stable name digests use for it."""
    return f"{tp.__module__}.{tp.__qualname__}"


# --- user rules and type classification, shared by both implementations -------------

_RULES = {}
# Per-implementation caches of resolve_type(); register_fingerprint empties them all.
TYPE_CACHES = []


def register_fingerprint(tp, fn):
    """Teach :func:`fingerprint` a type: ``fn(obj)`` returns a value it already knows.

    The digest is that of the returned value tagged with the object's type name, so a rule's
    output never collides with the plain value. Subclasses of ``tp`` use the rule too unless
    they have their own. Rules outrank ``__fastcache_key__`` and the built-in handlers of
    non-builtin types (numpy, networkx, ...); the builtins themselves cannot be overridden.

    Parameters
    ----------
    tp : type
        The class to handle.
    fn : callable or None
        ``fn(obj) -> value``; ``None`` removes the rule.

    Raises
    ------
    InvalidArgumentError
        ``tp`` is not a type, is a builtin type, or ``fn`` is not callable.
    """
    if not isinstance(tp, type):
        raise InvalidArgumentError(f"register_fingerprint needs a type, got {tp!r}")
    if tp in _BUILTIN_TYPES or tp is Prehashed:
        raise InvalidArgumentError(
            f"{tp.__name__} has a fixed digest and cannot be given a rule; register a subclass instead"
        )
    if fn is None:
        _RULES.pop(tp, None)
    elif not callable(fn):
        raise InvalidArgumentError(f"register_fingerprint needs a callable or None, got {fn!r}")
    else:
        _RULES[tp] = fn
    for cache in TYPE_CACHES:
        cache.clear()


def unhashable(tp, why=""):
    """The UnhashableKeyError for an object of type ``tp``, saying how to make it hashable."""
    name = qualified_name(tp)
    reason = f" ({why})" if why else ""
    return UnhashableKeyError(
        f"cannot fingerprint an object of type {name}{reason}: give the class a "
        f"__fastcache_key__(self) method returning a value fingerprint() knows (tuple, str, "
        f"int, ndarray, ...), or call tnfr_fastcache.register_fingerprint({tp.__qualname__}, fn)"
    )


def _reduce_memoryview(view):
    try:
        array = np.asarray(view)
    except (ValueError, TypeError) as exc:
        raise unhashable(memoryview, f"buffer format {getattr(view, 'format', '?')!r}: {exc}") from None
    return "memoryview", array


def _reduce_dtype(dtype):
    return "numpy.dtype", (dtype.str if dtype.fields is None else dtype.descr)


def _reduce_datetime(value):
    return "datetime", (value.isoformat(), value.fold, value.tzname())


def _reduce_time(value):
    return "time", (value.isoformat(), value.fold, value.tzname())


def _reduce_sparse(matrix):
    # Canonical COO: equal matrices digest equally whatever their storage format,
    # index dtype, duplicate entries or index order.
    coo = matrix.tocoo(copy=True)
    coo.sum_duplicates()
    coords = getattr(coo, "coords", None)
    if coords is None:
        coords = (coo.row, coo.col)
    kind = "matrix" if type(matrix).__name__.endswith("_matrix") else "array"
    return "scipy.sparse", (
        kind,
        tuple(int(n) for n in coo.shape),
        tuple(np.asarray(c, dtype=np.int64) for c in coords),
        np.ascontiguousarray(coo.data),
    )


def _reduce_masked(array):
    return "numpy.ma", (np.ma.getdata(array).view(np.ndarray), np.ma.getmaskarray(array))


_REDUCERS = (
    (memoryview, _reduce_memoryview),
    (range, lambda r: ("range", (r.start, r.stop, r.step))),
    (slice, lambda s: ("slice", (s.start, s.stop, s.step))),
    (pathlib.PurePath, lambda p: ("path", (qualified_name(type(p)), str(p)))),
    (datetime.datetime, _reduce_datetime),
    (datetime.date, lambda d: ("date", d.isoformat())),
    (datetime.time, _reduce_time),
    (datetime.timedelta, lambda d: ("timedelta", (d.days, d.seconds, d.microseconds))),
    (decimal.Decimal, lambda d: ("decimal", str(d))),
    (fractions.Fraction, lambda f: ("fraction", (f.numerator, f.denominator))),
    (np.dtype, _reduce_dtype),
)


def _reduce_enum(member):
    name = member._name_
    return "enum", (qualified_name(type(member)), name if isinstance(name, str) else member._value_)


def _reduce_dataclass(obj):
    fields = tuple((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.compare)
    return "dataclass", (qualified_name(type(obj)), fields)


def _is_graph_type(tp):
    nx = sys.modules.get("networkx")
    return nx is not None and issubclass(tp, nx.Graph)


def _is_sparse_type(tp):
    sparse = sys.modules.get("scipy.sparse")
    if sparse is None:
        return False
    bases = tuple(b for b in (getattr(sparse, "spmatrix", None), getattr(sparse, "sparray", None)) if b)
    return issubclass(tp, bases)


def resolve_type(tp):
    """Classify a type that is not one of the exact builtins: ``(kind, data)``.

    ``kind`` is one of the ``KIND_*`` numbers; ``data`` is the rule, reducer, or base
    converter it needs. Raises :class:`UnhashableKeyError` for a type nothing handles.
    """
    for base in tp.__mro__:
        rule = _RULES.get(base)
        if rule is not None:
            return KIND_RULE, rule
    if callable(getattr(tp, "__fastcache_key__", None)):
        return KIND_KEY_METHOD, None
    if issubclass(tp, enum.Enum):
        return KIND_REDUCE, _reduce_enum
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return KIND_REDUCE, _reduce_dataclass
    if issubclass(tp, np.generic):
        if issubclass(tp, (np.longdouble, np.clongdouble)) and LONGDOUBLE_IS_EXTENDED:
            raise unhashable(tp, "extended precision has platform-specific padding; convert to float64")
        return KIND_NUMPY_SCALAR, None
    if issubclass(tp, np.ma.MaskedArray):
        return KIND_REDUCE, _reduce_masked
    if issubclass(tp, np.ndarray):
        return KIND_ARRAY_SUBCLASS, None
    if _is_graph_type(tp):
        return KIND_GRAPH, None
    if _is_sparse_type(tp):
        return KIND_REDUCE, _reduce_sparse
    for base, reducer in _REDUCERS:
        if issubclass(tp, base):
            return KIND_REDUCE, reducer
    for base in _SUBCLASS_BASES:
        if issubclass(tp, base):
            return KIND_SUBCLASS, _TO_BASE[base]
    raise unhashable(tp)


_TYPE_CACHE = {}
TYPE_CACHES.append(_TYPE_CACHE)


def graph_attr_rule(graph_attrs):
    """``key -> bool`` deciding which ``G.graph`` entries a graph's digest includes.

    ``None``: every key except those starting with ``_`` and ``"history"`` (TNFR keeps
    caches, locks and a growing history there). ``"all"``, ``"none"``, a collection of
    keys, or a callable ``key -> bool``.
    """
    if graph_attrs is None:
        return _default_graph_attr
    if isinstance(graph_attrs, str):
        if graph_attrs == "all":
            return lambda key: True
        if graph_attrs == "none":
            return lambda key: False
        raise InvalidArgumentError(
            f"graph_attrs must be None, 'all', 'none', a collection of keys or a callable, not {graph_attrs!r}"
        )
    if callable(graph_attrs):
        return graph_attrs
    try:
        keys = frozenset(graph_attrs)
    except TypeError:
        raise InvalidArgumentError(
            f"graph_attrs must be None, 'all', 'none', a collection of keys or a callable, not {graph_attrs!r}"
        ) from None
    return keys.__contains__


def _default_graph_attr(key):
    return not (isinstance(key, str) and (key.startswith("_") or key == "history"))


# --- the walker ---------------------------------------------------------------------


class _Sink:
    """Bytes on their way into one xxh3_128 state; small pieces are batched."""

    __slots__ = ("parts", "size", "state", "total")

    def __init__(self):
        self.parts = []
        self.size = 0
        self.state = None
        self.total = 0

    def put(self, data):
        self.parts.append(data)
        self.size += len(data)
        self.total += len(data)
        if self.size >= BLOCK_BYTES:
            self._spill()

    def put_large(self, view):
        self._spill()
        self.state.update(view)
        self.total += view.nbytes

    def _spill(self):
        if self.state is None:
            self.state = xxhash.xxh3_128()
        if self.parts:
            self.state.update(b"".join(self.parts))
            self.parts.clear()
            self.size = 0

    def digest(self):
        if self.state is None:
            return xxhash.xxh3_128_digest(b"".join(self.parts))
        self._spill()
        return self.state.digest()


def _put_str(sink, text):
    data = text.encode("utf-8", "surrogatepass")
    sink.put(b"s" + _pack_u64(len(data)) + data)


def _float_bytes(value):
    return _NAN64 if value != value else _pack_f64(value)


class _Walker:
    __slots__ = ("graph_attr", "active")

    def __init__(self, graph_attrs):
        self.graph_attr = graph_attr_rule(graph_attrs)
        self.active = set()

    def sub_digest(self, *objs, depth):
        sink = _Sink()
        for obj in objs:
            self.encode(sink, obj, depth)
        return sink.digest()

    def encode(self, sink, obj, depth):
        tp = type(obj)
        if obj is None:
            sink.put(b"N")
        elif tp is bool:
            sink.put(b"T" if obj else b"F")
        elif tp is int:
            _put_int(sink, obj)
        elif tp is float:
            sink.put(b"f" + _float_bytes(obj))
        elif tp is str:
            _put_str(sink, obj)
        elif tp is bytes or tp is bytearray:
            sink.put((b"b" if tp is bytes else b"y") + _pack_u64(len(obj)))
            sink.put(bytes(obj))
        elif tp is complex:
            sink.put(b"c" + _float_bytes(obj.real) + _float_bytes(obj.imag))
        elif tp is Prehashed:
            digest = obj.digest
            if type(digest) is not bytes or len(digest) != 16:
                raise UnhashableKeyError(f"a Prehashed digest must be 16 bytes, not {digest!r}")
            sink.put(b"H" + digest)
        elif tp is np.ndarray and not obj.dtype.hasobject:
            self.encode_array(sink, obj, depth)
        else:
            self.encode_nested(sink, obj, tp, depth)

    def encode_nested(self, sink, obj, tp, depth):
        if depth >= MAX_DEPTH:
            raise UnhashableKeyError(f"cannot fingerprint a value nested more than {MAX_DEPTH} levels deep")
        tracked = depth >= TRACK_DEPTH
        if tracked:
            if id(obj) in self.active:
                raise UnhashableKeyError(
                    f"cannot fingerprint a self-referencing {qualified_name(tp)} (it contains itself)"
                )
            self.active.add(id(obj))
        try:
            self.encode_container(sink, obj, tp, depth + 1)
        finally:
            if tracked:
                self.active.discard(id(obj))

    def encode_container(self, sink, obj, tp, depth):
        if tp is tuple or tp is list:
            size = len(obj)
            sink.put((b"t" if tp is tuple else b"l") + _pack_u64(size))
            for item in obj:
                self.encode(sink, item, depth)
            if len(obj) != size:
                raise RuntimeError("list changed size during fingerprint()")
        elif tp is dict:
            self.encode_dict(sink, obj, depth)
        elif tp is np.ndarray:
            self.encode_array(sink, obj, depth)
        elif tp is set or tp is frozenset:
            digests = sorted([self.sub_digest(item, depth=depth) for item in obj])
            sink.put((b"S" if tp is set else b"Z") + _pack_u64(len(digests)) + b"".join(digests))
        else:
            kind, data = _TYPE_CACHE.get(tp) or _resolve_cached(tp)
            if kind == KIND_RULE:
                sink.put(b"U")
                _put_str(sink, qualified_name(tp))
                self.encode(sink, data(obj), depth)
            elif kind == KIND_KEY_METHOD:
                sink.put(b"K")
                _put_str(sink, qualified_name(tp))
                self.encode(sink, obj.__fastcache_key__(), depth)
            elif kind == KIND_REDUCE:
                tag, value = data(obj)
                sink.put(b"R")
                _put_str(sink, tag)
                self.encode(sink, value, depth)
            elif kind == KIND_SUBCLASS:
                sink.put(b"X")
                _put_str(sink, qualified_name(tp))
                self.encode(sink, data(obj), depth)
            elif kind == KIND_ARRAY_SUBCLASS:
                sink.put(b"X")
                _put_str(sink, qualified_name(tp))
                self.encode_array(sink, obj.view(np.ndarray), depth)
            elif kind == KIND_NUMPY_SCALAR:
                sink.put(b"n")
                self.encode_array(sink, np.asarray(obj), depth)
            else:
                self.encode_graph(sink, obj, depth)

    def encode_dict(self, sink, mapping, depth):
        digests = sorted([self.sub_digest(key, value, depth=depth) for key, value in mapping.items()])
        sink.put(b"d" + _pack_u64(len(digests)) + b"".join(digests))

    def encode_array(self, sink, array, depth):
        dtype = array.dtype
        if dtype.char in "gG" and LONGDOUBLE_IS_EXTENDED:
            raise unhashable(type(array), f"dtype {dtype} has platform-specific padding; convert to float64")
        if dtype.fields is not None:
            label = "struct"
        elif dtype.hasobject:
            label = "|O"
        else:
            label = dtype.str
        sink.put(b"A")
        _put_str(sink, label)
        sink.put(_pack_u64(array.ndim) + b"".join(_pack_u64(n) for n in array.shape))
        if dtype.fields is not None:
            sink.put(_pack_u64(len(dtype.names)))
            for name in dtype.names:
                _put_str(sink, name)
                self.encode_array(sink, array[name], depth)
        elif dtype.hasobject:
            for item in array.flat:
                self.encode(sink, item, depth)
        elif array.size:
            # payloads start 8-byte aligned in the stream, so the compiled twin can look
            # for NaNs with the same vector loads that feed xxh3
            sink.put(bytes(-sink.total % 8))
            if dtype.kind in "fc" and np.isnan(array).any():
                array = _canonical_nans(array)
            for block in _c_order_blocks(array):
                sink.put_large(block)

    def encode_graph(self, sink, graph, depth):
        """b"G", a byte each for directed and multigraph, the kept ``G.graph`` entries as a
        dict, u64(n) sorted digests of (node, attrs), u64(m) sorted digests of the edges:
        (u, v[, key], attrs) when directed; undirected, the endpoints' own digests in sorted
        order (as Prehashed) stand for u and v."""
        directed = graph.is_directed()
        multigraph = graph.is_multigraph()
        sink.put(b"G" + bytes([directed, multigraph]))
        rule = self.graph_attr
        try:
            attrs = {key: value for key, value in graph.graph.items() if rule(key)}
            self.encode_dict(sink, attrs, depth)
        except UnhashableKeyError as exc:
            raise UnhashableKeyError(
                f"{exc} [in a graph attribute; exclude it with fingerprint(..., graph_attrs=...)]"
            ) from None
        nodes = sorted([self.sub_digest(node, data, depth=depth) for node, data in graph._node.items()])
        sink.put(_pack_u64(len(nodes)) + b"".join(nodes))
        edges = []
        seen = set()
        for u, neighbours in graph._adj.items():
            for v, entry in neighbours.items():
                if not directed and v in seen:
                    continue
                if directed:
                    ends = (u, v)
                else:
                    ends = sorted([self.sub_digest(u, depth=depth), self.sub_digest(v, depth=depth)])
                    ends = (Prehashed(ends[0]), Prehashed(ends[1]))
                if multigraph:
                    for key, data in entry.items():
                        edges.append(self.sub_digest(*ends, key, data, depth=depth))
                else:
                    edges.append(self.sub_digest(*ends, entry, depth=depth))
            if not directed:
                seen.add(u)
        edges.sort()
        sink.put(_pack_u64(len(edges)) + b"".join(edges))


def _put_int(sink, value):
    if _I64_MIN <= value <= _I64_MAX:
        sink.put(b"i" + _pack_i64(value))
    else:
        size = (value.bit_length() + 8) // 8
        sink.put(b"I" + _pack_u64(size) + value.to_bytes(size, "little", signed=True))


def _resolve_cached(tp):
    found = resolve_type(tp)
    _TYPE_CACHE[tp] = found
    return found


def _canonical_nans(array):
    copy = np.array(array, order="C", copy=True)
    parts = (copy.real, copy.imag) if copy.dtype.kind == "c" else (copy,)
    for part in parts:
        part[np.isnan(part)] = np.nan
    return copy


def _c_order_blocks(array):
    """The array's bytes in C order, as contiguous byte views, copying at most a row at a time."""
    if array.flags.c_contiguous:
        yield array.reshape(-1).view(np.uint8)
    elif array.ndim <= 1:
        step = max(1, BLOCK_BYTES // array.itemsize)
        for start in range(0, array.shape[0], step):
            yield np.ascontiguousarray(array[start : start + step]).view(np.uint8)
    else:
        for row in array:
            yield from _c_order_blocks(row)


def fingerprint(*objs, graph_attrs=None):
    """16-byte digest of ``objs``, stable across processes, runs and Python versions.

    Equal values give equal digests; the type is part of the value (``1``, ``1.0``,
    ``True``, ``"1"`` and ``b"1"`` all differ), dicts and sets are order-independent,
    arrays are digested by dtype, shape and content in logical order.

    Parameters
    ----------
    *objs
        The values to digest, as a sequence (``fingerprint(a, b) != fingerprint((a, b))``).
    graph_attrs : None, "all", "none", collection or callable, optional
        Which ``G.graph`` keys a networkx graph's digest includes; by default all but
        those starting with ``_`` and ``"history"``.

    Returns
    -------
    bytes
        16 bytes (xxh3_128, canonical big-endian).

    Raises
    ------
    UnhashableKeyError
        A value of a type with no digest rule, a self-referencing container, or nesting
        deeper than 200 levels.
    """
    walker = _Walker(graph_attrs)
    sink = _Sink()
    sink.put(HEADER + b"a" + _pack_u64(len(objs)))
    for obj in objs:
        walker.encode(sink, obj, 0)
    return sink.digest()


def fingerprint_hex(*objs, graph_attrs=None):
    """:func:`fingerprint` as 32 lowercase hex characters (disk and Redis entry names)."""
    return fingerprint(*objs, graph_attrs=graph_attrs).hex()
