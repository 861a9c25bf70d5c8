# cython: language_level=3, embedsignature=True
"""Frames in C: the chunk loops of ``tnfr_fastcache._pure._frame`` with the GIL released.

Byte shuffle, LZ4 (vendored lz4 1.9.4: the bytes python-lz4 4.4.5 writes) and xxh3_64 run
in C, straight between the array's memory and the frame buffer: no intermediate ``bytes``.
gzip and zstd chunks go through ``tnfr_fastcache.codecs`` (zlib and zstandard release the
GIL themselves). The header is packed and parsed here too, in C, for the per-call cost of small values:
``parse_header`` makes the same checks in the same order as the pure twin and raises the
same exceptions with the same messages (tests/test_frame_fuzz.py compares them), reading
every field through bounds-checked little-endian loads.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcpy, memmove, memset

import os
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from ._pure._frame import (
    ALLOWED_DTYPES,
    ALLOWED_SHUFFLES,
    DEFAULT_CHUNK_SIZE,
    KIND_BYTES,
    KIND_NAMES,
    KIND_NDARRAY,
    KIND_PICKLE,
    MAGIC,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    VERSION,
    FLAG_FORTRAN,
    MAX_NDIM,
    PAYLOAD_ALIGNMENT,
    RAW_TYPE_SHIFT,
    RAW_TYPES,
    FrameHeader,
    Segment,
    as_frame_buffer,
    pack_header,
)
from .codecs import get_codec
from .errors import ChecksumError, FrameError

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

cdef extern from "lz4.h":
    ctypedef struct LZ4_stream_t:
        pass
    LZ4_stream_t* LZ4_initStream(void* buffer, size_t size) nogil
    int LZ4_compress_fast_continue(LZ4_stream_t* stream, const char* src, char* dst, int src_size, int dst_capacity,
                                   int acceleration) nogil
    int LZ4_decompress_safe(const char* src, char* dst, int compressed_size, int dst_capacity) nogil
    int LZ4_compressBound(int input_size) nogil

cdef extern from *:
    """
    #define XXH_INLINE_ALL
    #include "xxhash.h"

    /* Byte shuffle: element i's byte j goes to stream j at position i (blosc's layout).
       Blocks of TNFR_BLOCK elements are transposed into a small buffer that stays in L1,
       then each byte stream is copied out in one run: scattering straight into the streams
       (power-of-two distances apart, all in one cache set) is 2-3x slower. With SSE2 (every
       x86-64), 16 elements at a time: `size` registers of 16 bytes; four rounds of
       interleaving register k with register k + size/2 transpose them, log2(size) rounds
       undo it (checked by simulation for sizes 2, 4, 8, 16). Elsewhere, a byte loop. */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline void tnfr_interleave(__m128i *r, size_t size) {
        __m128i t[16];
        size_t k, h = size / 2;
        for (k = 0; k < h; k++) {
            t[2 * k] = _mm_unpacklo_epi8(r[k], r[k + h]);
            t[2 * k + 1] = _mm_unpackhi_epi8(r[k], r[k + h]);
        }
        for (k = 0; k < size; k++) r[k] = t[k];
    }
    #endif

    #define TNFR_BLOCK 512

    static inline size_t tnfr_shuffle_block(const uint8_t *s, uint8_t *tmp, size_t m, size_t size) {
        size_t k = 0;
    #if defined(__SSE2__)
        __m128i r[16];
        size_t j, round;
        for (; k + 16 <= m; k += 16) {
            for (j = 0; j < size; j++) r[j] = _mm_loadu_si128((const __m128i *)(s + k * size + 16 * j));
            for (round = 0; round < 4; round++) tnfr_interleave(r, size);
            for (j = 0; j < size; j++) _mm_storeu_si128((__m128i *)(tmp + j * TNFR_BLOCK + k), r[j]);
        }
    #endif
        return k;
    }

    static inline size_t tnfr_unshuffle_block(const uint8_t *tmp, uint8_t *d, size_t m, size_t size) {
        size_t k = 0;
    #if defined(__SSE2__)
        __m128i r[16];
        size_t j, round, rounds = size == 2 ? 1 : size == 4 ? 2 : size == 8 ? 3 : 4;
        for (; k + 16 <= m; k += 16) {
            for (j = 0; j < size; j++) r[j] = _mm_loadu_si128((const __m128i *)(tmp + j * TNFR_BLOCK + k));
            for (round = 0; round < rounds; round++) tnfr_interleave(r, size);
            for (j = 0; j < size; j++) _mm_storeu_si128((__m128i *)(d + k * size + 16 * j), r[j]);
        }
    #endif
        return k;
    }

    static void tnfr_shuffle(const uint8_t *src, uint8_t *dst, size_t nbytes, size_t size) {
        uint8_t tmp[16 * TNFR_BLOCK];
        size_t n = nbytes / size, i0, m, k, j;
        for (i0 = 0; i0 < n; i0 += TNFR_BLOCK) {
            const uint8_t *s = src + i0 * size;
            m = n - i0 < TNFR_BLOCK ? n - i0 : TNFR_BLOCK;
            switch (size) {  /* constant sizes let the compiler unroll the register loops */
                case 2: k = tnfr_shuffle_block(s, tmp, m, 2); break;
                case 4: k = tnfr_shuffle_block(s, tmp, m, 4); break;
                case 8: k = tnfr_shuffle_block(s, tmp, m, 8); break;
                default: k = tnfr_shuffle_block(s, tmp, m, 16); break;
            }
            for (; k < m; k++)
                for (j = 0; j < size; j++) tmp[j * TNFR_BLOCK + k] = s[k * size + j];
            for (j = 0; j < size; j++) memcpy(dst + j * n + i0, tmp + j * TNFR_BLOCK, m);
        }
    }

    static void tnfr_unshuffle(const uint8_t *src, uint8_t *dst, size_t nbytes, size_t size) {
        uint8_t tmp[16 * TNFR_BLOCK];
        size_t n = nbytes / size, i0, m, k, j;
        for (i0 = 0; i0 < n; i0 += TNFR_BLOCK) {
            uint8_t *d = dst + i0 * size;
            m = n - i0 < TNFR_BLOCK ? n - i0 : TNFR_BLOCK;
            for (j = 0; j < size; j++) memcpy(tmp + j * TNFR_BLOCK, src + j * n + i0, m);
            switch (size) {
                case 2: k = tnfr_unshuffle_block(tmp, d, m, 2); break;
                case 4: k = tnfr_unshuffle_block(tmp, d, m, 4); break;
                case 8: k = tnfr_unshuffle_block(tmp, d, m, 8); break;
                default: k = tnfr_unshuffle_block(tmp, d, m, 16); break;
            }
            for (; k < m; k++)
                for (j = 0; j < size; j++) d[k * size + j] = tmp[j * TNFR_BLOCK + k];
        }
    }
    """
    uint64_t XXH3_64bits(const void* data, size_t length) nogil
    void tnfr_shuffle(const uint8_t* src, uint8_t* dst, size_t nbytes, size_t size) nogil
    void tnfr_unshuffle(const uint8_t* src, uint8_t* dst, size_t nbytes, size_t size) nogil

cdef enum:
    CODEC_NONE = 0
    CODEC_LZ4 = 1

cdef enum DecodeError:
    DECODE_OK = 0
    DECODE_CHECKSUM = 1
    DECODE_CORRUPT = 2
    DECODE_OUT_OF_BOUNDS = 3


# Chunks are independent, so a large segment is cut into one contiguous run of chunks per
# thread; each run is a job the C loops below execute with the GIL released.
cdef struct EncodeJob:
    const uint8_t* src          # the segment's raw bytes
    Py_ssize_t start            # first byte of this run (a chunk boundary)
    Py_ssize_t stop             # end of this run
    Py_ssize_t chunk_size
    int shuffle
    int codec_id
    int acceleration
    uint8_t* scratch            # chunk_size bytes of this job's own
    uint8_t* dst                # where this run's stored chunks go, back to back
    int64_t* stored             # this run's entries of the chunk table
    uint64_t* checksums
    Py_ssize_t written          # out: bytes written at dst

cdef struct DecodeJob:
    const uint8_t* frame
    Py_ssize_t frame_len
    uint8_t* dst                # the segment's output
    Py_ssize_t raw_len
    Py_ssize_t chunk_size
    const uint8_t* table        # the segment's first chunk table entry, in the frame
    Py_ssize_t lo               # chunks [lo, hi) of the segment
    Py_ssize_t hi
    Py_ssize_t data_offset      # where chunk lo's stored bytes start in the frame
    int shuffle
    int codec_id
    bint verify
    uint8_t* scratch
    int error                   # out: DecodeError
    Py_ssize_t error_chunk      # out: the failing chunk, within the segment

cdef enum:
    CHUNK_ENTRY = 12            # bytes per chunk table entry: u32 stored length, u64 xxh3_64


cdef inline uint32_t _le32(const uint8_t* p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t _le64(const uint8_t* p) noexcept nogil:
    return _le32(p) | (<uint64_t>_le32(p + 4) << 32)


cdef inline void _put32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = (v >> 24) & 0xFF


cdef inline void _put64(uint8_t* p, uint64_t v) noexcept nogil:
    _put32(p, <uint32_t>(v & 0xFFFFFFFFu))
    _put32(p + 4, <uint32_t>(v >> 32))


# Byte sizes of docs/FORMAT.md's header parts (the pure twin's struct formats).
cdef enum:
    FIXED_SIZE = 32             # <4sBBBB8sIIQ
    SEGMENT_SIZE = 16           # <QBB6s
    CHECKSUM_SIZE = 8

# The dtype field as stored (ASCII, NUL padded to 8 bytes) -> its dtype: one dict lookup
# replaces the whitelist check and np.dtype() on every parse. A field is allowed exactly when
# it is one of these keys (allowed strings are short and NUL-free).
_DTYPE_FIELDS = {name.encode("ascii").ljust(8, b"\0"): np.dtype(name) for name in ALLOWED_DTYPES}
_NO_DTYPE = bytes(8)


def header_length(ndim, n_segments, n_chunks):
    """Bytes of the header (fixed part, shape, segment and chunk tables, checksum)."""
    return FIXED_SIZE + 8 * ndim + SEGMENT_SIZE * n_segments + CHUNK_ENTRY * n_chunks + CHECKSUM_SIZE


cdef inline Py_ssize_t _align(Py_ssize_t n) noexcept:
    return (n + PAYLOAD_ALIGNMENT - 1) // PAYLOAD_ALIGNMENT * PAYLOAD_ALIGNMENT


cdef int _get_frame(buffer, Py_buffer* view) except -1:
    """Acquire the frame's bytes into ``view`` (release with PyBuffer_Release); as_frame_buffer's checks and errors."""
    # bytes is the common case (Redis, disk reads): no memoryview, no typed-memoryview setup.
    if type(buffer) is not bytes:
        buffer = as_frame_buffer(buffer)
    PyObject_GetBuffer(buffer, view, PyBUF_SIMPLE)
    return 0


cdef inline _need(Py_ssize_t end, Py_ssize_t size, str what):
    if end > size:
        raise FrameError(f"truncated frame: {what} needs {end} bytes, the buffer has {size}")


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
def parse_header(buffer):
    """Parse and validate the header of the frame in ``buffer``.

    Same checks, order, result and exceptions as ``tnfr_fastcache._pure._frame.parse_header``.

    Returns
    -------
    FrameHeader

    Raises
    ------
    FrameError
        Naming the first field that is wrong. ``ChecksumError`` when the header checksum
        does not match.
    """
    cdef Py_buffer view
    _get_frame(buffer, &view)
    try:
        return _parse_header(<const uint8_t*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef _parse_header(const uint8_t* p, Py_ssize_t size):
    cdef Py_ssize_t pos, i, index, first, count, header_len, payload_offset
    cdef const uint8_t* seg
    cdef const uint8_t* table
    cdef uint32_t chunk_size, n_segments, stored, version, kind, flags, ndim, shuffle
    cdef uint64_t payload_len, raw_len, n_chunks = 0, total = 0, raw, max_ratio, itemsize, elements
    cdef int codec_id
    cdef bint overflow

    _need(FIXED_SIZE, size, "the fixed header")
    if p[0] != 0x89 or p[1] != 0x54 or p[2] != 0x46 or p[3] != 0x43:
        raise FrameError(f"not a tnfr_fastcache frame: magic {bytes(p[:4])!r}, expected {MAGIC!r}")
    version, kind, flags, ndim = p[4], p[5], p[6], p[7]
    chunk_size, n_segments, payload_len = _le32(p + 16), _le32(p + 20), _le64(p + 24)
    if version != VERSION:
        raise FrameError(f"unsupported frame format version {version}; this library reads version {VERSION}")
    if ndim > MAX_NDIM:
        raise FrameError(f"frame ndim {ndim} exceeds the maximum {MAX_NDIM}")
    if not 1 <= n_segments <= size // SEGMENT_SIZE:
        raise FrameError(f"frame claims {n_segments} segments, impossible in {size} bytes")
    pos = FIXED_SIZE
    # In Py_ssize_t: SEGMENT_SIZE * n_segments in uint32_t wraps for frames of 4 GiB or more.
    _need(pos + 8 * ndim + SEGMENT_SIZE * <Py_ssize_t>n_segments, size, "the shape and segment table")
    shape = tuple([_le64(p + pos + 8 * i) for i in range(ndim)])
    pos += 8 * ndim
    seg = p + pos
    pos += SEGMENT_SIZE * <Py_ssize_t>n_segments
    if chunk_size < MIN_CHUNK_SIZE or chunk_size > MAX_CHUNK_SIZE or chunk_size & (chunk_size - 1):
        raise FrameError(f"frame chunk size {chunk_size} is not a power of two in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")
    for i in range(n_segments):
        raw_len = _le64(seg + SEGMENT_SIZE * i)
        # Before the add n_chunks <= size / 12 and one segment adds < 2**52: no overflow.
        n_chunks += raw_len // chunk_size + (raw_len % chunk_size != 0)
        # Checked as it grows so a forged raw_len cannot make us sum or allocate huge tables.
        if n_chunks * CHUNK_ENTRY > <uint64_t>size:
            raise FrameError(f"truncated frame: segment lengths need more chunks than {size} bytes can hold")
    header_len = FIXED_SIZE + 8 * ndim + SEGMENT_SIZE * <Py_ssize_t>n_segments + CHUNK_ENTRY * n_chunks + CHECKSUM_SIZE
    _need(header_len, size, "the chunk table")
    if XXH3_64bits(p, header_len - CHECKSUM_SIZE) != _le64(p + header_len - CHECKSUM_SIZE):
        raise ChecksumError("frame header checksum mismatch: the header is corrupt")
    table = p + pos
    payload_offset = _align(header_len)

    header = FrameHeader()
    header.kind = kind
    header.flags = flags
    header.chunk_size = chunk_size
    header.header_len = header_len
    header.payload_offset = payload_offset
    header.payload_len = payload_len
    header.shape = shape
    header.dtype = None
    dtype_field = bytes(p[8:16])
    if kind == KIND_NDARRAY:
        if flags & ~FLAG_FORTRAN:
            raise FrameError(f"ndarray frame has unknown flags 0x{flags:02x}")
        dtype = _DTYPE_FIELDS.get(dtype_field)
        if dtype is None:
            raise FrameError(f"frame dtype {dtype_field!r} is not an allowed numeric or bool dtype")
        header.dtype = dtype
        if n_segments != 1:
            raise FrameError(f"ndarray frame must have 1 segment, has {n_segments}")
    else:
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
        if ndim or dtype_field != _NO_DTYPE:
            raise FrameError(f"{KIND_NAMES[kind]} frame must not carry a shape or dtype")

    header.table_offset = pos
    header.stored = [_le32(table + CHUNK_ENTRY * i) for i in range(<Py_ssize_t>n_chunks)]
    header.checksums = [_le64(table + CHUNK_ENTRY * i + 4) for i in range(<Py_ssize_t>n_chunks)]
    segments = []
    first = 0
    for index in range(n_segments):
        raw_len = _le64(seg + SEGMENT_SIZE * index)
        codec_id, shuffle = seg[SEGMENT_SIZE * index + 8], seg[SEGMENT_SIZE * index + 9]
        if _le32(seg + SEGMENT_SIZE * index + 10) or seg[SEGMENT_SIZE * index + 14] or seg[SEGMENT_SIZE * index + 15]:
            raise FrameError(f"segment {index}: reserved bytes are not zero")
        codec = get_codec(codec_id)
        if not (shuffle == 0 or shuffle == 2 or shuffle == 4 or shuffle == 8 or shuffle == 16) or (
                shuffle and raw_len % shuffle):
            raise FrameError(f"segment {index}: invalid shuffle element size {shuffle} for {raw_len} bytes")
        count = raw_len // chunk_size + (raw_len % chunk_size != 0)
        max_ratio = codec.max_ratio
        for i in range(count):
            stored = _le32(table + CHUNK_ENTRY * (first + i))
            raw = min(<uint64_t>chunk_size, raw_len - <uint64_t>i * chunk_size)
            if stored == raw:
                continue
            if stored == 0 or stored > raw:
                raise FrameError(f"segment {index} chunk {i}: stored length {stored} invalid for {raw} raw bytes")
            if codec_id == 0:
                raise FrameError(f"segment {index}: codec 'none' with a chunk shorter than its raw length")
            # A genuine chunk cannot beat the codec's best ratio; this bounds what a forged
            # frame can make us allocate (stored < 2**26, so no overflow).
            if raw > stored * max_ratio + 1024:
                raise FrameError(
                    f"segment {index} chunk {i}: {raw} raw bytes from {stored} stored bytes "
                    f"exceeds what {codec.name} can produce"
                )
        segments.append(Segment(raw_len, codec, shuffle, first, count))
        first += count
    header.segments = segments
    if kind == KIND_NDARRAY:
        raw_len = _le64(seg)
        shuffle = seg[9]
        itemsize = dtype.itemsize
        if not (shuffle == 0 or shuffle == itemsize) or (shuffle and itemsize == 1):
            raise FrameError(f"ndarray frame shuffle {shuffle} does not match itemsize {itemsize}")
        if flags & FLAG_FORTRAN and ndim < 2:
            raise FrameError("Fortran order flag on an array of fewer than 2 dimensions")
        elements = 1
        overflow = False
        for i in range(ndim):
            raw = _le64(p + FIXED_SIZE + 8 * i)
            if raw == 0:
                elements, overflow = 0, False
                break
            if not overflow and elements > 0xFFFFFFFFFFFFFFFFu // raw:
                overflow = True
            elements *= raw
        if overflow or elements > 0xFFFFFFFFFFFFFFFFu // itemsize or elements * itemsize != raw_len:
            needed = 1
            for dim in shape:
                needed *= dim
            raise FrameError(f"shape {shape} of {dtype} needs {needed * itemsize} bytes, the segment has {raw_len}")

    for i in range(<Py_ssize_t>n_chunks):
        total += _le32(table + CHUNK_ENTRY * i)
    if total != payload_len:
        raise FrameError(f"chunk lengths add up to {total} bytes, the header says {payload_len}")
    if <uint64_t>size != payload_offset + payload_len:
        raise FrameError(
            f"frame is {size} bytes, its header describes {payload_offset + payload_len}"
            + (" (truncated)" if <uint64_t>size < payload_offset + payload_len else " (trailing bytes)")
        )
    for i in range(header_len, payload_offset):
        if p[i]:
            raise FrameError("padding before the payload is not zero")
    offsets = []
    total = payload_offset
    for i in range(<Py_ssize_t>n_chunks):
        offsets.append(total)
        total += _le32(table + CHUNK_ENTRY * i)
    header.offsets = offsets
    return header


# Threads per large segment (this process's share of the cores; TNFR_FASTCACHE_THREADS
# overrides, 1 turns threading off). Segments below THREAD_MIN_BYTES stay on the caller's
# thread: handing work to a pool costs tens of microseconds.
threads = max(1, int(os.environ.get("TNFR_FASTCACHE_THREADS") or 0) or min(4, os.cpu_count() or 1))
THREAD_MIN_BYTES = 2 << 20
_pool = None
_pool_pid = None


def _executor():
    global _pool, _pool_pid
    # A forked child inherits the pool object but not its threads: start a new one.
    if _pool is None or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(max_workers=max(1, threads - 1), thread_name_prefix="tnfr_fastcache_frame")
        _pool_pid = os.getpid()
    return _pool


def _run_jobs(runner, addresses):
    """Run ``runner(address)`` for every job, the first on this thread, and wait for all."""
    futures = []
    interrupted = None
    try:
        for address in addresses[1:]:
            try:
                futures.append(_executor().submit(runner, address))
            except RuntimeError:
                # The pool is shut down (interpreter exit): do the work here.
                runner(address)
        runner(addresses[0])
    finally:
        # Never return, not even on Ctrl-C, while a worker may still write into the caller's
        # buffers: they would be freed under it.
        for future in futures:
            while not future.done():
                try:
                    wait([future])
                except BaseException as exc:
                    interrupted = exc
    if interrupted is not None:
        raise interrupted
    for future in futures:
        future.result()


cdef int _alloc_scratch(uint8_t** scratch, int shuffle, Py_ssize_t n) except -1:
    """Point ``*scratch`` at ``n`` bytes of the C heap when ``shuffle`` needs them, else at NULL (PyMem_Free either)."""
    scratch[0] = NULL
    if shuffle:
        scratch[0] = <uint8_t*>PyMem_Malloc(n)
        if scratch[0] == NULL:
            raise MemoryError()
    return 0


cdef Py_ssize_t _jobs_for(Py_ssize_t raw_len, Py_ssize_t chunk_size) except -1:
    cdef Py_ssize_t count = -(-raw_len // chunk_size)
    # Tested first, so a small segment never reads the module globals.
    if count < 2 or raw_len < THREAD_MIN_BYTES or threads < 2:
        return 1
    return min(threads, count)


# Below this a segment is coded without releasing the GIL: the release costs more than it
# lets other threads gain.
cdef enum:
    NOGIL_MIN_BYTES = 65536



@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t _store_chunk(const uint8_t* src, Py_ssize_t n, int shuffle, int codec_id, int acceleration,
                             uint8_t* scratch, uint8_t* dst) noexcept nogil:
    """Shuffle, compress and copy one chunk to ``dst`` (room for LZ4_compressBound(n)); return its stored length."""
    cdef const uint8_t* raw = src
    cdef int compressed
    cdef LZ4_stream_t stream
    if shuffle:
        tnfr_shuffle(src, scratch, n, shuffle)
        raw = scratch
    if codec_id == CODEC_LZ4:
        # A fresh stream and _continue, exactly what python-lz4's lz4.block.compress calls: the
        # one-shot LZ4_compress_fast picks another hash table below 64 KiB and other bytes.
        LZ4_initStream(&stream, sizeof(stream))
        compressed = LZ4_compress_fast_continue(&stream, <const char*>raw, <char*>dst, <int>n,
                                                LZ4_compressBound(<int>n), acceleration)
        # Incompressible chunks are stored raw, exactly like the pure twin's rule.
        if 0 < compressed < n:
            return compressed
    memcpy(dst, raw, n)
    return n


cdef void _encode_run(EncodeJob* job) noexcept nogil:
    cdef Py_ssize_t start = job.start, n, pos = 0, c = 0
    while start < job.stop:
        n = min(job.chunk_size, job.stop - start)
        job.stored[c] = _store_chunk(job.src + start, n, job.shuffle, job.codec_id, job.acceleration, job.scratch,
                                     job.dst + pos)
        job.checksums[c] = XXH3_64bits(job.dst + pos, job.stored[c])
        pos += job.stored[c]
        start += n
        c += 1
    job.written = pos


def _encode_in_thread(uintptr_t job):
    with nogil:
        _encode_run(<EncodeJob*>job)


cdef Py_ssize_t _encode_segment(const uint8_t* src, Py_ssize_t raw_len, Py_ssize_t chunk_size, int shuffle,
                                int codec_id, int acceleration, uint8_t* dst, int64_t* stored,
                                uint64_t* checksums) except -1:
    """Store a contiguous none/lz4 segment at ``dst``; return the bytes written."""
    cdef Py_ssize_t n_jobs = _jobs_for(raw_len, chunk_size), per, t, written
    cdef Py_ssize_t count = -(-raw_len // chunk_size)
    cdef uint8_t[:, ::1] scratch
    cdef EncodeJob job
    if n_jobs == 1:
        # Small segments: no job array, no pool, no list, scratch from the C heap.
        job.src, job.start, job.stop, job.chunk_size = src, 0, raw_len, chunk_size
        job.shuffle, job.codec_id, job.acceleration = shuffle, codec_id, acceleration
        job.dst, job.stored, job.checksums, job.written = dst, stored, checksums, 0
        _alloc_scratch(&job.scratch, shuffle, min(chunk_size, raw_len))
        try:
            if raw_len >= NOGIL_MIN_BYTES:
                with nogil:
                    _encode_run(&job)
            else:
                _encode_run(&job)
        finally:
            PyMem_Free(job.scratch)
        return job.written
    cdef EncodeJob* jobs = <EncodeJob*>PyMem_Malloc(n_jobs * sizeof(EncodeJob))
    if jobs == NULL:
        raise MemoryError()
    try:
        if shuffle:
            scratch = np.empty((n_jobs, min(chunk_size, raw_len)), np.uint8)
        per = -(-count // n_jobs)
        for t in range(n_jobs):
            jobs[t].src = src
            jobs[t].start = min(t * per * chunk_size, raw_len)
            jobs[t].stop = min((t + 1) * per * chunk_size, raw_len)
            jobs[t].chunk_size = chunk_size
            jobs[t].shuffle = shuffle
            jobs[t].codec_id = codec_id
            jobs[t].acceleration = acceleration
            jobs[t].scratch = &scratch[t, 0] if shuffle else NULL
            # Each run writes where the worst case of the runs before it ends, then the runs
            # are moved together below.
            jobs[t].dst = dst + t * per * _chunk_bound(codec_id, chunk_size)
            jobs[t].stored = stored + t * per
            jobs[t].checksums = checksums + t * per
            jobs[t].written = 0
        _run_jobs(_encode_in_thread, [<uintptr_t>&jobs[t] for t in range(n_jobs)])
        written = jobs[0].written
        for t in range(1, n_jobs):
            memmove(dst + written, jobs[t].dst, jobs[t].written)
            written += jobs[t].written
        return written
    finally:
        PyMem_Free(jobs)


def _contiguous_bytes(source):
    if source.flags.c_contiguous:
        return source.reshape(-1).view(np.uint8)
    return None


def _chunk_of(source, flat, Py_ssize_t start, Py_ssize_t stop):
    if flat is not None:
        return flat[start:stop]
    itemsize = source.itemsize
    return np.ascontiguousarray(source.flat[start // itemsize : stop // itemsize]).view(np.uint8)


cdef inline Py_ssize_t _chunk_bound(int codec_id, Py_ssize_t n) noexcept:
    """Room a stored chunk of ``n`` raw bytes may need while it is written."""
    return LZ4_compressBound(<int>n) if codec_id == CODEC_LZ4 else n


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t _write_header(uint8_t* out, Py_ssize_t header_len, Py_ssize_t payload_offset, int kind, int flags,
                              bytes dtype_field, shape, uint32_t chunk_size, Py_ssize_t n_segments,
                              uint64_t payload_len, const int64_t* stored, const uint64_t* checksums,
                              Py_ssize_t n_chunks) except -1:
    """Write the fixed header, shape, chunk table, checksum and padding (the segment table is already in place).

    The bytes of the pure twin's ``pack_header`` for the same fields.
    """
    cdef Py_ssize_t i, pos
    cdef bytes magic = MAGIC
    memcpy(out, <const char*>magic, 4)
    out[4], out[5], out[6], out[7] = VERSION, kind, flags, len(shape)
    memcpy(out + 8, <const char*>dtype_field, 8)
    _put32(out + 16, chunk_size)
    _put32(out + 20, <uint32_t>n_segments)
    _put64(out + 24, payload_len)
    pos = FIXED_SIZE
    for dim in shape:
        _put64(out + pos, <uint64_t>dim)
        pos += 8
    pos += SEGMENT_SIZE * n_segments
    for i in range(n_chunks):
        _put32(out + pos, <uint32_t>stored[i])
        _put64(out + pos + 4, checksums[i])
        pos += CHUNK_ENTRY
    if pos + CHECKSUM_SIZE != header_len:
        raise AssertionError("header length differs from the space reserved for it")
    _put64(out + pos, XXH3_64bits(out, pos))
    for i in range(header_len, payload_offset):
        out[i] = 0
    return 0


cdef Py_ssize_t _lz4_size(const uint8_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil:
    cdef LZ4_stream_t stream
    # The calls and bytes of python-lz4's lz4.block.compress (see _store_chunk).
    LZ4_initStream(&stream, sizeof(stream))
    return LZ4_compress_fast_continue(&stream, <const char*>src, <char*>dst, <int>n, LZ4_compressBound(<int>n), 1)


def lz4_sizes(sample, int shuffle):
    """Return ``(plain, shuffled)``: LZ4 (acceleration 1) sizes of ``sample`` as it is and byte-shuffled.

    Same contract and numbers as ``tnfr_fastcache._pure._frame.lz4_sizes`` (``sample`` a
    C-contiguous array of any dtype, read as its bytes), without the intermediate ``bytes``
    and numpy transposes.
    """
    cdef Py_buffer view
    cdef uint8_t* work = NULL
    cdef Py_ssize_t n, plain, shuffled = -1
    if shuffle not in ALLOWED_SHUFFLES:
        raise ValueError(f"shuffle must be one of {ALLOWED_SHUFFLES}, not {shuffle}")
    PyObject_GetBuffer(sample, &view, PyBUF_SIMPLE)
    try:
        n = view.len
        # python-lz4 refuses what LZ4 cannot take; samples are 64 KiB.
        if n > MAX_CHUNK_SIZE:
            raise ValueError(f"an LZ4 size sample is at most {MAX_CHUNK_SIZE} bytes, not {n}")
        if shuffle and n % shuffle:
            raise ValueError(f"cannot shuffle {n} bytes in elements of {shuffle}")
        work = <uint8_t*>PyMem_Malloc(LZ4_compressBound(<int>n) + (n if shuffle else 0) + 1)
        if work == NULL:
            raise MemoryError()
        plain = _lz4_size(<const uint8_t*>view.buf, n, work)
        if shuffle:
            tnfr_shuffle(<const uint8_t*>view.buf, work + LZ4_compressBound(<int>n), n, shuffle)
            shuffled = _lz4_size(work + LZ4_compressBound(<int>n), n, work)
    finally:
        PyMem_Free(work)
        PyBuffer_Release(&view)
    return plain, (shuffled if shuffle else None)


@cython.boundscheck(False)
@cython.wraparound(False)
def encode(kind, flags, dtype_str, shape, sources, codecs, shuffles, levels, Py_ssize_t chunk_size=DEFAULT_CHUNK_SIZE):
    """Return the frame of ``sources`` as a read-only memoryview over a fresh numpy buffer.

    Same parameters and bytes as ``tnfr_fastcache._pure._frame.encode``.
    """
    cdef Py_ssize_t n_chunks = 0, capacity = 0, pos, start, n, raw_len, c, full, rest, index, n_segments
    cdef Py_ssize_t largest = 0, header_len, payload_offset, seg_pos
    cdef int shuffle, codec_id
    cdef uint64_t payload_len = 0
    cdef uint8_t[::1] scratch_view
    cdef const uint8_t[::1] src_view
    cdef Py_buffer out_buffer, src_buffer
    cdef uint8_t* out_ptr
    cdef uint8_t* scratch_ptr = NULL
    cdef int64_t* stored = NULL
    cdef uint64_t* checksums = NULL

    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE or chunk_size & (chunk_size - 1):
        raise FrameError(f"chunk size {chunk_size} is not a power of two in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")
    # One-byte header fields: a value that does not fit must not be written truncated.
    if not (0 <= kind <= 255 and 0 <= flags <= 255 and len(shape) <= MAX_NDIM):
        raise FrameError(f"cannot frame kind {kind} with flags {flags} and {len(shape)} dimensions")
    for source, shuffle in zip(sources, shuffles):
        # The decoder refuses these, and the compiled shuffle's SIMD path assumes them.
        if shuffle not in ALLOWED_SHUFFLES or shuffle and source.nbytes % shuffle:
            raise FrameError(
                f"cannot shuffle a {source.nbytes}-byte segment by {shuffle} bytes; "
                f"expected one of {ALLOWED_SHUFFLES} that divides it"
            )
    dtype_field = (dtype_str.encode("ascii") if dtype_str else b"")[:8].ljust(8, b"\0")
    n_segments = len(sources)
    for source, codec in zip(sources, codecs):
        raw_len = source.nbytes
        codec_id = codec.codec_id
        full, rest = raw_len // chunk_size, raw_len % chunk_size
        n_chunks += full + (rest != 0)
        largest = max(largest, min(raw_len, chunk_size))
        capacity += full * _chunk_bound(codec_id, chunk_size) + (_chunk_bound(codec_id, rest) if rest else 0)
    header_len = FIXED_SIZE + 8 * len(shape) + SEGMENT_SIZE * n_segments + CHUNK_ENTRY * n_chunks + CHECKSUM_SIZE
    payload_offset = _align(header_len)
    out = np.empty(payload_offset + capacity, np.uint8)
    PyObject_GetBuffer(out, &out_buffer, PyBUF_WRITABLE)
    out_ptr = <uint8_t*>out_buffer.buf
    stored = <int64_t*>PyMem_Malloc(max(n_chunks, 1) * sizeof(int64_t))
    checksums = <uint64_t*>PyMem_Malloc(max(n_chunks, 1) * sizeof(uint64_t))
    try:
        if stored == NULL or checksums == NULL:
            raise MemoryError()
        pos = payload_offset
        c = 0
        seg_pos = FIXED_SIZE + 8 * len(shape)
        for index in range(n_segments):
            source, codec, shuffle, level = sources[index], codecs[index], shuffles[index], levels[index]
            raw_len = source.nbytes
            codec_id = codec.codec_id
            _put64(out_ptr + seg_pos, <uint64_t>raw_len)
            out_ptr[seg_pos + 8], out_ptr[seg_pos + 9] = codec_id, shuffle
            memset(out_ptr + seg_pos + 10, 0, 6)
            seg_pos += SEGMENT_SIZE
            if not raw_len:
                continue
            if (codec_id == CODEC_NONE or codec_id == CODEC_LZ4) and source.flags.c_contiguous:
                # Straight from the array's memory (numpy exports C-contiguous arrays as flat bytes).
                PyObject_GetBuffer(source, &src_buffer, PyBUF_SIMPLE)
                try:
                    if src_buffer.len != raw_len:
                        raise FrameError(f"segment {index} source exports {src_buffer.len} bytes, not {raw_len}")
                    pos += _encode_segment(<const uint8_t*>src_buffer.buf, raw_len, chunk_size, shuffle, codec_id,
                                           level if codec_id == CODEC_LZ4 else 1, out_ptr + pos, stored + c,
                                           checksums + c)
                finally:
                    PyBuffer_Release(&src_buffer)
                c += -(-raw_len // chunk_size)
                continue
            flat = _contiguous_bytes(source)
            if shuffle and scratch_ptr == NULL:
                scratch = np.empty(largest, np.uint8)
                scratch_view = scratch
                scratch_ptr = &scratch_view[0]
            for start in range(0, raw_len, chunk_size):
                n = min(chunk_size, raw_len - start)
                src_view = _chunk_of(source, flat, start, start + n)
                if codec_id == CODEC_NONE or codec_id == CODEC_LZ4:
                    stored[c] = _store_chunk(&src_view[0], n, shuffle, codec_id, level or 1, scratch_ptr,
                                             out_ptr + pos)
                else:
                    if shuffle:
                        tnfr_shuffle(&src_view[0], scratch_ptr, n, shuffle)
                        raw = scratch[:n]
                    else:
                        raw = src_view
                    data = codec.compress(raw, level)
                    if len(data) >= n:
                        data = raw
                    src_view = memoryview(data).cast("B")
                    memcpy(out_ptr + pos, &src_view[0], len(data))
                    stored[c] = len(data)
                checksums[c] = XXH3_64bits(out_ptr + pos, stored[c])
                pos += stored[c]
                c += 1
        payload_len = pos - payload_offset
        _write_header(out_ptr, header_len, payload_offset, kind, flags, dtype_field, shape, <uint32_t>chunk_size,
                      n_segments, payload_len, stored, checksums, n_chunks)
    finally:
        PyMem_Free(stored)
        PyMem_Free(checksums)
        PyBuffer_Release(&out_buffer)
    # A well-compressed frame would otherwise pin the worst-case allocation.
    size = payload_offset + capacity
    result = out if pos == size else out[:pos].copy() if 2 * pos < size else out[:pos]
    return memoryview(result).toreadonly()


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _decode_run(DecodeJob* job) noexcept nogil:
    cdef Py_ssize_t i, start, raw, stored, offset = job.data_offset
    cdef const uint8_t* data
    cdef uint8_t* target
    for i in range(job.lo, job.hi):
        start = i * job.chunk_size
        raw = min(job.chunk_size, job.raw_len - start)
        stored = _le32(job.table + CHUNK_ENTRY * i)
        if offset < 0 or stored <= 0 or stored > raw or offset + stored > job.frame_len:
            job.error, job.error_chunk = DECODE_OUT_OF_BOUNDS, i
            return
        data = job.frame + offset
        offset += stored
        if job.verify and XXH3_64bits(data, stored) != _le64(job.table + CHUNK_ENTRY * i + 4):
            job.error, job.error_chunk = DECODE_CHECKSUM, i
            return
        target = job.scratch if job.shuffle else job.dst + start
        if stored == raw:
            if job.shuffle:
                tnfr_unshuffle(data, job.dst + start, raw, job.shuffle)
            else:
                memcpy(target, data, raw)
            continue
        # LZ4 bounds-checks every read and write itself; anything but exactly `raw` bytes
        # out is corrupt.
        if (job.codec_id != CODEC_LZ4
                or LZ4_decompress_safe(<const char*>data, <char*>target, <int>stored, <int>raw) != raw):
            job.error, job.error_chunk = DECODE_CORRUPT, i
            return
        if job.shuffle:
            tnfr_unshuffle(job.scratch, job.dst + start, raw, job.shuffle)


def _decode_in_thread(uintptr_t job):
    with nogil:
        _decode_run(<DecodeJob*>job)


cdef tuple _decode_segment(const uint8_t* frame, Py_ssize_t frame_len, uint8_t* dst, Py_ssize_t raw_len,
                           Py_ssize_t chunk_size, const uint8_t* table, list offsets, Py_ssize_t first,
                           Py_ssize_t count, int shuffle, int codec_id, bint verify):
    """Decode a none/lz4 segment into ``dst``; return ``(error, chunk)`` of the first failure.

    ``offsets[first + i]`` is where the segment's chunk ``i`` starts in the frame.
    """
    cdef Py_ssize_t n_jobs = _jobs_for(raw_len, chunk_size), per, t
    cdef DecodeJob job
    if n_jobs == 1:
        # Small segments: no job array, no pool, no list, scratch from the C heap.
        job.frame, job.frame_len, job.dst, job.raw_len, job.chunk_size = frame, frame_len, dst, raw_len, chunk_size
        job.table, job.lo, job.hi, job.data_offset = table, 0, count, offsets[first]
        job.shuffle, job.codec_id, job.verify = shuffle, codec_id, verify
        job.error, job.error_chunk = DECODE_OK, 0
        _alloc_scratch(&job.scratch, shuffle, min(chunk_size, raw_len))
        try:
            if raw_len >= NOGIL_MIN_BYTES:
                with nogil:
                    _decode_run(&job)
            else:
                _decode_run(&job)
        finally:
            PyMem_Free(job.scratch)
        return job.error, job.error_chunk
    cdef DecodeJob* jobs = <DecodeJob*>PyMem_Malloc(n_jobs * sizeof(DecodeJob))
    cdef uint8_t[:, ::1] scratch
    if jobs == NULL:
        raise MemoryError()
    try:
        if shuffle:
            scratch = np.empty((n_jobs, min(chunk_size, raw_len)), np.uint8)
        per = -(-count // n_jobs)
        for t in range(n_jobs):
            jobs[t].frame = frame
            jobs[t].frame_len = frame_len
            jobs[t].dst = dst
            jobs[t].raw_len = raw_len
            jobs[t].chunk_size = chunk_size
            jobs[t].table = table
            jobs[t].lo = min(t * per, count)
            jobs[t].hi = min((t + 1) * per, count)
            jobs[t].data_offset = offsets[first + jobs[t].lo] if jobs[t].lo < count else 0
            jobs[t].shuffle = shuffle
            jobs[t].codec_id = codec_id
            jobs[t].verify = verify
            jobs[t].scratch = &scratch[t, 0] if shuffle else NULL
            jobs[t].error = DECODE_OK
            jobs[t].error_chunk = 0
        _run_jobs(_decode_in_thread, [<uintptr_t>&jobs[t] for t in range(n_jobs)])
        for t in range(n_jobs):
            if jobs[t].error != DECODE_OK:
                return jobs[t].error, jobs[t].error_chunk
        return DECODE_OK, 0
    finally:
        PyMem_Free(jobs)


def _raise_decode_error(int error, Py_ssize_t chunk, int segment_index, codec_name):
    if error == DECODE_CHECKSUM:
        raise ChecksumError(f"segment {segment_index} chunk {chunk}: checksum mismatch, the payload is corrupt")
    if error == DECODE_CORRUPT:
        raise FrameError(f"segment {segment_index} chunk {chunk}: corrupt {codec_name} data")
    raise FrameError(f"segment {segment_index} chunk {chunk}: stored bytes lie outside the frame")


cdef int _check_table(header, Py_ssize_t index, Py_ssize_t first, Py_ssize_t count, Py_ssize_t raw_len,
                      Py_ssize_t chunk_size, Py_ssize_t table_offset, Py_ssize_t frame_len) except -1:
    if not (0 <= first and first + count <= len(header.stored) and count == -(-raw_len // chunk_size)
            and 0 <= table_offset and table_offset + CHUNK_ENTRY * (first + count) <= frame_len):
        raise FrameError(f"segment {index}: chunk table does not match the header")
    return 0


_UINT8 = np.dtype(np.uint8)


@cython.boundscheck(False)
@cython.wraparound(False)
def decode_segment(buffer, header, int index, out, bint verify=True):
    """Decode segment ``index`` of the parsed frame in ``buffer`` into the uint8 array ``out``.

    Same contract as ``tnfr_fastcache._pure._frame.decode_segment``.
    """
    cdef const uint8_t[::1] frame
    cdef const uint8_t[::1] chunk
    cdef uint8_t[::1] dst
    cdef uint8_t[::1] scratch_view
    cdef Py_buffer frame_buffer, out_buffer
    cdef Py_ssize_t first, count, i, c, raw, start, stored, offset, table_offset
    cdef Py_ssize_t chunk_size = header.chunk_size, frame_len, raw_len
    cdef int shuffle, codec_id, error

    segment = header.segments[index]
    raw_len = segment.raw_len
    if not isinstance(out, np.ndarray):
        raise FrameError(f"output for segment {index} must be {raw_len} contiguous bytes")
    dtype = out.dtype
    if ((dtype is not _UINT8 and dtype != _UINT8) or out.ndim != 1 or out.size != raw_len
            or not out.flags.c_contiguous):
        raise FrameError(f"output for segment {index} must be {raw_len} contiguous bytes")
    if raw_len == 0:
        return
    first, count = segment.first_chunk, segment.n_chunks
    shuffle = segment.shuffle
    codec_id = segment.codec.codec_id
    table_offset = header.table_offset

    if codec_id == CODEC_NONE or codec_id == CODEC_LZ4:
        _get_frame(buffer, &frame_buffer)
        try:
            frame_len = frame_buffer.len
            _check_table(header, index, first, count, raw_len, chunk_size, table_offset, frame_len)
            PyObject_GetBuffer(out, &out_buffer, PyBUF_WRITABLE)
            try:
                error, c = _decode_segment(<const uint8_t*>frame_buffer.buf, frame_len, <uint8_t*>out_buffer.buf,
                                           raw_len, chunk_size,
                                           <const uint8_t*>frame_buffer.buf + table_offset + CHUNK_ENTRY * first,
                                           header.offsets, first, count, shuffle, codec_id, verify)
            finally:
                PyBuffer_Release(&out_buffer)
        finally:
            PyBuffer_Release(&frame_buffer)
        if error != DECODE_OK:
            _raise_decode_error(error, first + c, index, segment.codec.name)
        return

    frame = as_frame_buffer(buffer)
    frame_len = frame.shape[0]
    _check_table(header, index, first, count, raw_len, chunk_size, table_offset, frame_len)
    dst = out
    if shuffle:
        scratch = np.empty(min(chunk_size, raw_len), np.uint8)
        scratch_view = scratch
    for i in range(count):
        c = first + i
        start = i * chunk_size
        raw = min(chunk_size, raw_len - start)
        stored, offset = header.stored[c], header.offsets[c]
        if offset < 0 or stored <= 0 or stored > raw or offset + stored > frame_len:
            _raise_decode_error(DECODE_OUT_OF_BOUNDS, c, index, segment.codec.name)
        chunk = frame[offset : offset + stored]
        if verify and XXH3_64bits(&chunk[0], stored) != <uint64_t>header.checksums[c]:
            _raise_decode_error(DECODE_CHECKSUM, c, index, segment.codec.name)
        if stored != raw:
            decoded = scratch[:raw] if shuffle else out[start : start + raw]
            segment.codec.decompress_into(chunk, decoded)
            if shuffle:
                tnfr_unshuffle(&scratch_view[0], &dst[start], raw, shuffle)
        elif shuffle:
            tnfr_unshuffle(&chunk[0], &dst[start], raw, shuffle)
        else:
            memcpy(&dst[start], &chunk[0], raw)


@cython.boundscheck(False)
@cython.wraparound(False)
def verify_chunks(buffer, header):
    """Check every chunk checksum of the parsed frame in ``buffer``.

    Raises
    ------
    ChecksumError
        Naming the first chunk whose checksum does not match.
    """
    cdef const uint8_t[::1] frame = as_frame_buffer(buffer)
    cdef Py_ssize_t c = 0, n = len(header.stored), frame_len = frame.shape[0], stored
    cdef Py_ssize_t offset = header.payload_offset, table_offset = header.table_offset
    cdef const uint8_t* table
    cdef int error = DECODE_OK
    if not n:
        return
    if not (0 <= table_offset and table_offset + CHUNK_ENTRY * n <= frame_len):
        raise FrameError("chunk table does not match the header")
    table = &frame[table_offset]
    with nogil:
        for c in range(n):
            stored = _le32(table + CHUNK_ENTRY * c)
            if offset < 0 or stored <= 0 or offset + stored > frame_len:
                error = DECODE_OUT_OF_BOUNDS
                break
            if XXH3_64bits(&frame[offset], stored) != _le64(table + CHUNK_ENTRY * c + 4):
                error = DECODE_CHECKSUM
                break
            offset += stored
    if error != DECODE_OK:
        segment_index = 0
        for segment_index, segment in enumerate(header.segments):
            if c < segment.first_chunk + segment.n_chunks:
                break
        _raise_decode_error(error, c, segment_index, "")
