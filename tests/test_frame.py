"""The two frame codec twins: byte-identical frames, each decodes the other's, every header check.

Runs the same in both suite modes: it loads both twins itself (``_impl.load_both``); the
compiled-only tests skip when the extension is not built.
"""

import struct

import lz4.block
import numpy as np
import pytest
import xxhash

from tnfr_fastcache import _impl, serialize
from tnfr_fastcache._pure import _frame as pure_frame
from tnfr_fastcache.codecs import get_codec
from tnfr_fastcache.errors import ChecksumError, FrameError

COMPILED, PURE = _impl.load_both("_frame")
TWINS = [pytest.param(PURE, id="pure")] + (
    [pytest.param(COMPILED, id="compiled")] if COMPILED is not None else []
)
needs_compiled = pytest.mark.skipif(COMPILED is None, reason="the _frame extension is not built")
SMALL_CHUNK = 4096

LITTLE = ["|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8", "<c8", "<c16"]
BIG = [">i2", ">u4", ">f8", ">c16"]
SHAPES = [(), (0,), (0, 7), (1,), (2500,), (37, 53), (9, 11, 13)]


def make_array(dtype, shape, order, seed=0):
    """A reproducible array with runs of zeros and noise, in C, F or strided layout."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    full = tuple(2 * d for d in shape) if order == "strided" else shape
    size = int(np.prod(full))
    if dtype.kind == "b":
        values = rng.random(size) < 0.3
    elif dtype.kind == "c":
        values = rng.standard_normal(size) + 1j * rng.standard_normal(size)
    elif dtype.kind == "f":
        values = rng.standard_normal(size) * (rng.random(size) < 0.5)
    else:
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size, dtype=dtype.newbyteorder("="), endpoint=True) * (rng.random(size) < 0.5)
    array = np.asarray(values).astype(dtype).reshape(full)
    if order == "F":
        return np.asfortranarray(array)
    if order == "strided":
        return array[tuple(slice(None, None, 2) for _ in shape) + (Ellipsis,)]
    return array


@pytest.fixture
def use_frame(monkeypatch):
    """Point ``serialize`` at one twin for the rest of the test."""

    def use(module):
        monkeypatch.setattr(serialize, "_frame", module)

    return use


def dumps_with(module, value, use_frame, **kwargs):
    use_frame(module)
    return bytes(serialize.dumps(value, **kwargs))


def loads_with(module, frame, use_frame, **kwargs):
    use_frame(module)
    return serialize.loads(frame, **kwargs)


def assert_same_array(result, expected):
    assert type(result) is np.ndarray
    assert result.dtype == expected.dtype and result.dtype.str == expected.dtype.str
    assert result.shape == expected.shape
    assert result.flags.writeable
    np.testing.assert_array_equal(result, expected)


def check_twins(value, use_frame, **kwargs):
    """Both twins write the same bytes and decode each other's frames to ``value``."""
    frames = [dumps_with(twin, value, use_frame, **kwargs) for twin in (PURE, COMPILED) if twin is not None]
    assert all(frame == frames[0] for frame in frames)
    for twin in (PURE, COMPILED):
        if twin is not None:
            assert_same_array(loads_with(twin, frames[0], use_frame), value)
    return frames[0]


