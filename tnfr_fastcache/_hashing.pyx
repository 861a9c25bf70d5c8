# cython: language_level=3, embedsignature=True
"""Stable content digests of call arguments, compiled.

The byte encoding and every rule are those of the pure-Python twin
(``tnfr_fastcache/_pure/_hashing.py``, which documents the scheme); this module feeds the
same bytes to one vendored xxh3_128 streaming state, walks containers with typed loops,
and hashes array payloads in place with the GIL released: contiguous memory directly,
strided memory through a cache-sized scratch block (a blocked transpose for F order),
never a full copy. Types that are neither hot nor simple (Enum, dataclasses, datetime,
rules, ...) are classified and reduced by the twin's shared code, so both agree.
"""

cimport cython
cimport numpy as cnp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next, PyDict_Size
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcmp, memcpy

import numpy as np

from ._pure import _hashing as _shared
from .errors import UnhashableKeyError

cnp.import_array()

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1
    const char* PyUnicode_AsUTF8AndSize(object obj, Py_ssize_t* size) except NULL
    object PyUnicode_FromStringAndSize(const char* data, Py_ssize_t size)
    double PyComplex_RealAsDouble(object obj) except? -1.0
    double PyComplex_ImagAsDouble(object obj) except? -1.0

cdef extern from *:
    """
    /* On x86-64 the bulk of a large payload goes through xxh3's AVX2 kernels when the CPU
       has them, chosen at run time as xxhash's own xxh_x86dispatch.c does (the extension
       itself is built for baseline SSE2); every kernel computes the same digest. */
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    #  define TFC_X86_DISPATCH 1
    #  include <immintrin.h>
    #  define XXH_X86DISPATCH
    #  define XXH_DISPATCH_AVX2 1
    #  define XXH_TARGET_AVX2 __attribute__((__target__("avx2")))
    #endif
    #define XXH_INLINE_ALL
    #include "xxhash.h"
    #include <stdint.h>
    #include <string.h>
    #include <stdlib.h>

    #ifdef TFC_X86_DISPATCH
    static int tfc_avx2 = -1;
    static int tfc_cpu_avx2(void) {
        if (tfc_avx2 < 0) { __builtin_cpu_init(); tfc_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0; }
        return tfc_avx2;
    }
    __attribute__((__target__("avx2"))) static void tfc_update_avx2(XXH3_state_t *s, const void *p, size_t n) {
        XXH3_update(s, (const xxh_u8 *)p, n, XXH3_accumulate_avx2, XXH3_scrambleAcc_avx2);
    }
    __attribute__((__target__("avx2"))) static int tfc_has_nan_f64_avx2(const unsigned char *p, size_t k) {
        __m256d acc = _mm256_setzero_pd();
        size_t i = 0;
        for (; i + 16 <= k; i += 16) {
            __m256d a = _mm256_loadu_pd((const double *)(p + 8 * i));
            __m256d b = _mm256_loadu_pd((const double *)(p + 8 * i + 32));
            __m256d c = _mm256_loadu_pd((const double *)(p + 8 * i + 64));
            __m256d d = _mm256_loadu_pd((const double *)(p + 8 * i + 96));
            acc = _mm256_or_pd(acc, _mm256_or_pd(_mm256_or_pd(_mm256_cmp_pd(a, a, _CMP_UNORD_Q), _mm256_cmp_pd(b, b, _CMP_UNORD_Q)),
                                                 _mm256_or_pd(_mm256_cmp_pd(c, c, _CMP_UNORD_Q), _mm256_cmp_pd(d, d, _CMP_UNORD_Q))));
        }
        int found = _mm256_movemask_pd(acc) != 0;
        for (; i < k; i++) { double v; memcpy(&v, p + 8 * i, 8); found |= (v != v); }
        return found;
    }
    __attribute__((__target__("avx2"))) static int tfc_has_nan_f32_avx2(const unsigned char *p, size_t k) {
        __m256 acc = _mm256_setzero_ps();
        size_t i = 0;
        for (; i + 16 <= k; i += 16) {
            __m256 a = _mm256_loadu_ps((const float *)(p + 4 * i));
            __m256 b = _mm256_loadu_ps((const float *)(p + 4 * i + 32));
            acc = _mm256_or_ps(acc, _mm256_or_ps(_mm256_cmp_ps(a, a, _CMP_UNORD_Q), _mm256_cmp_ps(b, b, _CMP_UNORD_Q)));
        }
        int found = _mm256_movemask_ps(acc) != 0;
        for (; i < k; i++) { float v; memcpy(&v, p + 4 * i, 4); found |= (v != v); }
        return found;
    }
    /* xxh3's AVX2 accumulation that also notes whether the stripes held a NaN (of
       doubles, of floats): float payloads are hashed in one pass and re-hashed with
       canonical NaNs only in the rare case that they have any. */
    static __thread int tfc_nan_seen;
    __attribute__((__target__("avx2"), __always_inline__)) static inline void
    tfc_acc_nan64(xxh_u64 *XXH_RESTRICT acc, const xxh_u8 *XXH_RESTRICT input,
                  const xxh_u8 *XXH_RESTRICT secret, size_t nbStripes) {
        __m256d flag = _mm256_setzero_pd();
        for (size_t n = 0; n < nbStripes; n++) {
            const xxh_u8 *in = input + n * XXH_STRIPE_LEN;
            XXH_PREFETCH(in + XXH_PREFETCH_DIST);
            XXH3_accumulate_512_avx2(acc, in, secret + n * XXH_SECRET_CONSUME_RATE);
            __m256d a = _mm256_loadu_pd((const double *)in), b = _mm256_loadu_pd((const double *)(in + 32));
            flag = _mm256_or_pd(flag, _mm256_cmp_pd(a, b, _CMP_UNORD_Q));  /* a or b is NaN */
        }
        if (_mm256_movemask_pd(flag)) tfc_nan_seen = 1;
    }
    __attribute__((__target__("avx2"), __always_inline__)) static inline void
    tfc_acc_nan32(xxh_u64 *XXH_RESTRICT acc, const xxh_u8 *XXH_RESTRICT input,
                  const xxh_u8 *XXH_RESTRICT secret, size_t nbStripes) {
        __m256 flag = _mm256_setzero_ps();
        for (size_t n = 0; n < nbStripes; n++) {
            const xxh_u8 *in = input + n * XXH_STRIPE_LEN;
            XXH_PREFETCH(in + XXH_PREFETCH_DIST);
            XXH3_accumulate_512_avx2(acc, in, secret + n * XXH_SECRET_CONSUME_RATE);
            __m256 a = _mm256_loadu_ps((const float *)in), b = _mm256_loadu_ps((const float *)(in + 32));
            flag = _mm256_or_ps(flag, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
        }
        if (_mm256_movemask_ps(flag)) tfc_nan_seen = 1;
    }
    __attribute__((__target__("avx2"))) static void tfc_update_nan(XXH3_state_t *s, const void *p, size_t n, int w) {
        if (w == 8) XXH3_update(s, (const xxh_u8 *)p, n, tfc_acc_nan64, XXH3_scrambleAcc_avx2);
        else XXH3_update(s, (const xxh_u8 *)p, n, tfc_acc_nan32, XXH3_scrambleAcc_avx2);
    }
    static void tfc_update(XXH3_state_t *s, const void *p, size_t n) {
        if (n >= 1024 && tfc_cpu_avx2()) tfc_update_avx2(s, p, n);
        else XXH3_128bits_update(s, p, n);
    }
    #else
    #  define tfc_update XXH3_128bits_update
    #endif

    /* Small pieces are batched in `buf`; the streaming state exists only once the
       encoding outgrows it, so a digest of a few scalars is one short one-shot call. */
    #define TFC_SINK_CAP 1024
    typedef struct {
        size_t len;
        uint64_t total;  /* bytes put so far: array payloads start 8-byte aligned in the stream */
        XXH3_state_t *state;
        unsigned char buf[TFC_SINK_CAP];
    } tfc_sink;

    static void tfc_sink_init(tfc_sink *s) { s->len = 0; s->total = 0; s->state = NULL; }
    static void tfc_sink_free(tfc_sink *s) {
        if (s->state) { XXH3_freeState(s->state); s->state = NULL; }
    }
    static int tfc_spill(tfc_sink *s) {
        if (!s->state) {
            s->state = XXH3_createState();
            if (!s->state) return -1;
            XXH3_128bits_reset(s->state);
        }
        if (s->len) { XXH3_128bits_update(s->state, s->buf, s->len); s->len = 0; }
        return 0;
    }
    static int tfc_put(tfc_sink *s, const void *p, size_t n) {
        s->total += n;
        if (s->len + n <= TFC_SINK_CAP) { memcpy(s->buf + s->len, p, n); s->len += n; return 0; }
        if (tfc_spill(s)) return -1;
        if (n >= TFC_SINK_CAP) { tfc_update(s->state, p, n); return 0; }
        memcpy(s->buf, p, n); s->len = n;
        return 0;
    }
    static int tfc_put_large(tfc_sink *s, const void *p, size_t n) {
        if (tfc_spill(s)) return -1;
        s->total += n;
        tfc_update(s->state, p, n);
        return 0;
    }
    static void tfc_store_le64(unsigned char *b, uint64_t v) {
        for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    }
    static int tfc_put_tag64(tfc_sink *s, unsigned char tag, uint64_t v) {
        unsigned char b[9];
        b[0] = tag; tfc_store_le64(b + 1, v);
        return tfc_put(s, b, 9);
    }
    static void tfc_digest(tfc_sink *s, unsigned char *out) {
        XXH128_hash_t h;
        XXH128_canonical_t c;
        if (!s->state) {
            h = XXH3_128bits(s->buf, s->len);
        } else {
            if (s->len) { XXH3_128bits_update(s->state, s->buf, s->len); s->len = 0; }
            h = XXH3_128bits_digest(s->state);
        }
        XXH128_canonicalFromHash(&c, h);
        memcpy(out, c.digest, 16);
    }
    static uint64_t tfc_double_bits(double d) {
        uint64_t u;
        if (d != d) return 0x7FF8000000000000ULL;
        memcpy(&u, &d, 8);
        return u;
    }
    static int tfc_cmp16(const void *a, const void *b) { return memcmp(a, b, 16); }

    /* ---- array payloads ---------------------------------------------------------- */
    #define TFC_BLOCK 16384           /* NaN check + hash unit: stays in L1 */
    #define TFC_SCRATCH (2 * 1024 * 1024)  /* gather target for strided arrays: 64 rows of a 4000-column F matrix */
    #define TFC_MAXDIM 64
    #define TFC_ROW_DIRECT 8192       /* contiguous rows at least this long skip the scratch */

    typedef struct {
        const unsigned char *data;
        int ndim;
        Py_ssize_t shape[TFC_MAXDIM];
        Py_ssize_t strides[TFC_MAXDIM];
        size_t itemsize;
        int fw;    /* float component width to canonicalise NaNs in (2, 4, 8), 0 = none */
        int swap;  /* components are stored byte-swapped */
        int detect;  /* hash as is and only note NaNs (first pass of tfc_hash_array) */
        size_t nbytes;
    } tfc_array;

    static uint64_t tfc_load(const unsigned char *p, int w, int swap) {
        uint64_t x = 0;
        if (w == 8) { uint64_t v; memcpy(&v, p, 8); x = swap ? __builtin_bswap64(v) : v; }
        else if (w == 4) { uint32_t v; memcpy(&v, p, 4); x = swap ? __builtin_bswap32(v) : v; }
        else { uint16_t v; memcpy(&v, p, 2); x = swap ? __builtin_bswap16(v) : v; }
        return x;
    }
    static int tfc_bits_nan(uint64_t x, int w) {
        if (w == 8) return (x & 0x7FFFFFFFFFFFFFFFULL) > 0x7FF0000000000000ULL;
        if (w == 4) return (x & 0x7FFFFFFFULL) > 0x7F800000ULL;
        return (x & 0x7FFFULL) > 0x7C00ULL;
    }
    /* Branch-free accumulations so the compiler vectorises the common native cases. */
    static int tfc_has_nan(const unsigned char *p, size_t n, int w, int swap) {
        size_t k = n / (size_t)w, i;
        int acc = 0;
    #ifdef TFC_X86_DISPATCH
        if (!swap && w == 8 && tfc_cpu_avx2()) return tfc_has_nan_f64_avx2(p, k);
        if (!swap && w == 4 && tfc_cpu_avx2()) return tfc_has_nan_f32_avx2(p, k);
    #endif
        if (!swap && w == 8) {
            for (i = 0; i < k; i++) { double d; memcpy(&d, p + 8 * i, 8); acc |= (d != d); }
        } else if (!swap && w == 4) {
            for (i = 0; i < k; i++) { float f; memcpy(&f, p + 4 * i, 4); acc |= (f != f); }
        } else if (!swap && w == 2) {
            for (i = 0; i < k; i++) { uint16_t v; memcpy(&v, p + 2 * i, 2); acc |= ((v & 0x7FFF) > 0x7C00); }
        } else {
            for (i = 0; i < k; i++) acc |= tfc_bits_nan(tfc_load(p + (size_t)w * i, w, swap), w);
        }
        return acc;
    }
    static void tfc_canon_nan(unsigned char *p, size_t n, int w, int swap) {
        static const unsigned char nan8[8] = {0, 0, 0, 0, 0, 0, 0xF8, 0x7F};
        static const unsigned char nan4[4] = {0, 0, 0xC0, 0x7F};
        static const unsigned char nan2[2] = {0, 0x7E};
        const unsigned char *le = w == 8 ? nan8 : (w == 4 ? nan4 : nan2);
        unsigned char canon[8];
        /* the canonical NaN's bytes in the array's own byte order (ours is little-endian) */
        int native_le = 1;
        unsigned char probe[2] = {1, 0};
        uint16_t one; memcpy(&one, probe, 2); native_le = (one == 1);
        int reverse = native_le ? swap : !swap;
        for (int b = 0; b < w; b++) canon[b] = reverse ? le[w - 1 - b] : le[b];
        size_t k = n / (size_t)w, i;
        for (i = 0; i < k; i++) {
            unsigned char *q = p + (size_t)w * i;
            if (tfc_bits_nan(tfc_load(q, w, swap), w)) memcpy(q, canon, (size_t)w);
        }
    }
    /* Feed n bytes; NaNs are canonicalised block by block, in place when `mine`
       (our scratch) and through `tmp` otherwise, so clean data is hashed where it lies. */
    static int tfc_feed(tfc_sink *s, unsigned char *p, size_t n, const tfc_array *a, int mine,
                        unsigned char *tmp) {
        if (!a->fw) return tfc_put_large(s, p, n);
    #ifdef TFC_X86_DISPATCH
        if (a->detect) {
            /* the stripes xxh3 keeps buffered (at most 256 bytes, the call's last) are
               accumulated later, maybe by another kernel: check them here */
            size_t t = n < 512 ? n : 512;
            if (tfc_spill(s)) return -1;
            s->total += n;
            tfc_update_nan(s->state, p, n, a->fw);
            if (tfc_has_nan(p + n - t, t, a->fw, 0)) tfc_nan_seen = 1;
            return 0;
        }
    #endif
        while (n) {
            size_t b = n < TFC_BLOCK ? n : TFC_BLOCK;
            unsigned char *q = p;
            if (tfc_has_nan(p, b, a->fw, a->swap)) {
                if (!mine) { memcpy(tmp, p, b); q = tmp; }
                tfc_canon_nan(q, b, a->fw, a->swap);
            }
            if (tfc_put_large(s, q, b)) return -1;
            p += b; n -= b;
        }
        return 0;
    }

    #define TFC_COPY(dst, src, k) do { \\
        switch (k) { \\
        case 1: *(dst) = *(src); break; \\
        case 2: memcpy((dst), (src), 2); break; \\
        case 4: memcpy((dst), (src), 4); break; \\
        case 8: memcpy((dst), (src), 8); break; \\
        case 16: memcpy((dst), (src), 16); break; \\
        default: memcpy((dst), (src), (k)); } } while (0)

    /* Rows [0, b) x columns [0, c) of a 2-D strided block into C order at dst. Reading
       down each column keeps the source walk short when rows are the fast axis in memory
       (F order); tiles of 8 columns keep the scattered writes within a few cache lines. */
    static void tfc_transpose(unsigned char *dst, const unsigned char *src, Py_ssize_t b,
                              Py_ssize_t c, Py_ssize_t sr, Py_ssize_t sc, size_t k) {
        Py_ssize_t j0, j, r;
        for (j0 = 0; j0 < c; j0 += 8) {
            Py_ssize_t j1 = j0 + 8 < c ? j0 + 8 : c;
            for (r = 0; r < b; r++) {
                const unsigned char *row = src + r * sr;
                unsigned char *out = dst + ((size_t)r * (size_t)c) * k;
                if (k == 8) {
                    for (j = j0; j < j1; j++) memcpy(out + 8 * (size_t)j, row + j * sc, 8);
                } else {
                    for (j = j0; j < j1; j++) TFC_COPY(out + k * (size_t)j, row + j * sc, k);
                }
            }
        }
    }

    #ifdef TFC_X86_DISPATCH
    /* tfc_transpose for 8-byte items whose rows are adjacent in memory (sr == 8, F order):
       4x4 tiles transposed in registers. With blocks of ~64 rows each column is read in
       runs of 512 bytes, which the hardware prefetchers follow (measured: software
       prefetching only slowed it down). */
    __attribute__((__target__("avx2"))) static void
    tfc_transpose8_f(unsigned char *dst, const unsigned char *src, Py_ssize_t b, Py_ssize_t c, Py_ssize_t sc) {
        Py_ssize_t j, r, b4 = b & ~(Py_ssize_t)3, c4 = c & ~(Py_ssize_t)3;
        size_t row = (size_t)c * 8;
        for (j = 0; j < c4; j += 4) {
            const unsigned char *c0 = src + j * sc, *c1 = c0 + sc, *c2 = c1 + sc, *c3 = c2 + sc;
            unsigned char *out = dst + (size_t)j * 8;
            for (r = 0; r < b4; r += 4) {
                __m256d x0 = _mm256_loadu_pd((const double *)(c0 + 8 * r));
                __m256d x1 = _mm256_loadu_pd((const double *)(c1 + 8 * r));
                __m256d x2 = _mm256_loadu_pd((const double *)(c2 + 8 * r));
                __m256d x3 = _mm256_loadu_pd((const double *)(c3 + 8 * r));
                __m256d t0 = _mm256_unpacklo_pd(x0, x1), t1 = _mm256_unpackhi_pd(x0, x1);
                __m256d t2 = _mm256_unpacklo_pd(x2, x3), t3 = _mm256_unpackhi_pd(x2, x3);
                unsigned char *o = out + (size_t)r * row;
                _mm256_storeu_pd((double *)o, _mm256_permute2f128_pd(t0, t2, 0x20));
                _mm256_storeu_pd((double *)(o + row), _mm256_permute2f128_pd(t1, t3, 0x20));
                _mm256_storeu_pd((double *)(o + 2 * row), _mm256_permute2f128_pd(t0, t2, 0x31));
                _mm256_storeu_pd((double *)(o + 3 * row), _mm256_permute2f128_pd(t1, t3, 0x31));
            }
            for (; r < b; r++) {
                unsigned char *o = out + (size_t)r * row;
                memcpy(o, c0 + 8 * r, 8); memcpy(o + 8, c1 + 8 * r, 8);
                memcpy(o + 16, c2 + 8 * r, 8); memcpy(o + 24, c3 + 8 * r, 8);
            }
        }
        for (; j < c; j++)
            for (r = 0; r < b; r++) memcpy(dst + ((size_t)r * (size_t)c + (size_t)j) * 8, src + j * sc + 8 * r, 8);
    }
    /* Every other 8-byte item (a[:, ::2] of float64): two loads, one unpack, one permute
       per four items. Vector loads stop while the bytes they read (up to the odd item
       after the last one used) still lie before the row's last item. */
    __attribute__((__target__("avx2"))) static void
    tfc_gather8_step2(unsigned char *out, const unsigned char *q, Py_ssize_t m) {
        Py_ssize_t e = 0;
        for (; e + 5 <= m; e += 4) {
            __m256d x0 = _mm256_loadu_pd((const double *)(q + 16 * e));
            __m256d x1 = _mm256_loadu_pd((const double *)(q + 16 * e + 32));
            _mm256_storeu_pd((double *)(out + 8 * e), _mm256_permute4x64_pd(_mm256_unpacklo_pd(x0, x1), 0xD8));
        }
        for (; e < m; e++) memcpy(out + 8 * e, q + 16 * e, 8);
    }
    #endif

    /* One scratch block is kept for the life of the process: a fresh 2 MB allocation
       is mapped and zeroed by the kernel on every call (measured: a third of the time
       of an F-ordered 128 MB array). A concurrent caller gets its own. */
    static unsigned char *tfc_scratch_kept = NULL;
    static int tfc_scratch_busy = 0;
    static unsigned char *tfc_scratch_take(size_t cap) {
    #if defined(__GNUC__) || defined(__clang__)
        if (cap == TFC_SCRATCH && __atomic_exchange_n(&tfc_scratch_busy, 1, __ATOMIC_ACQUIRE) == 0) {
            if (!tfc_scratch_kept) tfc_scratch_kept = (unsigned char *)malloc(TFC_SCRATCH);
            if (tfc_scratch_kept) return tfc_scratch_kept;
            __atomic_store_n(&tfc_scratch_busy, 0, __ATOMIC_RELEASE);
        }
    #endif
        return (unsigned char *)malloc(cap);
    }
    static void tfc_scratch_give(unsigned char *scratch) {
        if (!scratch) return;
    #if defined(__GNUC__) || defined(__clang__)
        if (scratch == tfc_scratch_kept) { __atomic_store_n(&tfc_scratch_busy, 0, __ATOMIC_RELEASE); return; }
    #endif
        free(scratch);
    }

    /* Next index of an odometer over the first `nd` axes; returns the pointer delta. */
    static Py_ssize_t tfc_step(Py_ssize_t *idx, const Py_ssize_t *shape, const Py_ssize_t *strides, int nd) {
        Py_ssize_t delta = 0;
        for (int d = nd - 1; d >= 0; d--) {
            idx[d]++;
            delta += strides[d];
            if (idx[d] < shape[d]) break;
            delta -= strides[d] * shape[d];
            idx[d] = 0;
        }
        return delta;
    }

    /* The array's elements in C order. Returns 0, or -1 when out of memory. */
    static int tfc_walk_array(tfc_sink *s, const tfc_array *a) {
        Py_ssize_t shape[TFC_MAXDIM], strides[TFC_MAXDIM], idx[TFC_MAXDIM];
        int nd = 0, d, rc = -1;
        size_t k = a->itemsize;
        for (d = 0; d < a->ndim; d++) {
            if (a->shape[d] == 0) return 0;
            if (a->shape[d] == 1) continue;
            /* merge with the previous axis when together they are one strided axis */
            if (nd > 0 && strides[nd - 1] == a->shape[d] * a->strides[d]) {
                shape[nd - 1] *= a->shape[d];
                strides[nd - 1] = a->strides[d];
            } else {
                shape[nd] = a->shape[d];
                strides[nd] = a->strides[d];
                nd++;
            }
        }
        unsigned char tmp[TFC_BLOCK];  /* a block of unowned data with NaNs, canonicalised */
        unsigned char *scratch = NULL;
        size_t cap = TFC_SCRATCH > k ? TFC_SCRATCH : k;
        const unsigned char *p = a->data;
        if (nd == 0) {
            rc = tfc_feed(s, (unsigned char *)p, k, a, 0, tmp);
            goto done;
        }
        if (nd == 1 && (size_t)strides[0] == k) {
            rc = tfc_feed(s, (unsigned char *)p, (size_t)shape[0] * k, a, 0, tmp);
            goto done;
        }
        scratch = tfc_scratch_take(cap);
        if (!scratch) goto done;
        memset(idx, 0, sizeof(idx));
        Py_ssize_t cols = shape[nd - 1], sc = strides[nd - 1];
        size_t row_bytes = (size_t)cols * k, fill = 0;
        if ((size_t)sc == k) {
            /* contiguous rows: long ones are hashed where they lie, short ones batched */
            Py_ssize_t rows = 1;
            for (d = 0; d < nd - 1; d++) rows *= shape[d];
            for (Py_ssize_t t = 0; t < rows; t++) {
                if (row_bytes >= TFC_ROW_DIRECT) {
                    if (fill && tfc_feed(s, scratch, fill, a, 1, tmp)) goto done;
                    fill = 0;
                    if (tfc_feed(s, (unsigned char *)p, row_bytes, a, 0, tmp)) goto done;
                } else {
                    if (fill + row_bytes > cap) {
                        if (tfc_feed(s, scratch, fill, a, 1, tmp)) goto done;
                        fill = 0;
                    }
                    memcpy(scratch + fill, p, row_bytes);
                    fill += row_bytes;
                }
                p += tfc_step(idx, shape, strides, nd - 1);
            }
        } else if (nd >= 2 && llabs((long long)strides[nd - 2]) < llabs((long long)sc)
                   && row_bytes <= cap) {
            /* the row axis is the fast one in memory (F order, transposes) */
            Py_ssize_t rows = shape[nd - 2], sr = strides[nd - 2], outer = 1;
            Py_ssize_t block = (Py_ssize_t)(cap / row_bytes);
            for (d = 0; d < nd - 2; d++) outer *= shape[d];
            for (Py_ssize_t t = 0; t < outer; t++) {
                for (Py_ssize_t i0 = 0; i0 < rows; i0 += block) {
                    Py_ssize_t b = rows - i0 < block ? rows - i0 : block;
    #ifdef TFC_X86_DISPATCH
                    if (k == 8 && sr == 8 && tfc_cpu_avx2()) tfc_transpose8_f(scratch, p + i0 * sr, b, cols, sc);
                    else
    #endif
                    tfc_transpose(scratch, p + i0 * sr, b, cols, sr, sc, k);
                    if (tfc_feed(s, scratch, (size_t)b * row_bytes, a, 1, tmp)) goto done;
                }
                p += tfc_step(idx, shape, strides, nd - 2);
            }
        } else {
            /* strided rows: gathered element by element */
            Py_ssize_t rows = 1;
            for (d = 0; d < nd - 1; d++) rows *= shape[d];
            for (Py_ssize_t t = 0; t < rows; t++) {
                const unsigned char *q = p;
                Py_ssize_t j = 0;
                while (j < cols) {
                    /* as many items of this row as fit, copied in a loop the compiler
                       specialises per item size */
                    Py_ssize_t room = (Py_ssize_t)((cap - fill) / k), m = cols - j < room ? cols - j : room;
                    unsigned char *out = scratch + fill;
                    if (m == 0) {
                        if (tfc_feed(s, scratch, fill, a, 1, tmp)) goto done;
                        fill = 0;
                        continue;
                    }
    #ifdef TFC_X86_DISPATCH
                    if (k == 8 && sc == 16 && tfc_cpu_avx2()) tfc_gather8_step2(out, q, m);
                    else
    #endif
                    if (k == 8) for (Py_ssize_t e = 0; e < m; e++) memcpy(out + 8 * e, q + e * sc, 8);
                    else if (k == 4) for (Py_ssize_t e = 0; e < m; e++) memcpy(out + 4 * e, q + e * sc, 4);
                    else for (Py_ssize_t e = 0; e < m; e++) TFC_COPY(out + k * (size_t)e, q + e * sc, k);
                    fill += (size_t)m * k;
                    q += m * sc;
                    j += m;
                }
                p += tfc_step(idx, shape, strides, nd - 1);
            }
        }
        if (fill && tfc_feed(s, scratch, fill, a, 1, tmp)) goto done;
        rc = 0;
    done:
        tfc_scratch_give(scratch);
        return rc;
    }

    static int tfc_hash_array(tfc_sink *s, tfc_array *a) {
        a->detect = 0;
    #ifdef TFC_X86_DISPATCH
        if ((a->fw == 8 || a->fw == 4) && !a->swap && a->nbytes >= TFC_BLOCK && tfc_cpu_avx2()) {
            int rc;
            XXH3_state_t *before;
            uint64_t total_before;
            if (tfc_spill(s)) return -1;
            before = XXH3_createState();
            if (!before) return -1;
            XXH3_copyState(before, s->state);
            total_before = s->total;
            tfc_nan_seen = 0;
            a->detect = 1;
            rc = tfc_walk_array(s, a);
            a->detect = 0;
            if (rc == 0 && tfc_nan_seen) {
                XXH3_copyState(s->state, before);
                s->total = total_before;
                rc = tfc_walk_array(s, a);
            }
            XXH3_freeState(before);
            return rc;
        }
    #endif
        return tfc_walk_array(s, a);
    }
    """
    ctypedef struct XXH3_state_t:
        pass
    ctypedef struct tfc_sink:
        size_t len
        uint64_t total
    ctypedef struct tfc_array:
        const unsigned char* data
        int ndim
        Py_ssize_t shape[64]
        Py_ssize_t strides[64]
        size_t itemsize
        int fw
        int swap
        size_t nbytes
    void tfc_sink_init(tfc_sink* s) nogil
    void tfc_sink_free(tfc_sink* s) nogil
    int tfc_put(tfc_sink* s, const void* p, size_t n) nogil
    int tfc_put_tag64(tfc_sink* s, unsigned char tag, uint64_t v) nogil
    void tfc_store_le64(unsigned char* b, uint64_t v) nogil
    void tfc_digest(tfc_sink* s, unsigned char* out) nogil
    uint64_t tfc_double_bits(double d) nogil
    int tfc_cmp16(const void* a, const void* b) nogil
    int tfc_hash_array(tfc_sink* s, tfc_array* a) nogil


