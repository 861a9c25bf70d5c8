"""tnfr_fastcache.dumps / loads / frame_info / verify_frame on the implementation in use."""

import mmap
import pickle

import numpy as np
import pytest
from xxhash import xxh3_64_intdigest

import tnfr_fastcache
from tnfr_fastcache._pure._frame import KIND_PICKLE, pack_header
from tnfr_fastcache.errors import ChecksumError, FrameError, InvalidArgumentError
from tnfr_fastcache.serialize import dumps, frame_info, loads, verify_frame


def coherence_like(n, dense, seed=0):
    """A small TNFR-like coherence matrix: weights 0.4-1.0 on a ring of edges (or everywhere)."""
    rng = np.random.default_rng(seed)
    if dense:
        w = 0.4 + 0.6 * rng.random((n, n))
    else:
        w = np.zeros((n, n))
        for k in range(1, 6):
            idx = np.arange(n)
            w[idx, (idx + k) % n] = w[(idx + k) % n, idx] = 0.4 + 0.6 * rng.random(n)
    np.fill_diagonal(w, 1.0)
    return w


def test_public_names_are_the_serialize_functions():
    assert tnfr_fastcache.dumps is dumps
    assert tnfr_fastcache.loads is loads


def test_result_is_a_read_only_bytes_like_frame():
    frame = dumps(np.arange(10.0))
    assert isinstance(frame, memoryview) and frame.readonly
    assert len(frame) == len(bytes(frame)) == frame_info(frame)["stored_nbytes"]


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
@pytest.mark.parametrize("compression", ["lz4", "none", "gzip", "zstd", "auto"])
def test_coherence_matrix_round_trip(dense, compression):
    matrix = coherence_like(300, dense)
    matrix.flags.writeable = False
    result = loads(dumps(matrix, compression=compression))
    assert result.flags.writeable and result.flags.owndata
    np.testing.assert_array_equal(result, matrix)


def test_auto_shuffle_follows_the_data():
    # Byte shuffle helps dense floats and hurts sparse matrices (PERFORMANCE.md lesson 3).
    assert not frame_info(dumps(coherence_like(300, False)))["shuffle"]
    assert frame_info(dumps(coherence_like(300, True)))["shuffle"]


def test_auto_compression_never_picks_gzip_and_skips_incompressible_data():
    noise = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8)
    assert frame_info(dumps(noise, compression="auto"))["codec"] == "none"
    for dense in (False, True):
        assert frame_info(dumps(coherence_like(300, dense), compression="auto"))["codec"] == "lz4"


def test_shuffle_flags_are_forced():
    sparse = coherence_like(200, False)
    assert frame_info(dumps(sparse, shuffle=True))["shuffle"]
    assert not frame_info(dumps(coherence_like(200, True), shuffle=False))["shuffle"]


def test_compressed_frames_are_smaller_than_the_raw_array():
    matrix = coherence_like(400, False)
    info = frame_info(dumps(matrix))
    assert info["stored_nbytes"] * 20 < matrix.nbytes == info["raw_nbytes"]
    assert frame_info(dumps(matrix, compression="zstd"))["stored_nbytes"] < info["stored_nbytes"]


def test_frame_info_describes_an_array_frame():
    array = np.asfortranarray(np.arange(12, dtype=">i4").reshape(3, 4))
    info = frame_info(dumps(array, compression="none", chunk_size=4096))
    assert info["kind"] == "ndarray" and info["codec"] == "none" and not info["shuffle"]
    assert (info["dtype"], info["shape"], info["order"]) == (">i4", (3, 4), "F")
    assert info["raw_nbytes"] == info["payload_nbytes"] == 48
    assert info["header_nbytes"] % 64 == 0 and info["chunk_size"] == 4096 and info["n_chunks"] == 1
    assert info["segments"] == [{"raw_nbytes": 48, "codec": "none", "shuffle": 0, "n_chunks": 1}]
    assert info["version"] == 1


def test_fortran_and_strided_arrays_keep_their_values():
    base = np.arange(6 * 8 * 10, dtype=np.float32).reshape(6, 8, 10)
    for array in (np.asfortranarray(base), base[::2, 1::3, ::-1], base.transpose(2, 0, 1)):
        result = loads(dumps(array, chunk_size=4096))
        np.testing.assert_array_equal(result, array)
    assert loads(dumps(np.asfortranarray(base))).flags.f_contiguous


def test_out_is_filled_in_place():
    matrix = coherence_like(100, False)
    out = np.empty_like(matrix)
    assert loads(dumps(matrix), out=out) is out
    np.testing.assert_array_equal(out, matrix)
    # A layout other than the frame's still works (through a temporary).
    out_f = np.empty(matrix.shape, order="F")
    assert loads(dumps(matrix), out=out_f) is out_f
    np.testing.assert_array_equal(out_f, matrix)


