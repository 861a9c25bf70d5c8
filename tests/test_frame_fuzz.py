"""Hostile frames: truncated, bit-flipped, forged or random bytes give FrameError, never a crash.

Both twins are fuzzed (``_impl.load_both``). A forged header whose checksum the forger
recomputed may still describe a valid frame (e.g. ``<f8`` relabelled ``<i8``); then the
result must be exactly what the header says, decoded without reading past the buffer.
"""

import contextlib
import struct

import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tnfr_fastcache import _impl, serialize
from tnfr_fastcache._pure import _frame as pure_frame
from tnfr_fastcache.errors import FrameError

COMPILED, PURE = _impl.load_both("_frame")
TWINS = [pytest.param(PURE, id="pure")] + ([pytest.param(COMPILED, id="compiled")] if COMPILED is not None else [])
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextlib.contextmanager
def using(twin):
    saved = serialize._frame
    serialize._frame = twin
    try:
        yield
    finally:
        serialize._frame = saved


def _sparse(n):
    matrix = np.zeros((n, n))
    idx = np.arange(n)
    matrix[idx, (idx + 1) % n] = 0.5
    np.fill_diagonal(matrix, 1.0)
    return matrix


def _base_frames():
    rng = np.random.default_rng(7)
    dense = 0.4 + 0.6 * rng.random((30, 40))
    values = [
        (dense, {"compression": "lz4", "shuffle": True}),
        (_sparse(40), {"compression": "lz4", "shuffle": False}),
        (dense.astype(np.float32), {"compression": "none", "shuffle": False}),
        (_sparse(30), {"compression": "gzip"}),
        (_sparse(30), {"compression": "zstd", "shuffle": True}),
        (np.arange(3000, dtype=np.int16), {"compression": "lz4", "shuffle": True}),
        (b"0123456789" * 900, {"compression": "lz4"}),
        ({"a": _sparse(20), "b": [np.arange(500), "x"]}, {"compression": "lz4"}),
    ]
    with using(PURE):
        return [bytes(serialize.dumps(value, chunk_size=4096, **kwargs)) for value, kwargs in values]


BASE = _base_frames()
frames = st.sampled_from(range(len(BASE)))
# Payload forgery skips the pickle frame: a forged pickle stream is arbitrary code by
# design (shared tiers sign frames for that), not a decoding question.
non_pickle_frames = st.sampled_from([i for i, f in enumerate(BASE) if f[5] != pure_frame.KIND_PICKLE])


def decode(twin, frame, **kwargs):
    with using(twin):
        return serialize.loads(frame, **kwargs)


def reseal(frame):
    """Recompute the header checksum of a (possibly forged) frame, when its header is long enough."""
    try:
        header_len = _header_len(frame)
    except (FrameError, struct.error):
        return frame
    data = bytearray(frame)
    end = header_len - 8
    if end < 0 or header_len > len(data):
        return frame
    data[end:header_len] = struct.pack("<Q", xxhash.xxh3_64_intdigest(bytes(data[:end])))
    return bytes(data)


def _header_len(frame):
    _, _, kind, _, ndim, _, chunk_size, n_segments, _ = struct.unpack_from("<4sBBBB8sIIQ", frame, 0)
    if not 0 < n_segments <= 64 or not chunk_size:
        raise FrameError("unusable")
    n_chunks = 0
    for index in range(n_segments):
        (raw_len,) = struct.unpack_from("<Q", frame, 32 + 8 * ndim + 16 * index)
        n_chunks += -(-raw_len // chunk_size)
    return pure_frame.header_length(ndim, n_segments, n_chunks)


@pytest.mark.parametrize("twin", TWINS)
@FUZZ
@given(index=frames, data=st.data())
def test_truncated_frame(twin, index, data):
    frame = BASE[index]
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(FrameError):
        decode(twin, frame[:cut])


@pytest.mark.parametrize("twin", TWINS)
@FUZZ
@given(index=frames, data=st.data())
def test_bit_flips(twin, index, data):
    frame = bytearray(BASE[index])
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(frame) - 1))
        frame[position] ^= 1 << data.draw(st.integers(0, 7))
    if bytes(frame) == BASE[index]:
        return
    with pytest.raises(FrameError):
        decode(twin, bytes(frame))


@pytest.mark.parametrize("twin", TWINS)
@FUZZ
@given(index=frames, data=st.data())
def test_forged_header_fields(twin, index, data):
    frame = bytearray(BASE[index])
    header = pure_frame.parse_header(BASE[index])
    # Overwrite 1-3 header fields (fixed part, shape, segment or chunk tables) with random
    # values, then reseal the header checksum as a deliberate forger would.
    for _ in range(data.draw(st.integers(1, 3))):
        width = data.draw(st.sampled_from([1, 2, 4, 8]))
        position = data.draw(st.integers(4, header.header_len - 8 - width))
        frame[position : position + width] = data.draw(st.binary(min_size=width, max_size=width))
    forged = reseal(bytes(frame))
    try:
        info = serialize.frame_info(forged)
        result = decode(twin, forged)
    except FrameError:
        return
    if info["kind"] == "ndarray":
        assert result.shape == info["shape"] and result.dtype.str == info["dtype"]
    elif info["kind"] == "bytes":
        assert len(result) == info["raw_nbytes"]


