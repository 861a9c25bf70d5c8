"""The frame codec against what users would do instead, on TNFR-like coherence matrices.

Peers, side by side in one run (``group=`` puts them together):

- ``ours``: ``tnfr_fastcache.dumps`` (default: lz4, shuffle "auto") / ``loads`` into a new array;
- ``ours-zstd``: the same with ``compression="zstd"`` (best ratio);
- ``seed``: the seed's path, ``pickle.dumps`` + ``lz4.frame.compress`` and back;
- ``npsave-lz4``: ``np.save`` into memory + ``lz4.frame`` and back;
- ``blosc2-lz4`` / ``blosc2-lz4-shuffle``: ``blosc2.pack_tensor``/``unpack_tensor`` with the LZ4
  codec, without and with byte shuffle, using as many threads as our codec.

Every benchmark records who it measures (``subject``), the raw size (``nbytes``) and the
compression ratio (raw bytes / stored bytes) in ``extra_info``.
Run: ``python -m pytest benchmarks/bench_codec.py --benchmark-columns=median,iqr,rounds --benchmark-sort=name``.
"""

import io
import pickle

import lz4.frame
import numpy as np
import pytest

from tnfr_fastcache import _impl, loads, dumps
from tnfr_fastcache.serialize import frame_info

from conftest import coherence_matrix

MATRICES = [(100, "sparse"), (100, "dense"), (1000, "sparse"), (1000, "dense"), (4000, "sparse"), (4000, "dense")]
MATRIX_IDS = [f"{kind}{n}" for n, kind in MATRICES]
# dumps and loads alone on the 128 MB sparse matrix only (the loads goal), to keep
# the file's smoke run short; every matrix gets the round trip.
ONE_WAY = [MATRICES[2], MATRICES[3], MATRICES[4]]
ONE_WAY_IDS = [MATRIX_IDS[2], MATRIX_IDS[3], MATRIX_IDS[4]]


def _threads():
    module = _impl.load("_frame")
    return getattr(module, "threads", 1)


def _blosc2_codec(shuffle):
    blosc2 = pytest.importorskip("blosc2")
    cparams = {
        "codec": blosc2.Codec.LZ4,
        "filters": [blosc2.Filter.SHUFFLE if shuffle else blosc2.Filter.NOFILTER],
        "nthreads": _threads(),
    }
    # unpack_tensor takes no parameters: decompression uses the global thread count.
    blosc2.set_nthreads(_threads())
    return (lambda a: blosc2.pack_tensor(a, cparams=cparams)), blosc2.unpack_tensor


def _npsave_dumps(a):
    out = io.BytesIO()
    np.save(out, a, allow_pickle=False)
    return lz4.frame.compress(out.getbuffer())


def _npsave_loads(b):
    return np.load(io.BytesIO(lz4.frame.decompress(b)), allow_pickle=False)


def _peer(name):
    """``(dumps, loads)`` of one peer."""
    if name == "ours":
        return dumps, loads
    if name == "ours-zstd":
        return (lambda a: dumps(a, compression="zstd")), loads
    if name == "seed":
        return (lambda a: lz4.frame.compress(pickle.dumps(a, protocol=5))), (
            lambda b: pickle.loads(lz4.frame.decompress(b))
        )
    if name == "npsave-lz4":
        return _npsave_dumps, _npsave_loads
    if name == "blosc2-lz4":
        return _blosc2_codec(shuffle=False)
    if name == "blosc2-lz4-shuffle":
        return _blosc2_codec(shuffle=True)
    raise ValueError(name)


PEERS = ["ours", "ours-zstd", "seed", "npsave-lz4", "blosc2-lz4", "blosc2-lz4-shuffle"]


def _record(benchmark, matrix, stored, peer):
    benchmark.extra_info["ratio"] = round(matrix.nbytes / len(stored), 3)
    benchmark.extra_info["nbytes"] = matrix.nbytes
    benchmark.extra_info["subject"] = peer


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("size_kind", MATRICES, ids=MATRIX_IDS)
def test_roundtrip(benchmark, size_kind, peer):
    n, kind = size_kind
    matrix = coherence_matrix(n, kind)
    encode, decode = _peer(peer)
    benchmark.group = f"roundtrip {kind} N={n}"
    last = [None]

    def roundtrip():
        last[0] = encode(matrix)
        return decode(last[0])

    result = benchmark(roundtrip)
    _record(benchmark, matrix, last[0], peer)
    np.testing.assert_array_equal(result, matrix)


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("size_kind", ONE_WAY, ids=ONE_WAY_IDS)
def test_dumps(benchmark, size_kind, peer):
    n, kind = size_kind
    matrix = coherence_matrix(n, kind)
    encode, _ = _peer(peer)
    benchmark.group = f"dumps {kind} N={n}"
    stored = benchmark(encode, matrix)
    _record(benchmark, matrix, stored, peer)


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("size_kind", ONE_WAY, ids=ONE_WAY_IDS)
def test_loads(benchmark, size_kind, peer):
    n, kind = size_kind
    matrix = coherence_matrix(n, kind)
    encode, decode = _peer(peer)
    stored = encode(matrix)
    benchmark.group = f"loads {kind} N={n}"
    _record(benchmark, matrix, stored, peer)
    result = benchmark(decode, stored)
    np.testing.assert_array_equal(result, matrix)


# Small values: the per-call cost (header, argument checks, numpy calls) a cache pays on
# every small hit, against the seed path and bare pickle (no frame, no checksum).
SMALL = {
    "float64x10": np.arange(10.0),
    "float64x1000": np.random.default_rng(0).random(1000),
    "dict3": {"a": 1, "b": 2.5, "c": "x"},
}
SMALL_PEERS = {
    "ours": (dumps, loads),
    "seed": _peer("seed"),
    "pickle": (lambda v: pickle.dumps(v, protocol=5), pickle.loads),
}


@pytest.mark.parametrize("peer", list(SMALL_PEERS))
@pytest.mark.parametrize("name", list(SMALL))
def test_small_dumps(benchmark, name, peer):
    encode, decode = SMALL_PEERS[peer]
    benchmark.group = f"small dumps {name}"
    benchmark.extra_info["subject"] = peer
    stored = benchmark(encode, SMALL[name])
    np.testing.assert_equal(decode(stored), SMALL[name])


@pytest.mark.parametrize("peer", list(SMALL_PEERS))
@pytest.mark.parametrize("name", list(SMALL))
def test_small_loads(benchmark, name, peer):
    encode, decode = SMALL_PEERS[peer]
    stored = bytes(encode(SMALL[name]))
    benchmark.group = f"small loads {name}"
    benchmark.extra_info["subject"] = peer
    np.testing.assert_equal(benchmark(decode, stored), SMALL[name])


@pytest.mark.parametrize("size_kind", [(4000, "sparse")], ids=["sparse4000"])
def test_loads_into_out(benchmark, size_kind):
    # The disk and memory tiers can decode into a reused array: no page faults.
    n, kind = size_kind
    matrix = coherence_matrix(n, kind)
    frame = dumps(matrix)
    out = np.empty_like(matrix)
    benchmark.group = f"loads {kind} N={n}"
    _record(benchmark, matrix, frame, "ours-out")
    benchmark(loads, frame, out=out)
    np.testing.assert_array_equal(out, matrix)


def test_auto_picks_what_the_benchmarks_assume():
    # The default frame of a sparse matrix is unshuffled LZ4; of a dense one, shuffled LZ4.
    assert not frame_info(dumps(coherence_matrix(1000, "sparse")))["shuffle"]
    assert frame_info(dumps(coherence_matrix(1000, "dense")))["shuffle"]
