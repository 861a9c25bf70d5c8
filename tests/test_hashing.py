"""fingerprint(): stability, discrimination, supported types, errors (public API, either twin)."""

import dataclasses
import datetime
import decimal
import enum
import fractions
import json
import os
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest

from tnfr_fastcache import UnhashableKeyError, fingerprint, fingerprint_hex, register_fingerprint
from tnfr_fastcache.errors import InvalidArgumentError
from tnfr_fastcache.keys import DIGEST_VERSION, Prehashed

try:
    import networkx as nx
except ImportError:  # the graph tests skip; everything else still runs
    nx = None
needs_networkx = pytest.mark.skipif(nx is None, reason="networkx is not installed")


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Level(enum.IntEnum):
    LOW = 1


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str = dataclasses.field(default="", compare=False)


class Keyed:
    def __init__(self, value):
        self.value = value

    def __fastcache_key__(self):
        return ("keyed", self.value)


# Digests of this scheme version, fixed forever: a change here means every stored cache
# entry would silently miss, so it needs a DIGEST_VERSION bump, not an updated table.
GOLDEN = {
    "scalars": ((1, 2.5, "abc", None, True), "64c5096ed5180f2bd90a863a1ab4ede3"),
    "nested": (({"b": [1, 2.0], "a": (None, b"x")}, {3, 4}), "470b03b0aed9a6a2ccc5da4381382271"),
    "array": ((np.arange(12, dtype="<f8").reshape(3, 4),), "b1aad388332f529103017576a00558f0"),
    "bigint": ((2**100, -(2**70)), "ef410f7e68e3749a6fcfd10699fefb0e"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_digests_never_change(name):
    args, expected = GOLDEN[name]
    assert DIGEST_VERSION == 1
    assert fingerprint_hex(*args) == expected


def test_digest_is_xxh3_128_of_the_documented_encoding():
    xxhash = pytest.importorskip("xxhash")
    header = b"tnfr_fastcache.key/" + bytes([DIGEST_VERSION]) + b"a" + (2).to_bytes(8, "little")
    body = b"i" + (-5).to_bytes(8, "little", signed=True) + b"s" + (2).to_bytes(8, "little") + b"hi"
    assert fingerprint(-5, "hi") == xxhash.xxh3_128_digest(header + body)


def test_shape_of_the_result():
    digest = fingerprint(1)
    assert type(digest) is bytes and len(digest) == 16
    assert fingerprint_hex(1) == digest.hex()
    assert fingerprint() != fingerprint(None)


STABLE_SCRIPT = """
import json, sys
import numpy as np
from tnfr_fastcache import fingerprint_hex
values = [
    "text", {"b": 1, "a": 2}, {"x", "y", "z"}, frozenset({"q"}), (1, 2.5, None),
    np.arange(6.0).reshape(2, 3), {("k", 1): {"nested": ["v"]}},
]
print(json.dumps([fingerprint_hex(v) for v in values]))
"""


def test_same_digest_in_another_process_with_another_hash_seed():
    namespace = {}
    exec(STABLE_SCRIPT.split("values = ", 1)[0], namespace)
    values = eval(STABLE_SCRIPT.split("values = ", 1)[1].split("\nprint", 1)[0], {"np": np})
    here = [fingerprint_hex(v) for v in values]
    env = dict(os.environ, PYTHONHASHSEED="12345")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", STABLE_SCRIPT], env=env, capture_output=True, text=True, check=True, cwd=root
    )
    assert json.loads(out.stdout) == here


# --- discrimination ---------------------------------------------------------------


def test_type_is_part_of_the_value():
    values = [1, 1.0, True, "1", b"1", bytearray(b"1"), 1 + 0j, np.int64(1), np.float64(1.0), (1,), [1], {1}]
    digests = {fingerprint(v) for v in values}
    assert len(digests) == len(values)


def test_signed_zero_differs_and_all_nans_are_one():
    assert fingerprint(0.0) != fingerprint(-0.0)
    payload_nan = np.array([0x7FF0000000000123, 0xFFF8000000000000], dtype=np.uint64).view(np.float64)
    assert fingerprint(float("nan")) == fingerprint(float(payload_nan[0])) == fingerprint(float(payload_nan[1]))
    assert fingerprint(complex(float("nan"), 1)) == fingerprint(complex(-float("nan"), 1))
    assert fingerprint(complex(0.0, 1)) != fingerprint(complex(-0.0, 1))


@pytest.mark.parametrize("dtype", ["f2", "f4", "f8", ">f8", "c8", "c16", ">c16"])
def test_array_nans_are_canonical(dtype):
    clean = np.linspace(-1, 1, 5000).astype(dtype)
    a, b = clean.copy(), clean.copy()
    a[17] = np.nan
    b[17] = -np.nan
    bits = {"f2": np.uint16, "f4": np.uint32, "f8": np.uint64, ">f8": np.dtype(">u8")}
    if dtype in bits:
        width = np.dtype(dtype).itemsize * 8
        quiet_payload = (1 << (width - 1)) - 1  # sign clear, every exponent and mantissa bit set
        b.view(bits[dtype])[17] = quiet_payload
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(clean)
    a[4000] = 0.0
    b[4000] = -0.0
    assert fingerprint(a) != fingerprint(b)


def test_array_dtype_byte_order_shape_and_content():
    a = np.arange(12, dtype="<f8").reshape(3, 4)
    assert fingerprint(a) != fingerprint(a.astype(">f8"))
    assert fingerprint(a) != fingerprint(a.astype("<f4"))
    assert fingerprint(a) != fingerprint(a.reshape(4, 3))
    assert fingerprint(a) != fingerprint(a.ravel())
    changed = a.copy()
    changed[2, 3] += 1
    assert fingerprint(a) != fingerprint(changed)
    assert fingerprint(a) == fingerprint(a.copy())


@pytest.mark.parametrize(
    "view",
    [
        lambda a: np.asfortranarray(a),
        lambda a: a[::2],
        lambda a: a[:, ::3],
        lambda a: a[1:-1, 2:-2],
        lambda a: a[::-1, ::-2],
        lambda a: a.T,
        lambda a: np.asfortranarray(a).T,
        lambda a: a.reshape(30, 4, 400)[:, 1, ::3],
        lambda a: np.broadcast_to(a[:1], (5, 400)),
    ],
    ids=["F", "rows", "cols", "inner", "reversed", "T", "FT", "3d", "broadcast"],
)
@pytest.mark.parametrize("dtype", ["f8", "f4", "i8", "u1", "c16", "M8[s]", "U3"])
def test_array_views_digest_like_their_c_copy(view, dtype):
    base = np.random.default_rng(3).random((120, 400)) * 1000
    a = view(base.astype(dtype))
    assert fingerprint(a) == fingerprint(np.ascontiguousarray(a))


def test_large_f_ordered_array_digests_like_its_c_copy():
    a = np.random.default_rng(4).random((700, 900))
    a[123, 456] = np.nan
    assert fingerprint(np.asfortranarray(a)) == fingerprint(a)


def test_containers():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1, "b": 2}) != fingerprint({"a": 2, "b": 1})
    assert fingerprint({3, 1, 2}) == fingerprint({2, 3, 1})
    assert fingerprint({1, 2}) != fingerprint(frozenset({1, 2}))
    assert fingerprint((1, 2)) != fingerprint([1, 2])
    assert fingerprint(1, 2) != fingerprint((1, 2))
    assert fingerprint([[1], 2]) != fingerprint([1, [2]])
    assert fingerprint({1: True}) != fingerprint({True: 1})
    assert fingerprint("ab", "c") != fingerprint("a", "bc")
    assert fingerprint(b"ab", b"") != fingerprint(b"a", b"b")


