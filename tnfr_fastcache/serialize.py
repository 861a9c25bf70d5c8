"""Any value <-> one self-describing, checksummed frame (docs/FORMAT.md).

numpy arrays of numeric and bool dtypes are framed straight from their own memory and
decoded straight into a fresh array (or ``out=``). ``bytes``/``bytearray``/``memoryview`` are
framed raw. Everything else goes through pickle protocol 5 with out-of-band buffers, so
arrays nested in dicts, lists or scipy sparse matrices are framed without an extra copy.

``compression="auto"`` and ``shuffle="auto"`` decide per value (and per out-of-band buffer)
from a 16 KiB sample (four 4 KiB windows, so deciding stays cheap for small arrays too): byte
shuffle only where it makes LZ4 smaller (dense floats, not sparse matrices), LZ4 unless the
sample does not compress at all, never gzip.
"""

import pickle

import numpy as np

from . import _impl
from ._pure._frame import (
    ALLOWED_DTYPES,
    DEFAULT_CHUNK_SIZE,
    FLAG_FORTRAN,
    KIND_BYTES,
    KIND_NAMES,
    KIND_NDARRAY,
    KIND_PICKLE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    RAW_TYPE_SHIFT,
    RAW_TYPES,
    as_frame_buffer,
)
from .codecs import codec_names, get_codec
from .errors import FrameError, InvalidArgumentError

__all__ = ["dumps", "loads", "frame_info", "verify_frame"]

_frame = _impl.load("_frame")

SAMPLE_WINDOWS = 4
SAMPLE_WINDOW_BYTES = 4 << 10
# Below this sampled ratio LZ4 is not worth its time: store the bytes as they are.
AUTO_MIN_RATIO = 1.05


