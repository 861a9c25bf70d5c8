# cython: language_level=3, embedsignature=True
"""Frames in C: the chunk loops of ``tnfr_fastcache._pure._frame`` with the GIL released.

Byte shuffle, LZ4 (vendored lz4 1.9.4: the bytes python-lz4 4.4.5 writes) and xxh3_64 run
in C, straight between the array's memory and the frame buffer: no intermediate ``bytes``.
gzip and zstd chunks go through ``tnfr_fastcache.codecs`` (zlib and zstandard release the
GIL themselves). The header is packed and parsed by the pure module, so the hostile-input
checks exist once; the loops below still check every offset they read against the buffer.
"""

cimport cython
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

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
    FrameHeader,
    as_frame_buffer,
    header_length,
    pack_header,
    parse_header,
)
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

    /* Byte shuffle: element i's byte j goes to stream j at position i. For 8-byte elements
       on little-endian machines, eight elements at a time through an 8x8 byte transpose in
       registers (three rounds of masked swaps); the transpose is its own inverse. */
    static inline void tnfr_transpose8x8(uint64_t x[8]) {
        uint64_t t;
        int i;
        for (i = 0; i < 4; i++) {
            t = ((x[i] >> 32) ^ x[i + 4]) & 0x00000000FFFFFFFFULL;
            x[i] ^= t << 32; x[i + 4] ^= t;
        }
        for (i = 0; i < 8; i += (i & 1) ? 3 : 1) {
            t = ((x[i] >> 16) ^ x[i + 2]) & 0x0000FFFF0000FFFFULL;
            x[i] ^= t << 16; x[i + 2] ^= t;
        }
        for (i = 0; i < 8; i += 2) {
            t = ((x[i] >> 8) ^ x[i + 1]) & 0x00FF00FF00FF00FFULL;
            x[i] ^= t << 8; x[i + 1] ^= t;
        }
    }

    static void tnfr_shuffle(const uint8_t *src, uint8_t *dst, size_t nbytes, size_t size) {
        size_t n = nbytes / size, i = 0, j;
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (size == 8) {
            uint64_t x[8];
            for (; i + 8 <= n; i += 8) {
                memcpy(x, src + i * 8, 64);
                tnfr_transpose8x8(x);
                for (j = 0; j < 8; j++) memcpy(dst + j * n + i, &x[j], 8);
            }
        }
    #endif
        for (; i < n; i++)
            for (j = 0; j < size; j++) dst[j * n + i] = src[i * size + j];
    }

    static void tnfr_unshuffle(const uint8_t *src, uint8_t *dst, size_t nbytes, size_t size) {
        size_t n = nbytes / size, i = 0, j;
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (size == 8) {
            uint64_t x[8];
            for (; i + 8 <= n; i += 8) {
                for (j = 0; j < 8; j++) memcpy(&x[j], src + j * n + i, 8);
                tnfr_transpose8x8(x);
                memcpy(dst + i * 8, x, 64);
            }
        }
    #endif
        for (; i < n; i++)
            for (j = 0; j < size; j++) dst[i * size + j] = src[j * n + i];
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


def _contiguous_bytes(source):
    if source.flags.c_contiguous:
        return source.reshape(-1).view(np.uint8)
    return None


def _chunk_of(source, flat, Py_ssize_t start, Py_ssize_t stop):
    if flat is not None:
        return flat[start:stop]
    itemsize = source.itemsize
    return np.ascontiguousarray(source.flat[start // itemsize : stop // itemsize]).view(np.uint8)


def _chunk_bound(codec_id, Py_ssize_t n):
    return LZ4_compressBound(<int>n) if codec_id == CODEC_LZ4 else n


@cython.boundscheck(False)
@cython.wraparound(False)
def encode(kind, flags, dtype_str, shape, sources, codecs, shuffles, levels, Py_ssize_t chunk_size=DEFAULT_CHUNK_SIZE):
    """Return the frame of ``sources`` as a read-only memoryview over a fresh numpy buffer.

    Same parameters and bytes as ``tnfr_fastcache._pure._frame.encode``.
    """
    cdef Py_ssize_t n_chunks = 0, capacity, pos, start, n, raw_len, index, c
    cdef int shuffle, codec_id, acceleration
    cdef uint8_t[::1] out_view
    cdef uint8_t[::1] scratch_view
    cdef const uint8_t[::1] src_view
    cdef int64_t[::1] stored_view
    cdef uint64_t[::1] checksum_view
    cdef uint8_t* out_ptr
    cdef uint8_t* scratch_ptr = NULL

    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE or chunk_size & (chunk_size - 1):
        raise FrameError(f"chunk size {chunk_size} is not a power of two in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")
    capacity = 0
    largest = 0
    for source, codec in zip(sources, codecs):
        raw_len = source.nbytes
        n_chunks += -(-raw_len // chunk_size)
        largest = max(largest, min(raw_len, chunk_size))
        for start in range(0, raw_len, chunk_size):
            capacity += _chunk_bound(codec.codec_id, min(chunk_size, raw_len - start))
    payload_offset = header_length(len(shape), len(sources), n_chunks)
    payload_offset = (payload_offset + 63) // 64 * 64
    out = np.empty(payload_offset + capacity, np.uint8)
    out_view = out
    out_ptr = &out_view[0]
    stored = np.empty(n_chunks, np.int64)
    checksums = np.empty(n_chunks, np.uint64)
    stored_view = stored
    checksum_view = checksums
    if any(shuffles):
        scratch = np.empty(largest, np.uint8)
        scratch_view = scratch
        scratch_ptr = &scratch_view[0]

    pos = payload_offset
    c = 0
    segments = []
    for source, codec, shuffle, level in zip(sources, codecs, shuffles, levels):
        raw_len = source.nbytes
        codec_id = codec.codec_id
        flat = _contiguous_bytes(source)
        in_c = flat is not None and codec_id in (CODEC_NONE, CODEC_LZ4)
        if in_c and raw_len:
            src_view = flat
            acceleration = level if codec_id == CODEC_LZ4 else 1
            start = 0
            with nogil:
                while start < raw_len:
                    n = min(chunk_size, raw_len - start)
                    stored_view[c] = _store_chunk(&src_view[start], n, shuffle, codec_id, acceleration,
                                                  scratch_ptr, out_ptr + pos)
                    checksum_view[c] = XXH3_64bits(out_ptr + pos, stored_view[c])
                    pos += stored_view[c]
                    start += n
                    c += 1
        elif raw_len:
            for start in range(0, raw_len, chunk_size):
                n = min(chunk_size, raw_len - start)
                src_view = _chunk_of(source, flat, start, start + n)
                if codec_id == CODEC_NONE or codec_id == CODEC_LZ4:
                    stored_view[c] = _store_chunk(&src_view[0], n, shuffle, codec_id, level or 1, scratch_ptr,
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
                    stored_view[c] = len(data)
                checksum_view[c] = XXH3_64bits(out_ptr + pos, stored_view[c])
                pos += stored_view[c]
                c += 1
        segments.append((raw_len, codec_id, shuffle))

    header = pack_header(kind, flags, dtype_str, shape, chunk_size, segments, stored, checksums)
    if len(header) != payload_offset:
        raise AssertionError("header length differs from the space reserved for it")
    out[:payload_offset] = np.frombuffer(header, np.uint8)
    # A well-compressed frame would otherwise pin the worst-case allocation.
    result = out[:pos].copy() if 2 * pos < out.size else out[:pos]
    return memoryview(result).toreadonly()


def _raise_decode_error(int error, Py_ssize_t chunk, int segment_index, codec_name):
    if error == DECODE_CHECKSUM:
        raise ChecksumError(f"segment {segment_index} chunk {chunk}: checksum mismatch, the payload is corrupt")
    if error == DECODE_CORRUPT:
        raise FrameError(f"segment {segment_index} chunk {chunk}: corrupt {codec_name} data")
    raise FrameError(f"segment {segment_index} chunk {chunk}: stored bytes lie outside the frame")


@cython.boundscheck(False)
@cython.wraparound(False)
def decode_segment(buffer, header, int index, out, bint verify=True):
    """Decode segment ``index`` of the parsed frame in ``buffer`` into the uint8 array ``out``.

    Same contract as ``tnfr_fastcache._pure._frame.decode_segment``.
    """
    cdef const uint8_t[::1] frame = as_frame_buffer(buffer)
    cdef const uint8_t[::1] chunk
    cdef uint8_t[::1] dst
    cdef uint8_t[::1] scratch_view
    cdef const int64_t[::1] stored = header.stored
    cdef const int64_t[::1] offsets = header.offsets
    cdef const uint64_t[::1] checksums = header.checksums
    cdef const uint8_t* data
    cdef uint8_t* scratch_ptr = NULL
    cdef uint8_t* target
    cdef Py_ssize_t first, count, i, c = 0, raw, start, chunk_size = header.chunk_size, frame_len = frame.shape[0]
    cdef Py_ssize_t raw_len
    cdef int shuffle, codec_id, error = DECODE_OK

    segment = header.segments[index]
    raw_len = segment.raw_len
    if (not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 1 or out.size != raw_len
            or not out.flags.c_contiguous):
        raise FrameError(f"output for segment {index} must be {raw_len} contiguous bytes")
    if raw_len == 0:
        return
    dst = out
    first, count = segment.first_chunk, segment.n_chunks
    shuffle = segment.shuffle
    codec_id = segment.codec.codec_id
    if shuffle:
        scratch = np.empty(min(chunk_size, raw_len), np.uint8)
        scratch_view = scratch
        scratch_ptr = &scratch_view[0]
    if not (0 <= first and first + count <= stored.shape[0] and count == -(-raw_len // chunk_size)):
        raise FrameError(f"segment {index}: chunk table does not match the header")

    if codec_id == CODEC_NONE or codec_id == CODEC_LZ4:
        with nogil:
            for i in range(count):
                c = first + i
                start = i * chunk_size
                raw = min(chunk_size, raw_len - start)
                if offsets[c] < 0 or stored[c] <= 0 or stored[c] > raw or offsets[c] + stored[c] > frame_len:
                    error = DECODE_OUT_OF_BOUNDS
                    break
                data = &frame[offsets[c]]
                if verify and XXH3_64bits(data, stored[c]) != checksums[c]:
                    error = DECODE_CHECKSUM
                    break
                target = scratch_ptr if shuffle else &dst[start]
                if stored[c] == raw:
                    if shuffle:
                        tnfr_unshuffle(data, &dst[start], raw, shuffle)
                        continue
                    memcpy(target, data, raw)
                    continue
                if codec_id != CODEC_LZ4:
                    error = DECODE_CORRUPT
                    break
                if LZ4_decompress_safe(<const char*>data, <char*>target, <int>stored[c], <int>raw) != raw:
                    error = DECODE_CORRUPT
                    break
                if shuffle:
                    tnfr_unshuffle(scratch_ptr, &dst[start], raw, shuffle)
        if error != DECODE_OK:
            _raise_decode_error(error, c, index, segment.codec.name)
        return

    for i in range(count):
        c = first + i
        start = i * chunk_size
        raw = min(chunk_size, raw_len - start)
        if offsets[c] < 0 or stored[c] <= 0 or stored[c] > raw or offsets[c] + stored[c] > frame_len:
            _raise_decode_error(DECODE_OUT_OF_BOUNDS, c, index, segment.codec.name)
        chunk = frame[offsets[c] : offsets[c] + stored[c]]
        if verify and XXH3_64bits(&chunk[0], stored[c]) != checksums[c]:
            _raise_decode_error(DECODE_CHECKSUM, c, index, segment.codec.name)
        if stored[c] == raw:
            data = &chunk[0]
        else:
            decoded = scratch[:raw] if shuffle else out[start : start + raw]
            segment.codec.decompress_into(chunk, decoded)
            if not shuffle:
                continue
            data = scratch_ptr
        if shuffle:
            tnfr_unshuffle(data, &dst[start], raw, shuffle)
        else:
            memcpy(&dst[start], data, raw)


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
    cdef const int64_t[::1] stored = header.stored
    cdef const int64_t[::1] offsets = header.offsets
    cdef const uint64_t[::1] checksums = header.checksums
    cdef Py_ssize_t c, n = stored.shape[0], frame_len = frame.shape[0]
    cdef int error = DECODE_OK
    with nogil:
        for c in range(n):
            if offsets[c] < 0 or stored[c] <= 0 or offsets[c] + stored[c] > frame_len:
                error = DECODE_OUT_OF_BOUNDS
                break
            if XXH3_64bits(&frame[offsets[c]], stored[c]) != checksums[c]:
                error = DECODE_CHECKSUM
                break
    if error != DECODE_OK:
        segment_index = 0
        for segment_index, segment in enumerate(header.segments):
            if c < segment.first_chunk + segment.n_chunks:
                break
        _raise_decode_error(error, c, segment_index, "")