def test_ints_of_any_size():
    values = [0, -1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, 10**40, -(10**40)]
    assert len({fingerprint(v) for v in values}) == len(values)


def test_strings_with_lone_surrogates():
    assert fingerprint("\ud800") != fingerprint("\ud801")
    assert fingerprint("é") != fingerprint("e")


# --- supported types ---------------------------------------------------------------


def _pairs_that_differ():
    return [
        (range(3), range(4)),
        (slice(1, 2), slice(1, 3)),
        (Color.RED, Color.BLUE),
        (Color.RED, Level.LOW),
        (Point(1.0, 2.0), Point(1.0, 3.0)),
        (pathlib.PurePosixPath("/a/b"), pathlib.PurePosixPath("/a/c")),
        (datetime.datetime(2020, 1, 1, 12), datetime.datetime(2020, 1, 1, 13)),
        (
            datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
            datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
        ),
        (datetime.date(2020, 1, 1), datetime.date(2020, 1, 2)),
        (datetime.time(1, 2), datetime.time(1, 3)),
        (datetime.timedelta(1), datetime.timedelta(2)),
        (decimal.Decimal("1.1"), decimal.Decimal("1.2")),
        (fractions.Fraction(1, 3), fractions.Fraction(1, 4)),
        (memoryview(b"abc"), memoryview(b"abd")),
        (np.dtype("f8"), np.dtype(">f8")),
        (np.dtype([("a", "f8")]), np.dtype([("b", "f8")])),
        (np.float32(1), np.float64(1)),
        (np.datetime64("2020-01-01"), np.datetime64("2020-01-02")),
        (np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]), np.array([(1, 3.0)], dtype=[("a", "i4"), ("b", "f8")])),
        (np.array([1, "x", None], dtype=object), np.array([1, "y", None], dtype=object)),
        (Keyed(1), Keyed(2)),
    ]