@pytest.mark.parametrize(
    "out, message",
    [
        (np.empty((100, 99)), "shape"),
        (np.empty((100, 100), np.float32), "dtype"),
        (np.empty((100, 100), ">f8"), "dtype"),
        ([0.0] * 10, "numpy array"),
    ],
)
def test_out_that_does_not_fit_is_refused(out, message):
    with pytest.raises(InvalidArgumentError, match=message):
        loads(dumps(np.zeros((100, 100))), out=out)


def test_read_only_out_is_refused():
    out = np.empty(10)
    out.flags.writeable = False
    with pytest.raises(InvalidArgumentError, match="read-only"):
        loads(dumps(np.zeros(10)), out=out)


def test_view_returns_a_read_only_view_of_an_uncompressed_frame():
    matrix = coherence_like(64, True)
    frame = bytearray(dumps(matrix, compression="none", shuffle=False))
    view = loads(frame, view=True)
    np.testing.assert_array_equal(view, matrix)
    assert not view.flags.writeable
    assert np.shares_memory(view, np.frombuffer(frame, np.uint8))


def test_view_of_a_compressed_frame_decodes_a_copy():
    matrix = coherence_like(64, False)
    frame = dumps(matrix)
    result = loads(frame, view=True)
    np.testing.assert_array_equal(result, matrix)
    assert not np.shares_memory(result, np.frombuffer(frame, np.uint8))


def test_view_of_a_memory_mapped_file(tmp_path):
    matrix = coherence_like(128, True)
    path = tmp_path / "m.frame"
    path.write_bytes(dumps(matrix, compression="none", shuffle=False))
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = loads(mapped, view=True)
        np.testing.assert_array_equal(view, matrix)
        del view


@pytest.mark.parametrize(
    "value",
    [b"", b"abc" * 1000, bytearray(b"\x00\x01" * 3000), memoryview(b"hello world")],
    ids=["empty", "bytes", "bytearray", "memoryview"],
)
def test_raw_bytes_keep_their_type(value):
    result = loads(dumps(value))
    assert type(result) is type(value)
    assert bytes(result) == bytes(value)
    assert frame_info(dumps(value))["kind"] == "bytes"


def test_strided_memoryview_is_framed_as_its_bytes():
    view = memoryview(bytes(range(100)))[::3]
    assert bytes(loads(dumps(view))) == bytes(view)


def test_raw_bytes_into_out_and_as_view():
    payload = bytes(range(256)) * 64
    out = bytearray(len(payload))
    assert loads(dumps(payload), out=out) is out and out == payload
    view = loads(dumps(payload, compression="none"), view=True)
    assert isinstance(view, memoryview) and view.readonly and view == payload


@pytest.mark.parametrize(
    "value",
    [None, 3, 2.5, "text", (1, "a"), {"a": [1, 2]}, np.float64(1.5), np.array(["a", "bc"]), np.array([1, None], object)],
    ids=repr,
)
def test_other_values_are_pickled(value):
    frame = dumps(value)
    assert frame_info(frame)["kind"] == "pickle"
    result = loads(frame)
    if isinstance(value, np.ndarray):
        assert result.dtype == value.dtype
        np.testing.assert_array_equal(result, value)
    else:
        assert result == value and type(result) is type(value)


def test_nested_arrays_go_out_of_band_with_their_own_shuffle():
    dense, sparse = coherence_like(100, True), coherence_like(100, False)
    value = {"dense": dense, "nested": [sparse, {"ints": np.arange(1000)}], "label": "x"}
    frame = dumps(value)
    info = frame_info(frame)
    assert info["kind"] == "pickle" and len(info["segments"]) == 4
    # The pickle stream itself is tiny: the arrays' bytes are segments, not inside it.
    assert info["segments"][0]["raw_nbytes"] < 1000
    shuffles = sorted(segment["shuffle"] for segment in info["segments"][1:])
    assert shuffles[-1] == 8 and shuffles[0] == 0
    result = loads(frame)
    np.testing.assert_array_equal(result["dense"], dense)
    np.testing.assert_array_equal(result["nested"][0], sparse)
    np.testing.assert_array_equal(result["nested"][1]["ints"], np.arange(1000))
    assert result["label"] == "x"


def test_scipy_sparse_matrix_round_trip():
    sparse = pytest.importorskip("scipy.sparse")
    matrix = sparse.random(300, 300, density=0.02, format="csr", random_state=0)
    result = loads(dumps(matrix))
    assert type(result) is type(matrix)
    assert (result != matrix).nnz == 0


def test_array_subclasses_are_pickled_to_keep_their_type():
    masked = np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])
    frame = dumps(masked)
    assert frame_info(frame)["kind"] == "pickle"
    result = loads(frame)
    assert isinstance(result, np.ma.MaskedArray) and result.mask.tolist() == [False, True, False]


