# cython: language_level=3, embedsignature=True
"""Frames in C: the chunk loops of ``tnfr_fastcache._pure._frame`` with the GIL released.

Byte shuffle, LZ4 (vendored lz4 1.9.4: the bytes python-lz4 4.4.5 writes) and xxh3_64 run
in C, straight between the array's memory and the frame buffer: no intermediate ``bytes``.
gzip and zstd chunks go through ``tnfr_fastcache.codecs`` (zlib and zstandard release the
GIL themselves). The header is packed and parsed by the pure module, so the hostile-input
checks exist once; the loops below still check every offset they read against the buffer.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcpy, memmove

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


def _jobs_for(Py_ssize_t raw_len, Py_ssize_t chunk_size):
    cdef Py_ssize_t count = -(-raw_len // chunk_size)
    if threads < 2 or raw_len < THREAD_MIN_BYTES or count < 2:
        return 1
    return min(threads, count)



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
    cdef EncodeJob* jobs = <EncodeJob*>PyMem_Malloc(n_jobs * sizeof(EncodeJob))
    cdef uint8_t[:, ::1] scratch
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
            pos += _encode_segment(&src_view[0], raw_len, chunk_size, shuffle, codec_id,
                                   level if codec_id == CODEC_LZ4 else 1, out_ptr + pos, &stored_view[c],
                                   &checksum_view[c])
            c += -(-raw_len // chunk_size)
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

    header = pack_header(kind, flags, dtype_str, shape, chunk_size, segments, stored.tolist(), checksums.tolist())
    if len(header) != payload_offset:
        raise AssertionError("header length differs from the space reserved for it")
    out[:payload_offset] = np.frombuffer(header, np.uint8)
    # A well-compressed frame would otherwise pin the worst-case allocation.
    result = out[:pos].copy() if 2 * pos < out.size else out[:pos]
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
                           Py_ssize_t chunk_size, const uint8_t* table, offsets, Py_ssize_t count, int shuffle,
                           int codec_id, bint verify):
    """Decode a none/lz4 segment into ``dst``; return ``(error, chunk)`` of the first failure.

    ``offsets`` holds where each of the segment's chunks starts in the frame.
    """
    cdef Py_ssize_t n_jobs = _jobs_for(raw_len, chunk_size), per, t
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
            jobs[t].data_offset = offsets[jobs[t].lo] if jobs[t].lo < count else 0
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
    cdef Py_ssize_t first, count, i, c, raw, start, stored, offset, table_offset
    cdef Py_ssize_t chunk_size = header.chunk_size, frame_len = frame.shape[0], raw_len
    cdef int shuffle, codec_id, error

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
    table_offset = header.table_offset
    if not (0 <= first and first + count <= len(header.stored) and count == -(-raw_len // chunk_size)
            and 0 <= table_offset and table_offset + CHUNK_ENTRY * (first + count) <= frame_len):
        raise FrameError(f"segment {index}: chunk table does not match the header")

    if codec_id == CODEC_NONE or codec_id == CODEC_LZ4:
        error, c = _decode_segment(&frame[0], frame_len, &dst[0], raw_len, chunk_size,
                                   &frame[table_offset + CHUNK_ENTRY * first],
                                   header.offsets[first : first + count], count, shuffle, codec_id, verify)
        if error != DECODE_OK:
            _raise_decode_error(error, first + c, index, segment.codec.name)
        return

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
