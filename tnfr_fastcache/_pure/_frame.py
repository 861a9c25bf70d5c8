"""Frames: the byte layout of docs/FORMAT.md, pure-Python twin of ``tnfr_fastcache._frame``.

This module owns the header (``pack_header``, ``parse_header``): the compiled module imports
both from here, so the hostile-input checks exist once. The chunk loops (gather, shuffle,
compress, checksum) exist twice, here with numpy/python-lz4/xxhash and in ``_frame.pyx`` in
C, and give byte-identical frames.

A segment source is an ndarray streamed in C order (the caller passes ``arr.T`` for a
Fortran-ordered array); a non-contiguous source is gathered one chunk at a time, never
copied whole.
"""

import itertools
import struct

import lz4.block
import numpy as np
import xxhash

from ..codecs import get_codec
from ..errors import ChecksumError, FrameError

__all__ = [
    "MAGIC",
    "VERSION",
    "KIND_NDARRAY",
    "KIND_BYTES",
    "KIND_PICKLE",
    "KIND_NAMES",
    "DEFAULT_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "ALLOWED_DTYPES",
    "ALLOWED_SHUFFLES",
    "FrameHeader",
    "pack_header",
    "parse_header",
    "encode",
    "decode_segment",
    "verify_chunks",
    "as_frame_buffer",
    "lz4_sizes",
]

MAGIC = b"\x89TFC"
VERSION = 1
KIND_NDARRAY = 1
KIND_BYTES = 2
KIND_PICKLE = 3
KIND_NAMES = {KIND_NDARRAY: "ndarray", KIND_BYTES: "bytes", KIND_PICKLE: "pickle"}
FLAG_FORTRAN = 0x01
RAW_TYPE_SHIFT = 1
RAW_TYPES = ("bytes", "bytearray", "memoryview")
MAX_NDIM = 64
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 1 << 12
MAX_CHUNK_SIZE = 1 << 26
PAYLOAD_ALIGNMENT = 64
ALLOWED_SHUFFLES = (0, 2, 4, 8, 16)

ALLOWED_DTYPES = frozenset(
    ["|b1", "|i1", "|u1"]
    + [f"{e}{k}{s}" for e in "<>" for k in "iu" for s in (2, 4, 8)]
    + [f"{e}f{s}" for e in "<>" for s in (2, 4, 8)]
    + [f"{e}c{s}" for e in "<>" for s in (8, 16)]
)

_FIXED = struct.Struct("<4sBBBB8sIIQ")
_SEGMENT = struct.Struct("<QBB6s")
_CHUNK = struct.Struct("<IQ")
_CHECKSUM = struct.Struct("<Q")
_NO_RESERVED = bytes(6)


def _align(n):
    return (n + PAYLOAD_ALIGNMENT - 1) // PAYLOAD_ALIGNMENT * PAYLOAD_ALIGNMENT