@pytest.mark.parametrize("twin", TWINS)
@FUZZ
@given(tail=st.binary(max_size=400))
def test_random_bytes_after_the_magic(twin, tail):
    with pytest.raises(FrameError):
        decode(twin, pure_frame.MAGIC + bytes([pure_frame.VERSION]) + tail)


@pytest.mark.parametrize("twin", TWINS)
@FUZZ
@given(index=non_pickle_frames, data=st.data())
def test_forged_payload_with_valid_checksums_never_crashes(twin, index, data):
    # The forger rewrites a compressed chunk and its checksum: the codec's own checks and
    # the exact-length check must catch every malformed chunk.
    header = pure_frame.parse_header(BASE[index])
    chunk = data.draw(st.integers(0, len(header.stored) - 1)) if len(header.stored) else None
    if chunk is None:
        return
    frame = bytearray(BASE[index])
    start = int(header.offsets[chunk])
    stop = start + int(header.stored[chunk])
    frame[start:stop] = data.draw(st.binary(min_size=stop - start, max_size=stop - start))
    table = header.header_len - 8 - 12 * len(header.stored) + 12 * chunk
    frame[table + 4 : table + 12] = struct.pack("<Q", xxhash.xxh3_64_intdigest(bytes(frame[start:stop])))
    forged = reseal(bytes(frame))
    try:
        decode(twin, forged)
    except FrameError:
        pass


def _parse_outcome(twin, frame):
    """What ``twin.parse_header`` makes of ``frame``: the exception (class and message) or every header field."""
    try:
        header = twin.parse_header(frame)
    except Exception as exc:  # noqa: BLE001 - any difference between the twins is the failure
        return type(exc), str(exc)
    segments = [(s.raw_len, s.codec.name, s.shuffle, s.first_chunk, s.n_chunks) for s in header.segments]
    fields = [getattr(header, name) for name in pure_frame.FrameHeader.__slots__ if name != "segments"]
    return fields, segments


def _hostile_variant(data):
    index = data.draw(frames)
    frame = bytearray(BASE[index])
    how = data.draw(st.sampled_from(["truncate", "flip", "forge", "extend"]))
    if how == "truncate":
        return bytes(frame[: data.draw(st.integers(0, len(frame) - 1))])
    if how == "extend":
        return bytes(frame) + data.draw(st.binary(min_size=1, max_size=16))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            position = data.draw(st.integers(0, len(frame) - 1))
            frame[position] ^= 1 << data.draw(st.integers(0, 7))
        return bytes(frame)
    header_len = pure_frame.parse_header(BASE[index]).header_len
    for _ in range(data.draw(st.integers(1, 3))):
        width = data.draw(st.sampled_from([1, 2, 4, 8]))
        position = data.draw(st.integers(0, header_len - 8 - width))
        frame[position : position + width] = data.draw(st.binary(min_size=width, max_size=width))
    return reseal(bytes(frame))


@pytest.mark.skipif(COMPILED is None, reason="compiled twin not built")
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_twins_parse_hostile_headers_identically(data):
    # The compiled header parser re-implements the pure one in C: same result, or the same
    # exception class with the same message, for every hostile variant.
    frame = _hostile_variant(data)
    assert _parse_outcome(COMPILED, frame) == _parse_outcome(PURE, frame)


@pytest.mark.skipif(COMPILED is None, reason="compiled twin not built")
@pytest.mark.parametrize("container", [bytes, bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8)])
def test_twins_parse_every_base_frame_identically(container):
    for frame in BASE:
        assert _parse_outcome(COMPILED, container(frame)) == _parse_outcome(PURE, container(frame))


@pytest.mark.parametrize("twin", TWINS)
def test_segment_table_length_does_not_wrap_at_4_gib(twin):
    # A frame of 4 GiB or more may claim 2**28 segments or more: 16 bytes each is 2**32 or
    # more, which must not wrap in 32 bits and let the segment loop read past the buffer.
    size = (1 << 32) + 64
    try:
        frame = np.zeros(size, np.uint8)  # calloc: untouched pages cost no memory
    except MemoryError:
        pytest.skip("no 4 GiB of address space")
    frame[:32] = np.frombuffer(
        struct.pack("<4sBBBB8sIIQ", pure_frame.MAGIC, pure_frame.VERSION, 2, 0, 0, bytes(8),
                    pure_frame.DEFAULT_CHUNK_SIZE, size // 16, 0),
        np.uint8,
    )
    with pytest.raises(FrameError, match="truncated frame: the shape and segment table needs"):
        twin.parse_header(frame)