DIGEST_VERSION = _shared.DIGEST_VERSION

cdef bytes _HEADER = _shared.HEADER
cdef const char* _ZEROS = b"\0\0\0\0\0\0\0\0"
cdef int _MAX_DEPTH = _shared.MAX_DEPTH
cdef int _TRACK_DEPTH = _shared.TRACK_DEPTH
cdef bint _LONGDOUBLE_IS_EXTENDED = _shared.LONGDOUBLE_IS_EXTENDED
# arrays at least this large are hashed without the GIL
cdef Py_ssize_t _NOGIL_BYTES = 1 << 16

cdef object _Prehashed = _shared.Prehashed
cdef object _resolve_type = _shared.resolve_type
cdef object _qualified_name = _shared.qualified_name
cdef object _unhashable = _shared.unhashable
cdef object _default_graph_attr = _shared._default_graph_attr
cdef object _graph_attr_rule = _shared.graph_attr_rule

cdef int KIND_RULE = _shared.KIND_RULE
cdef int KIND_KEY_METHOD = _shared.KIND_KEY_METHOD
cdef int KIND_REDUCE = _shared.KIND_REDUCE
cdef int KIND_SUBCLASS = _shared.KIND_SUBCLASS
cdef int KIND_ARRAY_SUBCLASS = _shared.KIND_ARRAY_SUBCLASS
cdef int KIND_NUMPY_SCALAR = _shared.KIND_NUMPY_SCALAR