@pytest.mark.parametrize("order", ["C", "F", "strided"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", LITTLE + BIG)
def test_twins_every_dtype_shape_and_order(dtype, shape, order, use_frame):
    array = make_array(dtype, shape, order)
    check_twins(array, use_frame, compression="lz4", shuffle="auto", chunk_size=SMALL_CHUNK)


@pytest.mark.parametrize("shuffle", [True, False, "auto"])
@pytest.mark.parametrize("compression", ["none", "lz4", "gzip", "zstd", "auto"])
@pytest.mark.parametrize("order", ["C", "F", "strided"])
@pytest.mark.parametrize("dtype", ["<f8", "<i2", "<c16", "|b1", ">f4"])
def test_twins_every_codec_and_shuffle(dtype, order, compression, shuffle, use_frame):
    array = make_array(dtype, (41, 67), order, seed=3)
    frame = check_twins(array, use_frame, compression=compression, shuffle=shuffle, chunk_size=SMALL_CHUNK)
    info = serialize.frame_info(frame)
    if compression == "auto":
        assert info["codec"] in ("lz4", "none")
    else:
        assert info["codec"] == compression
    # "auto" drops a requested shuffle only together with compression, where it cannot help.
    if shuffle is False or array.itemsize == 1 or compression == "auto" and info["codec"] == "none":
        assert not info["shuffle"]
    elif shuffle is True:
        assert info["shuffle"]


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_twins_pickle_and_bytes_frames(compression, use_frame):
    values = [
        {"sparse": make_array("<f8", (60, 60), "C"), "ints": [make_array("<i4", (500,), "F"), "text", 3]},
        b"abc" * 5000,
        bytearray(range(256)) * 40,
    ]
    for value in values:
        frames = {dumps_with(t, value, use_frame, compression=compression, chunk_size=SMALL_CHUNK) for t in (PURE, COMPILED) if t}
        assert len(frames) == 1
        frame = frames.pop()
        for twin in (PURE, COMPILED):
            if twin is not None:
                result = loads_with(twin, frame, use_frame)
                assert type(result) is type(value)
                if isinstance(value, dict):
                    np.testing.assert_array_equal(result["sparse"], value["sparse"])
                    np.testing.assert_array_equal(result["ints"][0], value["ints"][0])
                    assert result["ints"][1:] == ["text", 3]
                else:
                    assert result == value


@needs_compiled
@pytest.mark.parametrize("size", [2, 4, 8, 16])
@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 64, 1001])
def test_compiled_shuffle_matches_numpy_transpose(size, count):
    # The 8-byte kernel works 8 elements at a time; counts around 8 exercise its tail loop.
    data = np.random.default_rng(count).integers(0, 256, size * count, dtype=np.uint8)
    if not count:
        data = np.zeros(size, np.uint8)
    source = data.view(np.uint8)
    frame = COMPILED.encode(3, 0, "", (), [source], [get_codec("none")], [size], [None], 1 << 16)
    header = PURE.parse_header(frame)
    payload = np.frombuffer(frame, np.uint8)[header.payload_offset :]
    expected = source.reshape(-1, size).T.reshape(-1)
    np.testing.assert_array_equal(payload, expected)


@pytest.mark.parametrize("twin", TWINS)
def test_lz4_chunks_are_python_lz4_blocks(twin):
    # Chunks are plain LZ4 blocks: python-lz4 (any LZ4 implementation) decodes them.
    array = make_array("<f8", (300, 300), "C")
    frame = twin.encode(1, 0, "<f8", array.shape, [array], [get_codec("lz4")], [0], [1], 1 << 16)
    header = PURE.parse_header(frame)
    raw = array.reshape(-1).view(np.uint8)
    view = memoryview(frame)
    for index in range(len(header.stored)):
        start = index * header.chunk_size
        expected = raw[start : start + header.chunk_size].tobytes()
        data = view[header.offsets[index] : header.offsets[index] + header.stored[index]]
        if len(data) == len(expected):
            assert bytes(data) == expected
        else:
            assert lz4.block.decompress(data, uncompressed_size=len(expected)) == expected
        assert xxhash.xxh3_64_intdigest(data) == int(header.checksums[index])


def test_payload_is_64_byte_aligned_and_raw_when_uncompressed():
    array = make_array("<f8", (100, 100), "C")
    frame = PURE.encode(1, 0, "<f8", array.shape, [array], [get_codec("none")], [0], [None])
    header = PURE.parse_header(frame)
    assert header.payload_offset % 64 == 0
    assert bytes(memoryview(frame)[header.payload_offset :]) == array.tobytes()


@pytest.mark.parametrize("twin", TWINS)
def test_decode_segment_refuses_a_wrong_output_buffer(twin):
    array = np.arange(100.0)
    frame = twin.encode(1, 0, "<f8", array.shape, [array], [get_codec("lz4")], [0], [1])
    header = PURE.parse_header(frame)
    for bad in (np.empty(799, np.uint8), np.empty(800, np.int8), np.empty((2, 400), np.uint8)):
        with pytest.raises(FrameError, match="800 contiguous bytes"):
            twin.decode_segment(frame, header, 0, bad)


# Forged headers: every field is checked, each with its own message, even when the forger
# recomputes the header checksum.


def reseal(frame, edit):
    """Apply ``edit(bytearray)`` to the header of ``frame`` and recompute the header checksum."""
    header = PURE.parse_header(frame)
    data = bytearray(frame)
    edit(data)
    end = header.header_len - 8
    data[end : end + 8] = struct.pack("<Q", xxhash.xxh3_64_intdigest(bytes(data[:end])))
    return bytes(data)