def test_structured_and_datetime_arrays_are_pickled():
    for array in (np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]), np.arange(3).astype("M8[s]")):
        frame = dumps(array)
        assert frame_info(frame)["kind"] == "pickle"
        np.testing.assert_array_equal(loads(frame), array)


def test_unpicklable_value_raises_the_pickle_error():
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        dumps(lambda: None)


def test_pickled_value_whose_class_is_gone_is_a_frame_error():
    # A checksummed pickle stream naming a module that does not exist (GLOBAL, (), REDUCE).
    stream = b"cno_such_module\nthing\n)R."
    header = pack_header(KIND_PICKLE, 0, "", (), 4096, [(len(stream), 0, 0)], [len(stream)], [xxh3_64_intdigest(stream)])
    with pytest.raises(FrameError, match="cannot be loaded"):
        loads(header + stream)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"compression": "brotli"}, "compression must be one of"),
        ({"shuffle": "yes"}, "shuffle must be"),
        ({"shuffle": 1}, "shuffle must be"),
        ({"chunk_size": 1000}, "chunk_size"),
        ({"chunk_size": 1 << 30}, "chunk_size"),
        ({"compression": "lz4", "level": 0}, "lz4 level"),
        ({"compression": "gzip", "level": 11}, "gzip level"),
        ({"compression": "none", "level": 1}, "takes no level"),
        ({"compression": "auto", "level": 1}, "takes no level"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        dumps(np.zeros(10), **kwargs)


@pytest.mark.parametrize("level", [1, 3, 9])
def test_levels_round_trip(level):
    matrix = coherence_like(100, False)
    for compression in ("lz4", "gzip", "zstd"):
        np.testing.assert_array_equal(loads(dumps(matrix, compression=compression, level=level)), matrix)


def test_many_chunks_round_trip():
    matrix = coherence_like(300, True)
    frame = dumps(matrix, chunk_size=4096)
    assert frame_info(frame)["n_chunks"] == -(-matrix.nbytes // 4096)
    np.testing.assert_array_equal(loads(frame), matrix)


@pytest.mark.parametrize("cut", [0, 1, 39, 40, 100, -1])
def test_truncated_frame_is_a_frame_error(cut):
    frame = bytes(dumps(coherence_like(50, True), chunk_size=4096))
    with pytest.raises(FrameError):
        loads(frame[:cut])


def test_trailing_bytes_are_refused():
    frame = bytes(dumps(np.arange(5)))
    with pytest.raises(FrameError, match="trailing bytes"):
        loads(frame + b"\0")


def test_not_a_buffer_is_a_frame_error():
    with pytest.raises(FrameError, match="bytes-like"):
        loads("a string")
    with pytest.raises(FrameError, match="not a tnfr_fastcache frame"):
        loads(pickle.dumps(np.zeros(100)))


def test_verify_frame_checks_every_chunk():
    frame = bytearray(dumps(coherence_like(100, True), chunk_size=4096))
    verify_frame(frame)
    frame[-1] ^= 1
    with pytest.raises(ChecksumError):
        verify_frame(frame)
    with pytest.raises(ChecksumError):
        loads(frame)


def test_header_corruption_is_a_checksum_error():
    frame = bytearray(dumps(np.arange(100.0)))
    frame[40] ^= 0x10  # inside the segment table
    with pytest.raises(ChecksumError, match="header"):
        frame_info(frame)


def test_verify_false_skips_payload_checksums():
    frame = bytearray(dumps(np.arange(1000.0), compression="none", shuffle=False))
    frame[-8:] = np.float64(-1.0).tobytes()
    result = loads(frame, verify=False)
    assert result[-1] == -1.0
    with pytest.raises(ChecksumError):
        loads(frame)


def test_frames_from_any_buffer_type():
    frame = dumps(np.arange(20))
    for buffer in (bytes(frame), bytearray(frame), memoryview(bytes(frame)), np.frombuffer(bytes(frame), np.uint8)):
        np.testing.assert_array_equal(loads(buffer), np.arange(20))


@pytest.mark.slow
def test_value_over_2_gib_round_trips():
    # LZ4 and blosc refuse single buffers over 2 GiB; chunking makes them ordinary.
    size = (1 << 31) + 4096 + 8
    value = np.zeros(size, np.uint8)
    value[-1] = 7
    value[1 << 31] = 3
    frame = dumps(value)
    assert frame_info(frame)["raw_nbytes"] == size
    del value
    result = loads(frame)
    assert result.size == size and result[-1] == 7 and result[1 << 31] == 3 and result[-2] == 0
    assert int(np.count_nonzero(result)) == 2