cdef dict _TYPE_CACHE = {}
_shared.TYPE_CACHES.append(_TYPE_CACHE)


cdef inline int _check(int rc) except -1:
    if rc != 0:
        raise MemoryError("out of memory while fingerprinting")
    return 0


cdef inline int _put_str(tfc_sink* s, str text) except -1:
    cdef Py_ssize_t size
    cdef const char* data
    try:
        data = PyUnicode_AsUTF8AndSize(text, &size)
    except UnicodeEncodeError:
        # lone surrogates: the twin's "surrogatepass" bytes
        raw = text.encode("utf-8", "surrogatepass")
        _check(tfc_put_tag64(s, b"s", <uint64_t>PyBytes_GET_SIZE(raw)))
        return _check(tfc_put(s, PyBytes_AS_STRING(raw), <size_t>PyBytes_GET_SIZE(raw)))
    _check(tfc_put_tag64(s, b"s", <uint64_t>size))
    return _check(tfc_put(s, data, <size_t>size))


cdef inline int _put_data(tfc_sink* s, unsigned char tag, const unsigned char[::1] data) except -1:
    cdef size_t n = <size_t>data.shape[0]
    _check(tfc_put_tag64(s, tag, <uint64_t>n))
    if n == 0:
        return 0
    if n < <size_t>_NOGIL_BYTES:
        return _check(tfc_put(s, &data[0], n))
    cdef int rc
    with nogil:
        rc = tfc_put(s, &data[0], n)
    return _check(rc)


