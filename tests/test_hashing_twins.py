"""The compiled and pure-Python fingerprints agree byte for byte on a wide generated corpus."""

import datetime
import decimal
import enum
import fractions
import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tnfr_fastcache import UnhashableKeyError
from tnfr_fastcache._impl import load_both

compiled, pure = load_both("_hashing")
pytestmark = pytest.mark.skipif(compiled is None, reason="the compiled _hashing is not built")

try:
    import networkx as nx
except ImportError:  # the graph test skips; everything else still runs
    nx = None


class Mode(enum.Enum):
    FAST = "fast"
    EXACT = "exact"


def assert_twins_agree(*values, graph_attrs=None):
    assert compiled.fingerprint(*values, graph_attrs=graph_attrs) == pure.fingerprint(
        *values, graph_attrs=graph_attrs
    )
    assert compiled.fingerprint_hex(*values) == pure.fingerprint_hex(*values)


text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(allow_nan=True, allow_infinity=True),
    text,
    st.binary(max_size=40),
    st.binary(max_size=40).map(bytearray),
)
hashable_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text, st.binary(max_size=20))

array_dtypes = st.sampled_from(["f2", "f4", "f8", ">f4", ">f8", "c8", "c16", ">c16", "i1", "i8", ">u4", "?", "M8[ms]", "U4", "S3"])


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(array_dtypes))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9))
    elements = None
    if dtype.kind == "f":
        elements = st.floats(width=8 * dtype.itemsize, allow_nan=True, allow_infinity=True)
    array = draw(hnp.arrays(dtype, shape, elements=elements))
    view = draw(st.sampled_from(["c", "f", "t", "step", "rev"]))
    if view == "f":
        array = np.asfortranarray(array)
    elif view == "t":
        array = array.T
    elif view == "step" and array.ndim:
        array = array[..., ::2]
    elif view == "rev" and array.ndim:
        array = array[::-1]
    return array


values = st.recursive(
    st.one_of(scalars, arrays()),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(hashable_scalars, children, max_size=5),
        st.sets(hashable_scalars, max_size=5),
        st.frozensets(hashable_scalars, max_size=5),
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(values, max_size=4))
def test_generated_values(args):
    assert_twins_agree(*args)


@settings(max_examples=100, deadline=None)
@given(arrays(), st.integers(0, 7))
def test_generated_arrays_at_every_stream_offset(array, offset):
    # a str of `offset` bytes moves where the payload starts in the stream
    assert_twins_agree("x" * offset, array)


@pytest.mark.parametrize("dtype", ["f8", "f4", "c16", "c8", ">f8", "f2", "i8"])
@pytest.mark.parametrize("layout", ["c", "f", "rows", "cols", "3d"])
def test_large_arrays_with_and_without_nans(dtype, layout):
    rng = np.random.default_rng(abs(hash((dtype, layout))) % 2**32)
    for size in (1, 31, 1000, 70_001, 300_000):
        flat = rng.standard_normal(size).astype(dtype)
        if flat.dtype.kind in "fc" and size > 1:
            for position in rng.integers(0, size, int(rng.integers(0, 3))):
                flat[position] = -np.nan if position % 2 else np.nan
        array = flat
        if layout != "c" and size >= 1000:
            rows = size // 100
            matrix = flat[: rows * 100].reshape(rows, 100)
            array = {
                "f": np.asfortranarray(matrix),
                "rows": matrix[::3],
                "cols": matrix[:, 1::2],
                "3d": np.asfortranarray(matrix.reshape(rows, 10, 10))[:, ::-1, 2:],
            }[layout]
        for prefix in ((), ("ab",), (1, "abc")):
            assert_twins_agree(*prefix, array)


def test_float_payload_nans_with_custom_bits():
    rng = np.random.default_rng(7)
    for _ in range(30):
        bits = rng.integers(0, 2**63, 20_000, dtype=np.uint64)
        bits[rng.integers(0, 20_000, 3)] |= np.uint64(0x7FF0000000000001)
        assert_twins_agree(bits.view(np.float64))
        assert_twins_agree(bits.view(np.float32).reshape(-1, 8)[:, ::2])