@pytest.fixture(scope="module")
def array_frame():
    array = make_array("<f8", (50, 40), "C")
    return bytes(PURE.encode(1, 0, "<f8", array.shape, [array], [get_codec("lz4")], [8], [1], SMALL_CHUNK))


FORGERIES = [
    ("magic", lambda d: d.__setitem__(slice(0, 4), b"PK\x03\x04"), "not a tnfr_fastcache frame"),
    ("version", lambda d: d.__setitem__(4, 2), "unsupported frame format version 2"),
    ("kind", lambda d: d.__setitem__(5, 9), "frame .*kind|unknown frame kind"),
    ("flags", lambda d: d.__setitem__(6, 0x80), "unknown flags"),
    ("dtype_object", lambda d: d.__setitem__(slice(8, 16), b"|O\0\0\0\0\0\0"), "not an allowed"),
    ("dtype_garbage", lambda d: d.__setitem__(slice(8, 16), b"<f8\0x\0\0\0"), "not an allowed"),
    ("chunk_size_odd", lambda d: d.__setitem__(slice(16, 20), struct.pack("<I", 5000)), "chunk size"),
    ("chunk_size_huge", lambda d: d.__setitem__(slice(16, 20), struct.pack("<I", 1 << 31)), "chunk size"),
    ("payload_len", lambda d: d.__setitem__(slice(24, 32), struct.pack("<Q", 12)), "add up to"),
    ("shape", lambda d: d.__setitem__(slice(32, 40), struct.pack("<Q", 51)), "needs 16320 bytes"),
    ("shape_overflow", lambda d: d.__setitem__(slice(32, 40), struct.pack("<Q", 2**63)), "needs"),
    ("codec", lambda d: d.__setitem__(56, 7), "unknown codec id 7"),
    ("shuffle_size", lambda d: d.__setitem__(57, 3), "invalid shuffle"),
    ("shuffle_vs_itemsize", lambda d: d.__setitem__(57, 4), "does not match itemsize"),
    ("reserved", lambda d: d.__setitem__(60, 1), "reserved bytes"),
    ("stored_zero", lambda d: d.__setitem__(slice(64, 68), struct.pack("<I", 0)), "stored length 0"),
    ("stored_too_long", lambda d: d.__setitem__(slice(64, 68), struct.pack("<I", 4097)), "stored length 4097"),
]


@pytest.mark.parametrize("field, edit, message", FORGERIES, ids=[f[0] for f in FORGERIES])
@pytest.mark.parametrize("twin", TWINS)
def test_forged_header_field_is_named(array_frame, field, edit, message, twin, use_frame):
    forged = reseal(array_frame, edit)
    with pytest.raises(FrameError, match=message):
        loads_with(twin, forged, use_frame)


@pytest.mark.parametrize("twin", TWINS)
def test_decompression_bomb_is_refused_before_allocating(twin, use_frame):
    # One stored byte claiming a 64 MiB LZ4 chunk: refused from the header alone.
    fake = PURE.pack_header(1, 0, "|u1", (1 << 26,), 1 << 26, [(1 << 26, 1, 0)], [1], [xxhash.xxh3_64_intdigest(b"\0")])
    with pytest.raises(FrameError, match="exceeds what lz4 can produce"):
        loads_with(twin, fake + b"\0", use_frame)


@pytest.mark.parametrize("twin", TWINS)
def test_huge_claimed_segment_fails_on_length_not_allocation(twin, use_frame):
    # A pickle frame claiming 2**60 raw bytes would need a chunk table larger than the frame.
    data = bytearray(PURE.pack_header(3, 0, "", (), 1 << 26, [(1 << 60, 0, 0)], [], []))
    with pytest.raises(FrameError, match="truncated frame"):
        loads_with(twin, bytes(data), use_frame)


@pytest.mark.parametrize("twin", TWINS)
def test_corrupt_chunk_names_the_chunk(array_frame, twin, use_frame):
    header = PURE.parse_header(array_frame)
    data = bytearray(array_frame)
    data[int(header.offsets[2])] ^= 0x40
    with pytest.raises(ChecksumError, match="segment 0 chunk 2"):
        loads_with(twin, bytes(data), use_frame)
    use_frame(twin)
    with pytest.raises(ChecksumError, match="chunk 2"):
        serialize.verify_frame(bytes(data))