cdef int _put_big_int(tfc_sink* s, object value) except -1:
    cdef Py_ssize_t size = (value.bit_length() + 8) // 8
    cdef bytes raw = value.to_bytes(size, "little", signed=True)
    _check(tfc_put_tag64(s, b"I", <uint64_t>size))
    return _check(tfc_put(s, PyBytes_AS_STRING(raw), <size_t>size))


cdef inline bint _is_scalar(object obj) noexcept:
    cdef type tp = type(obj)
    return (tp is int or tp is float or tp is str or obj is None or tp is bool or tp is complex
            or tp is _Prehashed)


cdef inline int _put_scalar(tfc_sink* s, object obj) except -1:
    """Encode an object _is_scalar() accepts without any Python-level call: 1 if done, 0 if not."""
    cdef type tp = type(obj)
    cdef int overflow = 0
    cdef long long value
    cdef unsigned char buf[17]
    if tp is int:
        value = PyLong_AsLongLongAndOverflow(obj, &overflow)
        if overflow:
            _put_big_int(s, obj)
        else:
            _check(tfc_put_tag64(s, b"i", <uint64_t>value))
    elif tp is float:
        _check(tfc_put_tag64(s, b"f", tfc_double_bits(PyFloat_AS_DOUBLE(obj))))
    elif tp is str:
        _put_str(s, <str>obj)
    elif obj is None:
        buf[0] = b"N"
        _check(tfc_put(s, buf, 1))
    elif tp is bool:
        buf[0] = b"T" if obj is True else b"F"
        _check(tfc_put(s, buf, 1))
    elif tp is _Prehashed:
        digest = obj.digest
        if type(digest) is not bytes or PyBytes_GET_SIZE(digest) != 16:
            raise UnhashableKeyError(f"a Prehashed digest must be 16 bytes, not {digest!r}")
        buf[0] = b"H"
        _check(tfc_put(s, buf, 1))
        _check(tfc_put(s, PyBytes_AS_STRING(digest), 16))
    elif tp is complex:
        buf[0] = b"c"
        tfc_store_le64(buf + 1, tfc_double_bits(PyComplex_RealAsDouble(obj)))
        tfc_store_le64(buf + 9, tfc_double_bits(PyComplex_ImagAsDouble(obj)))
        _check(tfc_put(s, buf, 17))
    else:
        return 0
    return 1