@pytest.mark.parametrize("left,right", _pairs_that_differ(), ids=lambda v: type(v).__name__)
def test_supported_types_are_stable_and_discriminating(left, right):
    assert fingerprint(left) == fingerprint(left)
    assert fingerprint(left) != fingerprint(right)


def test_equal_values_of_supported_types_agree():
    assert fingerprint(Point(1.0, 2.0, label="a")) == fingerprint(Point(1.0, 2.0, label="b"))
    assert fingerprint(Keyed((1, 2))) == fingerprint(Keyed((1, 2)))
    assert fingerprint(memoryview(np.arange(6.0).reshape(2, 3))) == fingerprint(memoryview(np.arange(6.0).reshape(2, 3)))
    assert fingerprint(datetime.timedelta(hours=24)) == fingerprint(datetime.timedelta(days=1))


def test_values_of_known_types_differ_from_their_plain_encoding():
    assert fingerprint(Keyed(1)) != fingerprint(("keyed", 1))
    assert fingerprint(range(3)) != fingerprint((0, 3, 1))
    assert fingerprint(np.float64(2.0)) != fingerprint(2.0)
    assert fingerprint(np.arange(3)) != fingerprint(np.arange(3).tolist())


def test_subclasses_of_builtins_are_tagged():
    class MyTuple(tuple):
        pass

    class MyStr(str):
        def __str__(self):
            return "something else"

    assert fingerprint(MyTuple((1, 2))) != fingerprint((1, 2))
    assert fingerprint(MyStr("a")) == fingerprint(MyStr("a"))
    assert fingerprint(MyStr("a")) != fingerprint(MyStr("b"))
    assert fingerprint(Level.LOW) != fingerprint(1)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_ndarray_subclasses_and_masked_arrays():
    a = np.arange(4.0)
    assert fingerprint(np.asmatrix(a)) != fingerprint(np.atleast_2d(a))
    m1 = np.ma.masked_array(a, mask=[0, 1, 0, 0])
    m2 = np.ma.masked_array(a, mask=[0, 0, 1, 0])
    assert fingerprint(m1) != fingerprint(m2)
    assert fingerprint(m1) == fingerprint(np.ma.masked_array(a.copy(), mask=[0, 1, 0, 0]))


def test_prehashed_is_not_plain_bytes():
    digest = fingerprint("anything")
    assert fingerprint(Prehashed(digest)) != fingerprint(digest)
    assert fingerprint(Prehashed(digest)) == fingerprint(Prehashed(bytearray(digest)))
    assert Prehashed(digest) == Prehashed(digest) and hash(Prehashed(digest)) == hash(Prehashed(digest))
    with pytest.raises(InvalidArgumentError, match="16"):
        Prehashed(b"short")
    with pytest.raises(InvalidArgumentError, match="bytes-like"):
        Prehashed("0" * 16)
    with pytest.raises(AttributeError):
        Prehashed(digest).digest = b"x" * 16
    tampered = Prehashed(digest)
    object.__setattr__(tampered, "_digest", b"short")
    with pytest.raises(UnhashableKeyError, match="16 bytes"):
        fingerprint(tampered)