def chunk_count(raw_len, chunk_size):
    """Number of chunks a segment of ``raw_len`` bytes is cut into."""
    return -(-raw_len // chunk_size)


def header_length(ndim, n_segments, n_chunks):
    """Bytes of the header (fixed part, shape, segment and chunk tables, checksum)."""
    return _FIXED.size + 8 * ndim + _SEGMENT.size * n_segments + _CHUNK.size * n_chunks + _CHECKSUM.size


class Segment:
    """One segment of a frame: ``raw_len`` bytes cut into chunks of ``chunk_size``.

    ``first_chunk`` indexes the frame's chunk table.
    """

    __slots__ = ("raw_len", "codec", "shuffle", "first_chunk", "n_chunks")

    def __init__(self, raw_len, codec, shuffle, first_chunk, n_chunks):
        self.raw_len = raw_len
        self.codec = codec
        self.shuffle = shuffle
        self.first_chunk = first_chunk
        self.n_chunks = n_chunks

    def __repr__(self):
        return f"Segment(raw_len={self.raw_len}, codec={self.codec.name!r}, shuffle={self.shuffle})"


class FrameHeader:
    """A validated frame header; every field has been checked against the buffer.

    ``stored``, ``offsets`` (absolute, in the frame) and ``checksums`` are lists of ints over
    all chunks; the chunk table itself starts at ``table_offset``.
    """

    __slots__ = (
        "kind",
        "flags",
        "dtype",
        "shape",
        "chunk_size",
        "segments",
        "stored",
        "offsets",
        "checksums",
        "table_offset",
        "header_len",
        "payload_offset",
        "payload_len",
    )

    @property
    def order(self):
        return "F" if self.flags & FLAG_FORTRAN else "C"

    @property
    def raw_type(self):
        return RAW_TYPES[self.flags >> RAW_TYPE_SHIFT]

    @property
    def raw_len(self):
        return sum(s.raw_len for s in self.segments)

    def chunk_raw_len(self, segment, index):
        """Raw bytes of chunk ``index`` (0-based within ``segment``)."""
        return min(self.chunk_size, segment.raw_len - index * self.chunk_size)


def as_frame_buffer(buffer):
    """Return ``buffer`` as a flat, contiguous, unsigned-byte memoryview.

    Raises
    ------
    FrameError
        If ``buffer`` does not support the buffer protocol or is not contiguous.
    """
    try:
        view = memoryview(buffer)
    except TypeError:
        raise FrameError(f"a frame must be a bytes-like object, not {type(buffer).__name__}") from None
    if not view.c_contiguous:
        raise FrameError("a frame buffer must be contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def pack_header(kind, flags, dtype_str, shape, chunk_size, segments, stored, checksums):
    """Return the header bytes, zero padding to the payload included.

    Parameters
    ----------
    segments : list of (raw_len, codec_id, shuffle)
    stored, checksums : sequences over all chunks, in segment order.
    """
    n_chunks = len(stored)
    payload_len = int(sum(stored))
    dtype_bytes = dtype_str.encode("ascii") if dtype_str else b""
    parts = [
        _FIXED.pack(MAGIC, VERSION, kind, flags, len(shape), dtype_bytes, chunk_size, len(segments), payload_len),
        struct.pack(f"<{len(shape)}Q", *shape),
    ]
    parts += [_SEGMENT.pack(raw_len, codec_id, shuffle, _NO_RESERVED) for raw_len, codec_id, shuffle in segments]
    parts += [_CHUNK.pack(int(length), int(checksum)) for length, checksum in zip(stored, checksums)]
    header = b"".join(parts)
    assert len(header) + _CHECKSUM.size == header_length(len(shape), len(segments), n_chunks)
    header += _CHECKSUM.pack(xxhash.xxh3_64_intdigest(header))
    return header + bytes(_align(len(header)) - len(header))


def _need(view, end, what):
    if end > len(view):
        raise FrameError(f"truncated frame: {what} needs {end} bytes, the buffer has {len(view)}")


def parse_header(buffer):
    """Parse and validate the header of the frame in ``buffer``.

    Checks, in order: lengths (nothing is read or allocated past the buffer), the header
    checksum, then every field's meaning (dtype whitelist, shape against raw length, codec
    ids, chunk sizes against the codec's largest possible ratio, payload length against the
    buffer).

    Returns
    -------
    FrameHeader

    Raises
    ------
    FrameError
        Naming the first field that is wrong. ``ChecksumError`` when the header checksum
        does not match.
    """
    view = as_frame_buffer(buffer)
    _need(view, _FIXED.size, "the fixed header")
    magic, version, kind, flags, ndim, dtype_bytes, chunk_size, n_segments, payload_len = _FIXED.unpack_from(view, 0)
    if magic != MAGIC:
        raise FrameError(f"not a tnfr_fastcache frame: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise FrameError(f"unsupported frame format version {version}; this library reads version {VERSION}")
    if ndim > MAX_NDIM:
        raise FrameError(f"frame ndim {ndim} exceeds the maximum {MAX_NDIM}")
    if not 1 <= n_segments <= len(view) // _SEGMENT.size:
        raise FrameError(f"frame claims {n_segments} segments, impossible in {len(view)} bytes")
    pos = _FIXED.size
    _need(view, pos + 8 * ndim + _SEGMENT.size * n_segments, "the shape and segment table")
    shape = struct.unpack_from(f"<{ndim}Q", view, pos)
    pos += 8 * ndim
    raw_segments = [_SEGMENT.unpack_from(view, pos + i * _SEGMENT.size) for i in range(n_segments)]
    pos += _SEGMENT.size * n_segments
    if chunk_size < MIN_CHUNK_SIZE or chunk_size > MAX_CHUNK_SIZE or chunk_size & (chunk_size - 1):
        raise FrameError(f"frame chunk size {chunk_size} is not a power of two in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")
    n_chunks = 0
    for raw_len, _, _, _ in raw_segments:
        n_chunks += chunk_count(raw_len, chunk_size)
        # Checked as it grows so a forged raw_len cannot make us sum or allocate huge tables.
        if n_chunks * _CHUNK.size > len(view):
            raise FrameError(f"truncated frame: segment lengths need more chunks than {len(view)} bytes can hold")
    header_len = header_length(ndim, n_segments, n_chunks)
    _need(view, header_len, "the chunk table")
    (checksum,) = _CHECKSUM.unpack_from(view, header_len - _CHECKSUM.size)
    if xxhash.xxh3_64_intdigest(view[: header_len - _CHECKSUM.size]) != checksum:
        raise ChecksumError("frame header checksum mismatch: the header is corrupt")
    table = list(_CHUNK.iter_unpack(view[pos : pos + _CHUNK.size * n_chunks]))

    header = FrameHeader()
    header.kind = kind
    header.flags = flags
    header.chunk_size = chunk_size
    header.header_len = header_len
    header.payload_offset = _align(header_len)
    header.payload_len = payload_len
    header.shape = tuple(shape)
    header.dtype = None
    _check_kind(header, dtype_bytes, n_segments)

    header.table_offset = pos
    header.stored = [entry[0] for entry in table]
    header.checksums = [entry[1] for entry in table]
    header.segments = []
    first = 0
    for index, (raw_len, codec_id, shuffle, reserved) in enumerate(raw_segments):
        if reserved != _NO_RESERVED:
            raise FrameError(f"segment {index}: reserved bytes are not zero")
        codec = get_codec(codec_id)
        if shuffle not in ALLOWED_SHUFFLES or (shuffle and raw_len % shuffle):
            raise FrameError(f"segment {index}: invalid shuffle element size {shuffle} for {raw_len} bytes")
        count = chunk_count(raw_len, chunk_size)
        segment = Segment(raw_len, codec, shuffle, first, count)
        _check_chunks(header, segment, index)
        header.segments.append(segment)
        first += count
    if kind == KIND_NDARRAY:
        _check_array(header)

    if sum(header.stored) != payload_len:
        raise FrameError(f"chunk lengths add up to {sum(header.stored)} bytes, the header says {payload_len}")
    if len(view) != header.payload_offset + payload_len:
        raise FrameError(
            f"frame is {len(view)} bytes, its header describes {header.payload_offset + payload_len}"
            + (" (truncated)" if len(view) < header.payload_offset + payload_len else " (trailing bytes)")
        )
    if any(view[header_len : header.payload_offset]):
        raise FrameError("padding before the payload is not zero")
    header.offsets = list(itertools.accumulate(header.stored[:-1], initial=header.payload_offset))[:n_chunks]
    return header


def _check_kind(header, dtype_bytes, n_segments):
    kind, flags = header.kind, header.flags
    if kind == KIND_NDARRAY:
        if flags & ~FLAG_FORTRAN:
            raise FrameError(f"ndarray frame has unknown flags 0x{flags:02x}")
        text = dtype_bytes.rstrip(b"\0")
        if b"\0" in text or text.decode("latin-1") not in ALLOWED_DTYPES:
            raise FrameError(f"frame dtype {bytes(dtype_bytes)!r} is not an allowed numeric or bool dtype")
        header.dtype = np.dtype(text.decode("ascii"))
        if n_segments != 1:
            raise FrameError(f"ndarray frame must have 1 segment, has {n_segments}")
        return
    if kind == KIND_BYTES:
        if flags & ~(0x3 << RAW_TYPE_SHIFT) or flags >> RAW_TYPE_SHIFT >= len(RAW_TYPES):
            raise FrameError(f"bytes frame has invalid flags 0x{flags:02x}")
        if n_segments != 1:
            raise FrameError(f"bytes frame must have 1 segment, has {n_segments}")
    elif kind == KIND_PICKLE:
        if flags:
            raise FrameError(f"pickle frame has unknown flags 0x{flags:02x}")
    else:
        raise FrameError(f"unknown frame kind {kind}")
    if header.shape or any(dtype_bytes):
        raise FrameError(f"{KIND_NAMES[kind]} frame must not carry a shape or dtype")


def _check_array(header):
    segment = header.segments[0]
    itemsize = header.dtype.itemsize
    if segment.shuffle not in (0, itemsize) or (segment.shuffle and itemsize == 1):
        raise FrameError(f"ndarray frame shuffle {segment.shuffle} does not match itemsize {itemsize}")
    if header.flags & FLAG_FORTRAN and len(header.shape) < 2:
        raise FrameError("Fortran order flag on an array of fewer than 2 dimensions")
    size = 1
    for dim in header.shape:
        size *= dim
    if size * itemsize != segment.raw_len:
        raise FrameError(
            f"shape {header.shape} of {header.dtype} needs {size * itemsize} bytes, the segment has {segment.raw_len}"
        )


def _check_chunks(header, segment, index):
    max_ratio = segment.codec.max_ratio
    for i in range(segment.n_chunks):
        stored = header.stored[segment.first_chunk + i]
        raw = header.chunk_raw_len(segment, i)
        if stored == raw:
            continue
        if stored == 0 or stored > raw:
            raise FrameError(f"segment {index} chunk {i}: stored length {stored} invalid for {raw} raw bytes")
        if segment.codec.codec_id == 0:
            raise FrameError(f"segment {index}: codec 'none' with a chunk shorter than its raw length")
        # A genuine chunk cannot beat the codec's best ratio; this bounds what a forged frame
        # can make us allocate.
        if raw > stored * max_ratio + 1024:
            raise FrameError(
                f"segment {index} chunk {i}: {raw} raw bytes from {stored} stored bytes "
                f"exceeds what {segment.codec.name} can produce"
            )


def _source_bytes(source):
    """Return a contiguous source as flat bytes, or None when it must be gathered."""
    if source.flags.c_contiguous:
        return source.reshape(-1).view(np.uint8)
    return None


def _chunk_of(source, flat, start, stop):
    if flat is not None:
        return flat[start:stop]
    itemsize = source.itemsize
    return np.ascontiguousarray(source.flat[start // itemsize : stop // itemsize]).view(np.uint8)


def _shuffle(chunk, size):
    return np.ascontiguousarray(chunk.reshape(-1, size).T).reshape(-1)


def _unshuffle_into(data, size, out):
    out.reshape(-1, size)[...] = np.frombuffer(data, np.uint8).reshape(size, -1).T


def lz4_sizes(sample, shuffle):
    """Return ``(plain, shuffled)``: LZ4 (acceleration 1) sizes of ``sample`` as it is and byte-shuffled.

    ``sample`` is a C-contiguous array of any dtype, taken as its bytes; ``shuffled`` is
    None when ``shuffle`` (the element size) is 0. ``dumps(compression="auto"/shuffle="auto")``
    decides from these.
    """
    sample = np.ascontiguousarray(sample).reshape(-1).view(np.uint8)
    plain = len(lz4.block.compress(sample, store_size=False))
    if not shuffle:
        return plain, None
    return plain, len(lz4.block.compress(_shuffle(sample, shuffle), store_size=False))


def encode(kind, flags, dtype_str, shape, sources, codecs, shuffles, level, chunk_size=DEFAULT_CHUNK_SIZE):
    """Return the frame of ``sources`` as a read-only memoryview over a fresh numpy buffer.

    Parameters
    ----------
    kind, flags, dtype_str, shape
        Header fields (docs/FORMAT.md); ``dtype_str`` and ``shape`` only for ndarrays.
    sources : list of ndarray
        One per segment, streamed in C order.
    codecs : list of Codec
    shuffles : list of int
        Shuffle element size per segment (0: none).
    level : list
        Per-segment codec level, already checked by ``Codec.check_level``.
    chunk_size : int
        Raw bytes per chunk, a power of two in [MIN_CHUNK_SIZE, MAX_CHUNK_SIZE].
    """
    # One-byte header fields: a value that does not fit must not make an unreadable frame.
    if not (0 <= kind <= 255 and 0 <= flags <= 255 and len(shape) <= MAX_NDIM):
        raise FrameError(f"cannot frame kind {kind} with flags {flags} and {len(shape)} dimensions")
    for source, shuffle in zip(sources, shuffles):
        # The decoder refuses these, and the compiled shuffle's SIMD path assumes them.
        if shuffle not in ALLOWED_SHUFFLES or shuffle and source.nbytes % shuffle:
            raise FrameError(
                f"cannot shuffle a {source.nbytes}-byte segment by {shuffle} bytes; "
                f"expected one of {ALLOWED_SHUFFLES} that divides it"
            )
    segments, chunks, stored, checksums = [], [], [], []
    for source, codec, shuffle, lvl in zip(sources, codecs, shuffles, level):
        raw_len = source.nbytes
        flat = _source_bytes(source)
        for start in range(0, raw_len, chunk_size):
            raw = _chunk_of(source, flat, start, min(start + chunk_size, raw_len))
            if shuffle:
                raw = _shuffle(raw, shuffle)
            data = raw if codec.codec_id == 0 else codec.compress(raw, lvl)
            if len(data) >= len(raw):
                data = raw
            chunks.append(data)
            stored.append(len(data))
            checksums.append(xxhash.xxh3_64_intdigest(data))
        segments.append((raw_len, codec.codec_id, shuffle))
    header = pack_header(kind, flags, dtype_str, shape, chunk_size, segments, stored, checksums)
    out = np.empty(len(header) + sum(stored), np.uint8)
    out[: len(header)] = np.frombuffer(header, np.uint8)
    pos = len(header)
    for data in chunks:
        out[pos : pos + len(data)] = np.frombuffer(data, np.uint8)
        pos += len(data)
    return memoryview(out).toreadonly()


def _chunk_data(view, header, chunk):
    offset = header.offsets[chunk]
    return view[offset : offset + header.stored[chunk]]


def _check_checksum(data, header, chunk, segment_index):
    if xxhash.xxh3_64_intdigest(data) != header.checksums[chunk]:
        raise ChecksumError(f"segment {segment_index} chunk {chunk}: checksum mismatch, the payload is corrupt")


def decode_segment(buffer, header, index, out, verify=True):
    """Decode segment ``index`` of the frame in ``buffer`` into ``out``.

    Parameters
    ----------
    buffer : bytes-like
        The whole frame, already parsed into ``header`` by ``parse_header``.
    out : ndarray of uint8
        Writeable, contiguous, exactly the segment's raw length.
    verify : bool
        Check each chunk's checksum before decoding it.
    """
    view = as_frame_buffer(buffer)
    segment = header.segments[index]
    if out.dtype != np.uint8 or out.ndim != 1 or out.size != segment.raw_len or not out.flags.c_contiguous:
        raise FrameError(f"output for segment {index} must be {segment.raw_len} contiguous bytes")
    for i in range(segment.n_chunks):
        chunk = segment.first_chunk + i
        data = _chunk_data(view, header, chunk)
        if verify:
            _check_checksum(data, header, chunk, index)
        start = i * header.chunk_size
        dst = out[start : start + header.chunk_raw_len(segment, i)]
        if segment.shuffle:
            if len(data) == len(dst):
                raw = data
            else:
                raw = np.empty(len(dst), np.uint8)
                segment.codec.decompress_into(data, raw)
            _unshuffle_into(raw, segment.shuffle, dst)
        elif len(data) == len(dst):
            dst[:] = np.frombuffer(data, np.uint8)
        else:
            segment.codec.decompress_into(data, dst)


def verify_chunks(buffer, header):
    """Check every chunk checksum of the parsed frame in ``buffer``.

    Raises
    ------
    ChecksumError
        Naming the first chunk whose checksum does not match.
    """
    view = as_frame_buffer(buffer)
    for index, segment in enumerate(header.segments):
        for chunk in range(segment.first_chunk, segment.first_chunk + segment.n_chunks):
            _check_checksum(_chunk_data(view, header, chunk), header, chunk, index)