@pytest.mark.parametrize("twin", TWINS)
def test_corrupt_lz4_data_without_verify_is_still_an_error(twin, use_frame):
    # verify=False skips checksums; LZ4's own bounds checks plus the exact-length check
    # must still turn garbage into FrameError, never a crash.
    array = np.zeros(20000)
    array[::7] = 1.0
    frame = bytearray(dumps_with(twin, array, use_frame, compression="lz4", shuffle=False, chunk_size=SMALL_CHUNK))
    header = PURE.parse_header(bytes(frame))
    start, stop = int(header.offsets[0]), int(header.offsets[0] + header.stored[0])
    frame[start:stop] = b"\xff" * (stop - start)
    with pytest.raises(FrameError):
        loads_with(twin, bytes(frame), use_frame, verify=False)


@pytest.fixture
def two_threads(monkeypatch):
    """Force the compiled codec to split segments over two threads."""
    monkeypatch.setattr(COMPILED, "threads", 2)
    monkeypatch.setattr(COMPILED, "THREAD_MIN_BYTES", 1)


@needs_compiled
@pytest.mark.parametrize("shuffle", [0, 8])
@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_threaded_runs_write_the_pure_bytes(two_threads, codec, shuffle, use_frame):
    # Runs of chunks are compressed at worst-case offsets and moved together afterwards:
    # the frame must not show it. Mixed sparse and dense halves give unequal run sizes.
    array = np.concatenate([make_array("<f8", (20000,), "C"), np.random.default_rng(1).random(23000)])
    args = (1, 0, "<f8", array.shape, [array], [get_codec(codec)], [shuffle], [1 if codec == "lz4" else None], SMALL_CHUNK)
    frame = bytes(COMPILED.encode(*args))
    assert COMPILED._pool is not None  # the runs really went through the pool
    assert frame == bytes(PURE.encode(*args))
    header = PURE.parse_header(frame)
    out = np.empty(array.nbytes, np.uint8)
    COMPILED.decode_segment(frame, header, 0, out)
    np.testing.assert_array_equal(out.view("<f8"), array)


@needs_compiled
def test_threaded_decode_names_a_corrupt_chunk_in_the_second_run(two_threads):
    array = make_array("<f8", (30000,), "C")
    frame = bytearray(COMPILED.encode(1, 0, "<f8", array.shape, [array], [get_codec("lz4")], [0], [1], SMALL_CHUNK))
    header = PURE.parse_header(bytes(frame))
    last = len(header.stored) - 1
    frame[int(header.offsets[last])] ^= 1
    with pytest.raises(ChecksumError, match=f"chunk {last}:"):
        COMPILED.decode_segment(frame, header, 0, np.empty(array.nbytes, np.uint8))


@needs_compiled
def test_forked_child_gets_its_own_thread_pool(two_threads):
    multiprocessing = pytest.importorskip("multiprocessing")
    array = make_array("<f8", (40000,), "C")
    COMPILED.encode(1, 0, "<f8", array.shape, [array], [get_codec("lz4")], [0], [1], SMALL_CHUNK)  # starts the pool
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        # Without a fresh pool the child would wait forever for threads it does not have.
        frame = pool.apply_async(_encode_in_child, (array,)).get(timeout=60)
    assert frame == bytes(PURE.encode(1, 0, "<f8", array.shape, [array], [get_codec("lz4")], [0], [1], SMALL_CHUNK))


def _encode_in_child(array):
    COMPILED.threads = 2
    COMPILED.THREAD_MIN_BYTES = 1
    return bytes(COMPILED.encode(1, 0, "<f8", array.shape, [array], [get_codec("lz4")], [0], [1], SMALL_CHUNK))


@needs_compiled
def test_lz4_chunks_below_64_kib_are_python_lz4_bytes():
    # Bug: LZ4_compress_fast switches to a 16-bit hash table below 64 KiB and wrote other
    # (valid) bytes than python-lz4, which calls LZ4_compress_fast_continue on a fresh stream.
    array = make_array("<f8", (512 * 5,), "C")
    frame = COMPILED.encode(1, 0, "<f8", array.shape, [array], [get_codec("lz4")], [0], [1], SMALL_CHUNK)
    header = PURE.parse_header(frame)
    raw = array.view(np.uint8)
    for index in range(len(header.stored)):
        expected = lz4.block.compress(raw[index * SMALL_CHUNK : (index + 1) * SMALL_CHUNK], store_size=False)
        stored = bytes(memoryview(frame)[header.offsets[index] : header.offsets[index] + header.stored[index]])
        assert stored == expected