@pytest.mark.parametrize("dtype", ["f8", "f4", "c16"])
def test_a_single_nan_anywhere_in_a_long_payload(dtype):
    # the compiled twin finds NaNs inside xxh3's stripe loop; the last stripes of each
    # update are accumulated later, so positions near the end and at stripe edges matter
    clean = np.linspace(0, 1, 40_000).astype(dtype)
    size = clean.size
    components = clean.view("f8" if dtype == "c16" else dtype)
    # a negative NaN with a payload: hashing it unchanged would give another digest
    odd_nan = np.array([0xFFF8000000000001 if components.itemsize == 8 else 0xFFC00001], dtype=f"u{components.itemsize}")
    positions = [0, 1, 7, 8, 63, 64, size // 2, *range(size - 80, size)]
    for position in positions:
        array = clean.copy()
        array.view(f"u{components.itemsize}")[position * (clean.itemsize // components.itemsize)] = odd_nan[0]
        assert compiled.fingerprint(array) == pure.fingerprint(array), position
        assert compiled.fingerprint("odd", array) == pure.fingerprint("odd", array), position


def test_values_after_a_rehashed_nan_payload():
    # a payload with NaNs is hashed twice by the compiled twin; what follows must not notice
    odd = np.ones(5001, dtype="f4")
    odd[3] = -np.nan
    assert_twins_agree(odd, np.arange(3), "tail")
    assert_twins_agree({"a": odd, "b": [odd, np.ones(3, "f4")]})


def test_large_buffers_between_arrays():
    # buffers hashed without the GIL and past the batching buffer, then an array whose
    # payload alignment depends on every byte before it
    big = bytes(range(256)) * 300
    tail = np.arange(5, dtype="f4")
    assert_twins_agree(big + b"x", tail)
    assert_twins_agree(bytearray(big) + b"yz", tail, "é" * 5000, tail)
    assert_twins_agree(memoryview(big)[1:], tail)


def test_every_other_item_gathers():
    rng = np.random.default_rng(1)
    for width in range(1, 40):
        base = rng.random((3, 2 * width + 1))
        for view in (base[:, ::2], base[:, 1::2], base[::2, ::2], base.reshape(-1)[::2]):
            assert_twins_agree(view)
            assert compiled.fingerprint(view) == compiled.fingerprint(np.ascontiguousarray(view))


def test_items_larger_than_the_scratch_block():
    # 2.2 MB items: more than the compiled twin's gather block holds
    array = np.zeros((2, 2), dtype="V2200000")
    array.view(np.uint8)[::7] = 5
    for view in (array, array.T, array[:, ::-1]):
        assert_twins_agree(view)
        assert compiled.fingerprint(view) == compiled.fingerprint(np.ascontiguousarray(view))


def test_structured_and_object_arrays():
    structured = np.zeros(5, dtype=[("a", "<f8"), ("b", ">i4", (2,)), ("c", "U3")])
    structured["a"][2] = np.nan
    assert_twins_agree(structured, structured[::2])
    assert_twins_agree(np.array([1, "x", None, (1, 2), np.arange(3)], dtype=object))


def test_every_supported_type():
    sparse = pytest.importorskip("scipy.sparse")
    samples = [
        range(1, 10, 3),
        slice(None, 5, -1),
        Mode.FAST,
        pathlib.PurePosixPath("/tmp/x"),
        pathlib.PureWindowsPath("C:/x"),
        datetime.datetime(2024, 2, 29, 23, 59, 59, 999, tzinfo=datetime.timezone.utc),
        datetime.date(1999, 12, 31),
        datetime.time(23, 1, fold=1),
        datetime.timedelta(days=-3, microseconds=5),
        decimal.Decimal("-1.500E+3"),
        decimal.Decimal("NaN"),
        fractions.Fraction(-22, 7),
        memoryview(b"bytes"),
        memoryview(np.arange(12.0).reshape(3, 4))[::2],
        np.dtype([("x", "<f4"), ("y", ">i8", (3,))]),
        np.dtype("M8[ns]"),
        np.float16("nan"),
        np.complex64(1 - 2j),
        np.str_("s"),
        np.bool_(True),
        np.ma.masked_invalid(np.array([1.0, np.nan])),
        sparse.random(30, 20, density=0.1, format="csr", random_state=1),
        sparse.random(30, 20, density=0.1, format="coo", random_state=2),
    ]
    for sample in samples:
        assert_twins_agree(sample)


def _random_graph(cls, seed):
    rng = np.random.default_rng(seed)
    graph = cls()
    for node in range(40):
        graph.add_node(node if node % 3 else f"n{node}", EPI=float(rng.random()), phase=rng.random(2), tags={"a", "b"})
    nodes = list(graph)
    for _ in range(120):
        u, v = (nodes[i] for i in rng.integers(0, len(nodes), 2))
        graph.add_edge(u, v, weight=float(rng.random()), kind=("x", int(rng.integers(0, 3))))
    graph.graph.update({"COHERENCE": {"k": 1}, "_private": object(), "history": [object()]})
    return graph


@pytest.mark.skipif(nx is None, reason="networkx is not installed")
@pytest.mark.parametrize("kind", ["Graph", "DiGraph", "MultiGraph", "MultiDiGraph"])
def test_graphs(kind):
    graph = _random_graph(getattr(nx, kind), 11)
    assert_twins_agree(graph)
    assert_twins_agree(graph, graph_attrs="none")
    assert_twins_agree(graph, graph_attrs={"COHERENCE", "missing"})
    assert_twins_agree(graph.subgraph(list(graph)[:20]))


def test_both_raise_the_same_errors():
    loop = []
    loop.append(loop)
    for bad in (object(), [1, object()], loop, {"k": {1: lambda: 0}}):
        with pytest.raises(UnhashableKeyError) as from_compiled:
            compiled.fingerprint(bad)
        with pytest.raises(UnhashableKeyError) as from_pure:
            pure.fingerprint(bad)
        assert str(from_compiled.value) == str(from_pure.value)