def _sample(source):
    """Up to SAMPLE_WINDOWS evenly spaced windows of ``source``'s C-order bytes, concatenated.

    A C-contiguous array (of any dtype) whose bytes are the sample; ``_frame.lz4_sizes`` takes it.
    """
    itemsize = source.itemsize
    nbytes = source.nbytes
    window = SAMPLE_WINDOW_BYTES
    if nbytes <= window * SAMPLE_WINDOWS:
        # lz4_sizes reads a C-contiguous array's bytes as they are: no reshaped view needed.
        return source if source.flags.c_contiguous else np.ascontiguousarray(source)
    step = (nbytes - window) // (SAMPLE_WINDOWS - 1) // 16 * 16
    if source.flags.c_contiguous:
        flat = source.reshape(-1).view(np.uint8)
        parts = [flat[i * step : i * step + window] for i in range(SAMPLE_WINDOWS)]
    else:
        per = window // itemsize
        parts = [
            np.ascontiguousarray(source.flat[i * step // itemsize : i * step // itemsize + per]).view(np.uint8)
            for i in range(SAMPLE_WINDOWS)
        ]
    return np.concatenate(parts)


def _choose(source, element_size, compression, shuffle):
    """Return ``(codec, shuffle_size)`` for one segment whose elements are ``element_size`` bytes."""
    if element_size not in (2, 4, 8, 16):
        element_size = 0
    decide_shuffle = shuffle == "auto" and element_size and compression != "none"
    shuffle_size = element_size if shuffle is True else 0
    if compression != "auto" and not decide_shuffle:
        return get_codec(compression), shuffle_size
    if source.nbytes == 0:
        return get_codec("none" if compression == "auto" else compression), 0
    sample = _sample(source)
    plain, shuffled = _frame.lz4_sizes(sample, element_size if decide_shuffle else shuffle_size)
    best = plain
    if decide_shuffle:
        if shuffled < plain:
            shuffle_size, best = element_size, shuffled
    elif shuffle_size:
        best = shuffled
    if compression != "auto":
        return get_codec(compression), shuffle_size
    if sample.nbytes < AUTO_MIN_RATIO * best:
        return get_codec("none"), 0
    return get_codec("lz4"), shuffle_size


def _check_arguments(compression, shuffle, chunk_size):
    if compression != "auto" and compression not in codec_names():
        raise InvalidArgumentError(
            f"compression must be one of {', '.join(('auto',) + codec_names())}, not {compression!r}"
        )
    if shuffle not in ("auto", True, False) or isinstance(shuffle, int) and not isinstance(shuffle, bool):
        raise InvalidArgumentError(f"shuffle must be 'auto', True or False, not {shuffle!r}")
    if (
        not isinstance(chunk_size, int)
        or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
        or chunk_size & (chunk_size - 1)
    ):
        raise InvalidArgumentError(
            f"chunk_size must be a power of two in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}], not {chunk_size!r}"
        )


def _is_frameable_array(value):
    return type(value) is np.ndarray and value.dtype.str in ALLOWED_DTYPES and value.dtype.fields is None


def dumps(value, *, compression="lz4", shuffle="auto", level=None, chunk_size=DEFAULT_CHUNK_SIZE):
    """Serialize ``value`` into one checksummed frame.

    Parameters
    ----------
    value : object
        A numeric or bool ``numpy.ndarray`` (any shape and memory layout) is framed from
        its own memory; ``bytes``, ``bytearray`` and ``memoryview`` are framed raw; anything
        else is pickled (protocol 5, arrays inside it framed out-of-band).
    compression : {"lz4", "none", "gzip", "zstd", "auto"}
        The chunk codec. ``"auto"`` picks per value (and per nested array): LZ4, or no
        compression when a sample does not compress; never gzip.
    shuffle : {"auto", True, False}
        Byte shuffle by element size before the codec. ``"auto"`` shuffles only when it
        makes a sample compress better (dense floats yes, sparse matrices no). When
        ``compression="auto"`` stores a value uncompressed, it does not shuffle it either.
    level : int, optional
        Codec level: LZ4 acceleration (>= 1, default 1), gzip 0-9 (default 6), zstd
        (default 1). ``"none"`` and ``"auto"`` take none.
    chunk_size : int
        Raw bytes per independently compressed and checksummed chunk (power of two,
        4 KiB to 64 MiB; default 1 MiB).

    Returns
    -------
    memoryview
        Read-only bytes of the frame (over a numpy buffer; ``bytes(buf)`` copies it out).

    Notes
    -----
    Nothing is copied whole: a contiguous array (C or Fortran) is compressed straight from
    its memory; a non-contiguous one is gathered one chunk at a time. A strided
    ``memoryview`` is the exception: it is copied to ``bytes`` first.

    Raises
    ------
    InvalidArgumentError
        For an unknown compression, shuffle, level or chunk size.
    """
    _check_arguments(compression, shuffle, chunk_size)
    if compression == "auto" and level is not None:
        raise InvalidArgumentError(f"compression='auto' picks its own codec and takes no level, got level={level!r}")

    if _is_frameable_array(value):
        if value.ndim >= 2 and value.flags.f_contiguous and not value.flags.c_contiguous:
            flags, source = FLAG_FORTRAN, value.T
        else:
            flags, source = 0, value
        codec, shuffle_size = _choose(source, value.itemsize, compression, shuffle)
        return _frame.encode(
            KIND_NDARRAY,
            flags,
            value.dtype.str,
            value.shape,
            [source],
            [codec],
            [shuffle_size],
            [codec.check_level(level)],
            chunk_size,
        )

    if type(value) in (bytes, bytearray, memoryview):
        raw_type = RAW_TYPES.index(type(value).__name__)
        if isinstance(value, memoryview):
            # The one copy on this path: a strided memoryview has no flat bytes to stream.
            value = value.cast("B") if value.c_contiguous else value.tobytes()
        source = np.frombuffer(value, np.uint8)
        codec, shuffle_size = _choose(source, 1, compression, shuffle)
        return _frame.encode(
            KIND_BYTES, raw_type << RAW_TYPE_SHIFT, "", (), [source], [codec], [0], [codec.check_level(level)], chunk_size
        )

    buffers = []

    def out_of_band(buffer):
        view = memoryview(buffer)
        if not (view.c_contiguous or view.f_contiguous):
            return True
        buffers.append(view)
        return False

    stream = pickle.dumps(value, protocol=5, buffer_callback=out_of_band)
    sources, codecs, shuffles, levels = [], [], [], []
    for index, item in enumerate([stream] + buffers):
        source = np.frombuffer(item if index == 0 else pickle.PickleBuffer(item).raw(), np.uint8)
        element_size = 1 if index == 0 else item.itemsize
        codec, shuffle_size = _choose(source, element_size, compression, shuffle)
        sources.append(source)
        codecs.append(codec)
        shuffles.append(shuffle_size)
        levels.append(codec.check_level(level))
    return _frame.encode(KIND_PICKLE, 0, "", (), sources, codecs, shuffles, levels, chunk_size)


def _all_raw(header, segment):
    chunks = header.stored[segment.first_chunk : segment.first_chunk + segment.n_chunks]
    return not segment.shuffle and sum(chunks) == segment.raw_len


def _decode_into(buffer, header, index, out, verify):
    _frame.decode_segment(buffer, header, index, out, verify)


_UINT8 = np.dtype(np.uint8)


def _bytes_view(array, order):
    # ravel of an array contiguous in ``order`` is a view; a dtype object saves view() a lookup.
    return array.ravel(order).view(_UINT8) if array.size else np.empty(0, np.uint8)


def _load_array(buffer, header, out, view, verify):
    segment = header.segments[0]
    order = header.order
    if view and out is None and _all_raw(header, segment):
        if segment.raw_len == 0:
            result = np.empty(header.shape, header.dtype, order=order)
        else:
            count = segment.raw_len // header.dtype.itemsize
            frame = as_frame_buffer(buffer)
            result = np.frombuffer(frame, header.dtype, count, header.payload_offset).reshape(header.shape, order=order)
        result.flags.writeable = False
        return result
    if out is not None:
        if not isinstance(out, np.ndarray):
            raise InvalidArgumentError(f"out must be a numpy array, not {type(out).__name__}")
        if out.shape != header.shape or out.dtype != header.dtype or out.dtype.str != header.dtype.str:
            raise InvalidArgumentError(
                f"out has shape {out.shape} and dtype {out.dtype.str}, the frame holds {header.shape} {header.dtype.str}"
            )
        if not out.flags.writeable:
            raise InvalidArgumentError("out is read-only")
        direct = out.flags.c_contiguous if order == "C" else out.flags.f_contiguous
        target = out if direct else np.empty(header.shape, header.dtype, order=order)
    else:
        target = np.empty(header.shape, header.dtype, order=order)
    _decode_into(buffer, header, 0, _bytes_view(target, order), verify)
    if target is not out and out is not None:
        out[...] = target
        return out
    return target


def _load_bytes(buffer, header, out, view, verify):
    segment = header.segments[0]
    if view and out is None and _all_raw(header, segment):
        return as_frame_buffer(buffer)[header.payload_offset :].toreadonly()
    if out is not None:
        try:
            target = memoryview(out)
        except TypeError:
            raise InvalidArgumentError(f"out must be a writeable buffer, not {type(out).__name__}") from None
        if target.readonly or not target.c_contiguous or target.nbytes != segment.raw_len:
            raise InvalidArgumentError(f"out must be a writeable contiguous buffer of {segment.raw_len} bytes")
        _decode_into(buffer, header, 0, np.frombuffer(target.cast("B"), np.uint8) if segment.raw_len else np.empty(0, np.uint8), verify)
        return out
    raw_type = header.raw_type
    if raw_type == "bytearray":
        result = bytearray(segment.raw_len)
        _decode_into(buffer, header, 0, np.frombuffer(result, np.uint8), verify)
        return result
    array = np.empty(segment.raw_len, np.uint8)
    _decode_into(buffer, header, 0, array, verify)
    return array.tobytes() if raw_type == "bytes" else memoryview(array)


def _load_pickle(buffer, header, out, verify):
    if out is not None:
        raise InvalidArgumentError("out= only applies to array and bytes frames; this frame holds a pickled object")
    parts = []
    for index, segment in enumerate(header.segments):
        part = np.empty(segment.raw_len, np.uint8)
        _decode_into(buffer, header, index, part, verify)
        parts.append(part)
    try:
        return pickle.loads(parts[0], buffers=parts[1:])
    except Exception as exc:
        raise FrameError(f"the frame's pickled object cannot be loaded: {type(exc).__name__}: {exc}") from exc


def loads(buffer, *, out=None, view=False, verify=True):
    """Decode a frame made by :func:`dumps`.

    Parameters
    ----------
    buffer : bytes-like
        The whole frame (bytes, bytearray, memoryview, mmap, numpy uint8 array, ...).
    out : ndarray or writeable buffer, optional
        For an array frame, an array of the same shape and dtype to fill (decoded straight
        into it when its layout matches the frame's order); for a bytes frame, a writeable
        buffer of the same length. Returned.
    view : bool
        For an array or bytes frame whose chunks are all stored uncompressed and
        unshuffled, return a read-only view of ``buffer`` instead of a copy (the header is
        checked, the payload checksums are not). Other frames decode normally.
    verify : bool
        Check every chunk checksum (the header checksum is always checked).

    Returns
    -------
    object
        A fresh writeable array equal in dtype, shape and content (or ``out``), the bytes
        value with its original type, or the unpickled object.

    Raises
    ------
    FrameError
        For a truncated, malformed or forged frame (``ChecksumError`` for corruption).
    InvalidArgumentError
        When ``out`` does not fit the frame.
    """
    header = _frame.parse_header(buffer)
    if header.kind == KIND_NDARRAY:
        return _load_array(buffer, header, out, view, verify)
    if header.kind == KIND_BYTES:
        return _load_bytes(buffer, header, out, view, verify)
    return _load_pickle(buffer, header, out, verify)


def frame_info(buffer):
    """Return the parsed header of a frame without decoding its payload.

    Returns
    -------
    dict
        ``version``, ``kind`` ("ndarray", "bytes" or "pickle"), ``codec`` (name, or
        "mixed" when segments differ), ``shuffle`` (bool, any segment), ``dtype`` (e.g.
        "<f8") and ``shape`` and ``order`` (arrays, else None), ``raw_nbytes``,
        ``stored_nbytes`` (the whole frame), ``payload_nbytes``, ``header_nbytes``,
        ``chunk_size``, ``n_chunks`` and ``segments`` (a list of dicts with ``raw_nbytes``,
        ``codec``, ``shuffle`` (element size, 0 for none) and ``n_chunks``).

    Raises
    ------
    FrameError
        When the header is malformed or its checksum does not match.
    """
    header = _frame.parse_header(buffer)
    codecs = {segment.codec.name for segment in header.segments}
    is_array = header.kind == KIND_NDARRAY
    return {
        "version": _frame.VERSION,
        "kind": KIND_NAMES[header.kind],
        "codec": codecs.pop() if len(codecs) == 1 else "mixed",
        "shuffle": any(segment.shuffle for segment in header.segments),
        "dtype": header.dtype.str if is_array else None,
        "shape": header.shape if is_array else None,
        "order": header.order if is_array else None,
        "raw_nbytes": header.raw_len,
        "stored_nbytes": header.payload_offset + header.payload_len,
        "payload_nbytes": header.payload_len,
        "header_nbytes": header.payload_offset,
        "chunk_size": header.chunk_size,
        "n_chunks": len(header.stored),
        "segments": [
            {
                "raw_nbytes": segment.raw_len,
                "codec": segment.codec.name,
                "shuffle": segment.shuffle,
                "n_chunks": segment.n_chunks,
            }
            for segment in header.segments
        ],
    }


def verify_frame(buffer):
    """Check a frame's header and every chunk checksum without decoding it.

    Raises
    ------
    FrameError
        When the header is malformed; ``ChecksumError`` when the header or a chunk is
        corrupt (the message names the chunk).
    """
    header = _frame.parse_header(buffer)
    _frame.verify_chunks(buffer, header)