def test_scipy_sparse_is_format_independent():
    sparse = pytest.importorskip("scipy.sparse")
    dense = np.array([[0, 1.5, 0], [2.0, 0, 0], [0, 0, 3.0]])
    csr = sparse.csr_matrix(dense)
    coo = sparse.coo_matrix(dense)
    assert fingerprint(csr) == fingerprint(coo) == fingerprint(sparse.csc_matrix(dense))
    assert fingerprint(sparse.csr_array(dense)) != fingerprint(csr)
    changed = dense.copy()
    changed[2, 2] = 4.0
    assert fingerprint(sparse.csr_matrix(changed)) != fingerprint(csr)
    # duplicate entries are summed like scipy does
    dup = sparse.coo_matrix(([1.0, 0.5, 2.0, 3.0], ([0, 0, 1, 2], [1, 1, 0, 2])), shape=(3, 3))
    assert fingerprint(dup) == fingerprint(csr)


# --- networkx graphs -----------------------------------------------------------------


def _graph(cls=None, order=1):
    graph = (cls or nx.Graph)()
    nodes = [(i, {"EPI": i / 10, "theta": float(i)}) for i in range(6)]
    edges = [(i, (i + 1) % 6, {"weight": i + 0.5}) for i in range(6)]
    graph.add_nodes_from(nodes[::order])
    graph.add_edges_from([(v, u, d) if order < 0 else (u, v, d) for u, v, d in edges[::order]])
    graph.graph.update({"COHERENCE": {"enabled": True}, "_cache": object(), "history": [1, 2, 3]})
    return graph


@needs_networkx
def test_graph_digest_is_independent_of_insertion_order():
    assert fingerprint(_graph()) == fingerprint(_graph(order=-1))
    assert fingerprint(_graph(nx.DiGraph)) == fingerprint(_graph(nx.DiGraph))


@needs_networkx
def test_graph_directedness_and_multigraph_keys():
    assert fingerprint(_graph(nx.Graph)) != fingerprint(_graph(nx.DiGraph))
    assert fingerprint(_graph(nx.Graph)) != fingerprint(_graph(nx.MultiGraph))
    directed = nx.DiGraph([(1, 2)])
    assert fingerprint(directed) != fingerprint(nx.DiGraph([(2, 1)]))
    assert fingerprint(nx.Graph([(1, 2)])) == fingerprint(nx.Graph([(2, 1)]))
    m1, m2 = nx.MultiGraph(), nx.MultiGraph()
    m1.add_edge(1, 2, key="a")
    m2.add_edge(1, 2, key="b")
    assert fingerprint(m1) != fingerprint(m2)
    m1.add_edge(1, 2, key="b")
    m2.add_edge(1, 2, key="a")
    assert fingerprint(m1) == fingerprint(m2)


@needs_networkx
def test_graph_attribute_changes_in_place_change_the_digest():
    graph = _graph()
    before = fingerprint(graph)
    graph.nodes[3]["EPI"] = 0.31
    after_node = fingerprint(graph)
    assert after_node != before
    graph.edges[0, 1]["weight"] = 7.0
    assert fingerprint(graph) != after_node
    graph.add_node(99)
    assert fingerprint(graph) not in (before, after_node)


@needs_networkx
def test_graph_attrs_rules():
    graph = _graph()
    before = fingerprint(graph)
    graph.graph["_lock"] = threading.Lock()
    graph.graph["history"].append(4)
    assert fingerprint(graph) == before
    graph.graph["COHERENCE"]["enabled"] = False
    assert fingerprint(graph) != before
    assert fingerprint(graph, graph_attrs="none") == fingerprint(_graph(), graph_attrs="none")
    assert fingerprint(graph, graph_attrs=["COHERENCE"]) != fingerprint(_graph(), graph_attrs=["COHERENCE"])
    assert fingerprint(graph, graph_attrs=lambda key: key == "history") != fingerprint(graph)
    with pytest.raises(UnhashableKeyError, match="graph_attrs"):
        fingerprint(graph, graph_attrs="all")
    with pytest.raises(InvalidArgumentError):
        fingerprint(1, graph_attrs="some")