class _ShutDownPool:
    def submit(self, *args):
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


@needs_compiled
def test_threaded_runs_fall_back_to_the_caller_when_the_pool_is_shut_down(two_threads, monkeypatch):
    # At interpreter exit (an atexit flush of a disk cache) the pool refuses work.
    monkeypatch.setattr(COMPILED, "_executor", _ShutDownPool)
    array = make_array("<f8", (30000,), "C")
    args = (1, 0, "<f8", array.shape, [array], [get_codec("lz4")], [8], [1], SMALL_CHUNK)
    frame = bytes(COMPILED.encode(*args))
    assert frame == bytes(PURE.encode(*args))
    out = np.empty(array.nbytes, np.uint8)
    COMPILED.decode_segment(frame, PURE.parse_header(frame), 0, out)
    np.testing.assert_array_equal(out.view("<f8"), array)


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("shuffle", [0, 2, 4, 8, 16])
@pytest.mark.parametrize("kind", ["dense", "sparse", "ramp", "tiny"])
def test_lz4_sizes_are_python_lz4_sizes(twin, shuffle, kind):
    # dumps' "auto" decisions come from these sizes: the compiled twin must give exactly
    # python-lz4's numbers, or the two twins would frame the same value differently.
    rng = np.random.default_rng(len(kind) * 31 + shuffle)
    sample = {
        "dense": rng.random(8192).view(np.uint8),
        "sparse": np.where(rng.random(8192) < 0.02, rng.random(8192), 0.0).view(np.uint8),
        "ramp": np.arange(16384, dtype=np.int32).view(np.uint8),
        "tiny": np.arange(4, dtype=np.float64).view(np.uint8),
    }[kind]
    plain, shuffled = twin.lz4_sizes(sample, shuffle)
    assert plain == len(lz4.block.compress(sample, store_size=False))
    if shuffle:
        moved = np.ascontiguousarray(sample.reshape(-1, shuffle).T)
        assert shuffled == len(lz4.block.compress(moved, store_size=False))
    else:
        assert shuffled is None


@needs_compiled
def test_compiled_lz4_sizes_rejects_what_it_cannot_shuffle():
    with pytest.raises(ValueError, match="cannot shuffle 7 bytes"):
        COMPILED.lz4_sizes(np.zeros(7, np.uint8), 2)
    with pytest.raises(ValueError, match="shuffle must be one of"):
        COMPILED.lz4_sizes(np.zeros(8, np.uint8), 3)


@pytest.mark.parametrize("twin", TWINS)
def test_lz4_sizes_reads_any_c_contiguous_array_as_its_bytes(twin):
    array = np.random.default_rng(5).random((64, 32)).round(2)
    assert twin.lz4_sizes(array, 8) == twin.lz4_sizes(array.reshape(-1).view(np.uint8), 8)


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("kind, flags, ndim", [(256, 0, 0), (1, 256, 1), (1, 0, pure_frame.MAX_NDIM + 1)])
def test_encode_refuses_header_fields_that_do_not_fit(twin, kind, flags, ndim):
    source = np.zeros(1, np.uint8)
    with pytest.raises(FrameError, match="cannot frame kind"):
        twin.encode(kind, flags, "|u1", (1,) * ndim, [source], [get_codec("none")], [0], [None], 4096)


@pytest.mark.parametrize("twin", ["compiled", "pure"])
@pytest.mark.parametrize("shuffle, nbytes", [(3, 96), (1, 64), (8, 20)])
def test_encode_refuses_a_shuffle_the_decoder_cannot_undo(twin, shuffle, nbytes):
    """Regression: the compiled encode trusted its shuffle sizes; 1 or 3 sent its SIMD
    shuffle past the source, and a size not dividing the segment made an unreadable frame."""
    compiled, pure = _impl.load_both("_frame")
    module = compiled if twin == "compiled" else pure
    source = np.zeros(nbytes, np.uint8)
    with pytest.raises(FrameError, match=f"cannot shuffle a {nbytes}-byte segment by {shuffle} bytes"):
        module.encode(module.KIND_BYTES, 0, "", (nbytes,), [source], [get_codec("lz4")], [shuffle], [None])