cdef int LAYOUT_RAW = 0
cdef int LAYOUT_STRUCT = 1
cdef int LAYOUT_OBJECT = 2
# dtype -> (label, layout, NaN component width, byte-swapped): attribute lookups on a
# dtype cost more than hashing a small array
cdef dict _DTYPE_INFO = {}


cdef tuple _dtype_info(object dtype, type array_type):
    if dtype.char in "gG" and _LONGDOUBLE_IS_EXTENDED:
        raise _unhashable(array_type, f"dtype {dtype} has platform-specific padding; convert to float64")
    if dtype.fields is not None:
        info = ("struct", LAYOUT_STRUCT, 0, 0)
    elif dtype.hasobject:
        info = ("|O", LAYOUT_OBJECT, 0, 0)
    elif dtype.kind in "fc":
        info = (dtype.str, LAYOUT_RAW, dtype.itemsize // (2 if dtype.kind == "c" else 1), int(not dtype.isnative))
    else:
        info = (dtype.str, LAYOUT_RAW, 0, 0)
    if len(_DTYPE_INFO) >= 256:
        _DTYPE_INFO.clear()
    _DTYPE_INFO[dtype] = info
    return info


@cython.final
cdef class _Walker:
    """State of one fingerprint() call: the graph attribute rule and the cycle guard."""

    cdef object graph_attr
    cdef set active

    def __cinit__(self, object graph_attr):
        self.graph_attr = graph_attr

    cdef int encode(self, tfc_sink* s, object obj, int depth) except -1:
        cdef type tp
        if _put_scalar(s, obj):
            return 0
        tp = type(obj)
        if tp is bytes:
            return _put_bytes(s, <bytes>obj)
        if tp is bytearray:
            return _put_data(s, b"y", obj)
        if tp is cnp.ndarray and not (<cnp.ndarray>obj).dtype.hasobject:
            return self.encode_array(s, <cnp.ndarray>obj, depth)
        return self.encode_nested(s, obj, tp, depth)

    cdef int encode_nested(self, tfc_sink* s, object obj, type tp, int depth) except -1:
        cdef bint tracked = depth >= _TRACK_DEPTH
        cdef object key
        if depth >= _MAX_DEPTH:
            raise UnhashableKeyError(f"cannot fingerprint a value nested more than {_MAX_DEPTH} levels deep")
        if tracked:
            key = id(obj)
            if self.active is None:
                self.active = set()
            elif key in self.active:
                raise UnhashableKeyError(
                    f"cannot fingerprint a self-referencing {_qualified_name(tp)} (it contains itself)"
                )
            self.active.add(key)
        try:
            self.encode_container(s, obj, tp, depth + 1)
        finally:
            if tracked:
                self.active.discard(key)
        return 0

    cdef int encode_container(self, tfc_sink* s, object obj, type tp, int depth) except -1:
        cdef Py_ssize_t i, n
        cdef int kind
        if tp is tuple:
            n = PyTuple_GET_SIZE(obj)
            _check(tfc_put_tag64(s, b"t", <uint64_t>n))
            for i in range(n):
                self.encode(s, <object>PyTuple_GET_ITEM(obj, i), depth)
            return 0
        if tp is list:
            n = PyList_GET_SIZE(obj)
            _check(tfc_put_tag64(s, b"l", <uint64_t>n))
            i = 0
            while i < PyList_GET_SIZE(obj):
                self.encode(s, <object>PyList_GET_ITEM(obj, i), depth)
                i += 1
            if i != n:
                raise RuntimeError("list changed size during fingerprint()")
            return 0
        if tp is dict:
            return self.encode_dict(s, <dict>obj, depth)
        if tp is set or tp is frozenset:
            return self.encode_set(s, obj, b"S" if tp is set else b"Z", depth)
        if tp is cnp.ndarray:
            return self.encode_array(s, <cnp.ndarray>obj, depth)
        found = _TYPE_CACHE.get(tp)
        if found is None:
            found = _resolve_type(tp)
            _TYPE_CACHE[tp] = found
        kind = found[0]
        data = found[1]
        if kind == KIND_RULE:
            _put_tag(s, b"U")
            _put_str(s, _qualified_name(tp))
            return self.encode(s, data(obj), depth)
        if kind == KIND_KEY_METHOD:
            _put_tag(s, b"K")
            _put_str(s, _qualified_name(tp))
            return self.encode(s, obj.__fastcache_key__(), depth)
        if kind == KIND_REDUCE:
            tag, value = data(obj)
            _put_tag(s, b"R")
            _put_str(s, tag)
            return self.encode(s, value, depth)
        if kind == KIND_SUBCLASS:
            _put_tag(s, b"X")
            _put_str(s, _qualified_name(tp))
            return self.encode(s, data(obj), depth)
        if kind == KIND_ARRAY_SUBCLASS:
            _put_tag(s, b"X")
            _put_str(s, _qualified_name(tp))
            return self.encode_array(s, obj.view(np.ndarray), depth)
        if kind == KIND_NUMPY_SCALAR:
            _put_tag(s, b"n")
            return self.encode_array(s, np.asarray(obj), depth)
        return self.encode_graph(s, obj, depth)

    cdef int digest_of(self, unsigned char* out, object first, object second, int count, int depth) except -1:
        """xxh3_128 of the encodings of ``first`` (and ``second`` when count == 2) into out[0:16]."""
        cdef tfc_sink sub
        tfc_sink_init(&sub)
        try:
            self.encode(&sub, first, depth)
            if count == 2:
                self.encode(&sub, second, depth)
            tfc_digest(&sub, out)
        finally:
            tfc_sink_free(&sub)
        return 0

    cdef int put_sorted(self, tfc_sink* s, unsigned char tag, unsigned char* digests, Py_ssize_t n) except -1:
        if tag:
            _check(tfc_put_tag64(s, tag, <uint64_t>n))
        else:
            _check(_put_u64(s, <uint64_t>n))
        if n > 1:
            qsort(digests, <size_t>n, 16, tfc_cmp16)
        return _check(tfc_put(s, digests, <size_t>n * 16))

    cdef int encode_dict(self, tfc_sink* s, dict mapping, int depth) except -1:
        cdef unsigned char small[16 * 16]
        cdef unsigned char* digests = small
        cdef Py_ssize_t n = PyDict_Size(mapping), i = 0, pos = 0
        cdef PyObject* key
        cdef PyObject* value
        if n > 16:
            digests = <unsigned char*>malloc(<size_t>n * 16)
            if digests == NULL:
                raise MemoryError("out of memory while fingerprinting a dict")
        try:
            while PyDict_Next(mapping, &pos, &key, &value):
                if i >= n:
                    raise RuntimeError("dictionary changed size during fingerprint()")
                self.digest_of(digests + 16 * i, <object>key, <object>value, 2, depth)
                i += 1
            if i != n:
                raise RuntimeError("dictionary changed size during fingerprint()")
            self.put_sorted(s, b"d", digests, n)
        finally:
            if digests != small:
                free(digests)
        return 0

    cdef int encode_set(self, tfc_sink* s, object items, unsigned char tag, int depth) except -1:
        cdef Py_ssize_t n = len(items), i = 0
        cdef unsigned char* digests = <unsigned char*>malloc(<size_t>(n if n else 1) * 16)
        if digests == NULL:
            raise MemoryError("out of memory while fingerprinting a set")
        try:
            for item in items:
                if i >= n:
                    raise RuntimeError("set changed size during fingerprint()")
                self.digest_of(digests + 16 * i, item, None, 1, depth)
                i += 1
            if i != n:
                raise RuntimeError("set changed size during fingerprint()")
            self.put_sorted(s, tag, digests, n)
        finally:
            free(digests)
        return 0

    cdef int encode_array(self, tfc_sink* s, cnp.ndarray array, int depth) except -1:
        dtype = array.dtype
        cdef tfc_array desc
        cdef int ndim = cnp.PyArray_NDIM(array), d, rc, layout, fw, swap
        cdef Py_ssize_t nbytes
        info = _DTYPE_INFO.get(dtype)
        if info is None:
            info = _dtype_info(dtype, type(array))
        label, layout, fw, swap = info
        _put_tag(s, b"A")
        _put_str(s, label)
        _check(_put_u64(s, <uint64_t>ndim))
        for d in range(ndim):
            _check(_put_u64(s, <uint64_t>cnp.PyArray_DIM(array, d)))
        if layout == LAYOUT_STRUCT:
            names = dtype.names
            _check(_put_u64(s, <uint64_t>len(names)))
            for name in names:
                _put_str(s, name)
                self.encode_array(s, array[name], depth)
            return 0
        if layout == LAYOUT_OBJECT:
            for item in array.flat:
                self.encode(s, item, depth)
            return 0
        nbytes = cnp.PyArray_NBYTES(array)
        if nbytes == 0:
            return 0
        # aligned payloads let the NaN check share xxh3's loads (see tfc_acc_nan64)
        _check(tfc_put(s, _ZEROS, <size_t>((8 - s.total % 8) % 8)))
        desc.data = <const unsigned char*>cnp.PyArray_DATA(array)
        desc.ndim = ndim
        for d in range(ndim):
            desc.shape[d] = cnp.PyArray_DIM(array, d)
            desc.strides[d] = cnp.PyArray_STRIDE(array, d)
        desc.itemsize = <size_t>cnp.PyArray_ITEMSIZE(array)
        desc.nbytes = <size_t>nbytes
        desc.fw = fw
        desc.swap = swap
        if nbytes < _NOGIL_BYTES:
            rc = tfc_hash_array(s, &desc)
        else:
            with nogil:
                rc = tfc_hash_array(s, &desc)
        return _check(rc)

    cdef int encode_graph(self, tfc_sink* s, object graph, int depth) except -1:
        cdef bint directed = bool(graph.is_directed())
        cdef bint multigraph = bool(graph.is_multigraph())
        cdef unsigned char head[3]
        cdef unsigned char* digests = NULL
        cdef Py_ssize_t n, i = 0, cap
        head[0] = b"G"
        head[1] = directed
        head[2] = multigraph
        _check(tfc_put(s, head, 3))
        rule = self.graph_attr
        try:
            attrs = {key: value for key, value in graph.graph.items() if rule(key)}
            self.encode_dict(s, attrs, depth)
        except UnhashableKeyError as exc:
            raise UnhashableKeyError(
                f"{exc} [in a graph attribute; exclude it with fingerprint(..., graph_attrs=...)]"
            ) from None
        nodes = graph._node
        n = len(nodes)
        digests = <unsigned char*>malloc(<size_t>(n if n else 1) * 16)
        if digests == NULL:
            raise MemoryError("out of memory while fingerprinting a graph")
        try:
            for node, data in nodes.items():
                if i >= n:
                    raise RuntimeError("graph changed size during fingerprint()")
                self.digest_of(digests + 16 * i, node, data, 2, depth)
                i += 1
            if i != n:
                raise RuntimeError("graph changed size during fingerprint()")
            self.put_sorted(s, 0, digests, n)
        finally:
            free(digests)
        digests = NULL
        cap = 1024
        i = 0
        try:
            digests = <unsigned char*>malloc(<size_t>cap * 16)
            if digests == NULL:
                raise MemoryError("out of memory while fingerprinting a graph")
            seen = set()
            for u, neighbours in graph._adj.items():
                for v, entry in neighbours.items():
                    if not directed and v in seen:
                        continue
                    if multigraph:
                        for key, data in entry.items():
                            digests = _grow(digests, &cap, i)
                            self.edge_digest(digests + 16 * i, u, v, directed, True, key, data, depth)
                            i += 1
                    else:
                        digests = _grow(digests, &cap, i)
                        self.edge_digest(digests + 16 * i, u, v, directed, False, None, entry, depth)
                        i += 1
                if not directed:
                    seen.add(u)
            self.put_sorted(s, 0, digests, i)
        finally:
            free(digests)
        return 0

    cdef int edge_digest(self, unsigned char* out, object u, object v, bint directed, bint multigraph,
                         object key, object data, int depth) except -1:
        cdef tfc_sink sub
        cdef unsigned char ends[34]
        cdef unsigned char swap[16]
        tfc_sink_init(&sub)
        try:
            if directed:
                self.encode(&sub, u, depth)
                self.encode(&sub, v, depth)
            else:
                # undirected: the two endpoints' digests in sorted order
                ends[0] = b"H"
                ends[17] = b"H"
                self.digest_of(ends + 1, u, None, 1, depth)
                self.digest_of(ends + 18, v, None, 1, depth)
                if memcmp(ends + 1, ends + 18, 16) > 0:
                    memcpy(swap, ends + 1, 16)
                    memcpy(ends + 1, ends + 18, 16)
                    memcpy(ends + 18, swap, 16)
                _check(tfc_put(&sub, ends, 34))
            if multigraph:
                self.encode(&sub, key, depth)
            self.encode(&sub, data, depth)
            tfc_digest(&sub, out)
        finally:
            tfc_sink_free(&sub)
        return 0


cdef inline int _put_tag(tfc_sink* s, unsigned char tag) except -1:
    return _check(tfc_put(s, &tag, 1))


cdef inline int _put_bytes(tfc_sink* s, bytes data) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef const char* raw = PyBytes_AS_STRING(data)
    cdef int rc
    _check(tfc_put_tag64(s, b"b", <uint64_t>n))
    if n < _NOGIL_BYTES:
        return _check(tfc_put(s, raw, <size_t>n))
    # bytes are immutable: safe to read without the GIL
    with nogil:
        rc = tfc_put(s, raw, <size_t>n)
    return _check(rc)


cdef inline int _put_u64(tfc_sink* s, uint64_t value) noexcept nogil:
    cdef unsigned char buf[8]
    tfc_store_le64(buf, value)
    return tfc_put(s, buf, 8)


cdef unsigned char* _grow(unsigned char* digests, Py_ssize_t* cap, Py_ssize_t used) except NULL:
    cdef unsigned char* bigger
    if used < cap[0]:
        return digests
    bigger = <unsigned char*>realloc(digests, <size_t>cap[0] * 32)
    if bigger == NULL:
        raise MemoryError("out of memory while fingerprinting a graph")
    cap[0] *= 2
    return bigger


cdef int _put_flat_tuple(tfc_sink* s, object obj) except -1:
    """Encode a tuple of at most 16 scalars (no nesting to guard): 1 if done, 0 if not."""
    cdef Py_ssize_t n, i
    if type(obj) is not tuple:
        return 0
    n = PyTuple_GET_SIZE(obj)
    if n > 16:
        return 0
    for i in range(n):
        if not _is_scalar(<object>PyTuple_GET_ITEM(obj, i)):
            return 0
    _check(tfc_put_tag64(s, b"t", <uint64_t>n))
    for i in range(n):
        _put_scalar(s, <object>PyTuple_GET_ITEM(obj, i))
    return 1


cdef int _fingerprint_into(tuple objs, object graph_attrs, unsigned char* out) except -1:
    cdef tfc_sink sink
    cdef Py_ssize_t n = PyTuple_GET_SIZE(objs), i = 0
    cdef _Walker walker
    rule = _default_graph_attr if graph_attrs is None else _graph_attr_rule(graph_attrs)
    tfc_sink_init(&sink)
    try:
        _check(tfc_put(&sink, PyBytes_AS_STRING(_HEADER), <size_t>PyBytes_GET_SIZE(_HEADER)))
        _check(tfc_put_tag64(&sink, b"a", <uint64_t>n))
        # scalars and flat tuples of them (the decorator's argument tuples) first,
        # without creating a walker
        while i < n:
            obj = <object>PyTuple_GET_ITEM(objs, i)
            if not _put_scalar(&sink, obj) and not _put_flat_tuple(&sink, obj):
                break
            i += 1
        if i < n:
            walker = _Walker(rule)
            while i < n:
                walker.encode(&sink, <object>PyTuple_GET_ITEM(objs, i), 0)
                i += 1
        tfc_digest(&sink, out)
    finally:
        tfc_sink_free(&sink)
    return 0


def fingerprint(*objs, graph_attrs=None):
    """16-byte digest of ``objs``, stable across processes, runs and Python versions.

    Equal values give equal digests; the type is part of the value (``1``, ``1.0``,
    ``True``, ``"1"`` and ``b"1"`` all differ), dicts and sets are order-independent,
    arrays are digested by dtype, shape and content in logical order.

    Parameters
    ----------
    *objs
        The values to digest, as a sequence (``fingerprint(a, b) != fingerprint((a, b))``).
    graph_attrs : None, "all", "none", collection or callable, optional
        Which ``G.graph`` keys a networkx graph's digest includes; by default all but
        those starting with ``_`` and ``"history"``.

    Returns
    -------
    bytes
        16 bytes (xxh3_128, canonical big-endian).

    Raises
    ------
    UnhashableKeyError
        A value of a type with no digest rule, a self-referencing container, or nesting
        deeper than 200 levels.
    """
    cdef unsigned char out[16]
    _fingerprint_into(objs, graph_attrs, out)
    return PyBytes_FromStringAndSize(<char*>out, 16)


def fingerprint_hex(*objs, graph_attrs=None):
    """:func:`fingerprint` as 32 lowercase hex characters (disk and Redis entry names)."""
    cdef unsigned char out[16]
    cdef char text[32]
    cdef int i
    cdef const char* digits = b"0123456789abcdef"
    _fingerprint_into(objs, graph_attrs, out)
    for i in range(16):
        text[2 * i] = digits[out[i] >> 4]
        text[2 * i + 1] = digits[out[i] & 15]
    return PyUnicode_FromStringAndSize(text, 32)