@needs_networkx
def test_a_registered_rule_replaces_the_graph_default():
    register_fingerprint(nx.Graph, lambda graph: sorted(graph.nodes))
    try:
        path, star = nx.path_graph(4), nx.star_graph(3)
        assert fingerprint(path) == fingerprint(star)
        assert fingerprint(nx.DiGraph(path)) == fingerprint(nx.DiGraph(star))
    finally:
        register_fingerprint(nx.Graph, None)
    assert fingerprint(nx.path_graph(4)) != fingerprint(nx.star_graph(3))


# --- extension and errors ----------------------------------------------------------


def test_unknown_types_raise_naming_the_type_and_the_cure():
    class Opaque:
        pass

    with pytest.raises(UnhashableKeyError) as info:
        fingerprint([1, {"k": Opaque()}])
    message = str(info.value)
    assert "Opaque" in message and "__fastcache_key__" in message and "register_fingerprint" in message
    assert isinstance(info.value, TypeError)
    for value in (object(), lambda: 1, iter([1]), threading.Lock()):
        with pytest.raises(UnhashableKeyError):
            fingerprint(value)


def test_register_fingerprint_rule_subclasses_and_removal():
    class Celsius:
        def __init__(self, degrees):
            self.degrees = degrees

    class Kelvinish(Celsius):
        pass

    register_fingerprint(Celsius, lambda c: c.degrees)
    try:
        assert fingerprint(Celsius(1.0)) == fingerprint(Celsius(1.0))
        assert fingerprint(Celsius(1.0)) != fingerprint(Celsius(2.0))
        assert fingerprint(Celsius(1.0)) != fingerprint(1.0)
        assert fingerprint(Kelvinish(1.0)) != fingerprint(Celsius(1.0))
    finally:
        register_fingerprint(Celsius, None)
    with pytest.raises(UnhashableKeyError):
        fingerprint(Celsius(1.0))
    with pytest.raises(InvalidArgumentError):
        register_fingerprint(int, str)
    with pytest.raises(InvalidArgumentError):
        register_fingerprint(Celsius, "not callable")
    with pytest.raises(InvalidArgumentError):
        register_fingerprint("Celsius", str)


def test_a_rule_outranks_a_builtin_handler():
    register_fingerprint(Point, lambda p: "same")
    try:
        assert fingerprint(Point(1.0, 2.0)) == fingerprint(Point(5.0, 6.0))
    finally:
        register_fingerprint(Point, None)
    assert fingerprint(Point(1.0, 2.0)) != fingerprint(Point(5.0, 6.0))


def test_self_reference_raises_instead_of_recursing():
    loop = [1]
    loop.append(loop)
    mapping = {}
    mapping["self"] = mapping
    box = np.empty(1, dtype=object)
    box[0] = box

    class Selfish:
        def __fastcache_key__(self):
            return (self,)

    for value in (loop, mapping, box, Selfish()):
        with pytest.raises(UnhashableKeyError, match="self-referencing"):
            fingerprint(value)


def test_deep_nesting_raises():
    value = 0
    for _ in range(500):
        value = [value]
    with pytest.raises(UnhashableKeyError, match="nested"):
        fingerprint(value)


def test_dict_changed_during_fingerprint_raises():
    data = {}

    class Mutator:
        def __fastcache_key__(self):
            data[len(data) + 100] = 0
            return 1

    data.update({0: Mutator(), 1: 2})
    with pytest.raises(RuntimeError, match="changed size"):
        fingerprint(data)


def test_list_changed_during_fingerprint_raises():
    items = []

    class Grower:
        def __fastcache_key__(self):
            items.append(0)
            return 1

    items.append(Grower())
    with pytest.raises(RuntimeError, match="changed size"):
        fingerprint(items)


def test_extended_precision_is_refused():
    if np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("longdouble is double here")
    with pytest.raises(UnhashableKeyError, match="longdouble|float128|padding"):
        fingerprint(np.zeros(3, dtype=np.longdouble))
    with pytest.raises(UnhashableKeyError):
        fingerprint(np.longdouble(1))


def test_threads_hashing_large_arrays_agree():
    arrays = [np.random.default_rng(i).random((300, 300)) for i in range(4)]
    expected = [fingerprint(a) for a in arrays]
    results = {}

    def work(index):
        results[index] = [fingerprint(np.asfortranarray(a)) for a in arrays]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(found == expected for found in results.values())
