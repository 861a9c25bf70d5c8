"""Codec interface and registry: the block compressors a frame's chunks can use.

A codec is a tiny object (numcodecs style): ``codec_id`` (the byte stored in frames,
fixed forever by docs/FORMAT.md), ``name``, ``compress(chunk, level)`` and
``decompress_into(data, out)``. Every chunk is compressed independently, so chunks can be
verified and decoded one at a time and in parallel.

The compiled frame codec runs ``none`` and ``lz4`` in C (vendored lz4 1.9.4, the same
block format and bytes as python-lz4 4.4.5); ``gzip`` and ``zstd`` always go through the
objects below (zlib and zstandard release the GIL themselves).
"""

import zlib

import lz4.block
import zstandard

from .errors import FrameError, InvalidArgumentError

__all__ = ["Codec", "get_codec", "codec_names", "CODEC_IDS"]


class Codec:
    """One block compressor.

    Attributes
    ----------
    codec_id : int
        The byte that names this codec inside a frame (docs/FORMAT.md).
    name : str
        The name accepted by ``dumps(compression=...)``.
    max_ratio : int
        The largest raw/stored size ratio a genuine chunk can have; a frame claiming more
        is refused before anything is allocated (decompression-bomb guard).
    default_level : int or None
        The level used when ``dumps`` gets ``level=None``.
    """

    codec_id = -1
    name = ""
    max_ratio = 1
    default_level = None
    # (lowest, highest) accepted level, both inclusive; None: the codec takes no level.
    level_range = None
    level_meaning = "level"

    def check_level(self, level):
        """Return the level to use for ``level`` (``None`` means the default).

        Raises
        ------
        InvalidArgumentError
            If this codec does not accept ``level``.
        """
        if self.level_range is None:
            if level is not None:
                raise InvalidArgumentError(f"compression={self.name!r} takes no level, got level={level!r}")
            return None
        level = self.default_level if level is None else level
        lo, hi = self.level_range
        if not isinstance(level, int) or isinstance(level, bool) or not lo <= level <= hi:
            raise InvalidArgumentError(f"{self.name} {self.level_meaning} must be an int in {lo}..{hi}, got {level!r}")
        return level

    def compress(self, chunk, level):
        """Return the compressed bytes of ``chunk`` (a contiguous byte buffer)."""
        raise NotImplementedError

    def decompress_into(self, data, out):
        """Decompress ``data`` into the writeable byte buffer ``out``, filling it exactly.

        Raises
        ------
        FrameError
            If ``data`` is not a valid stream of this codec or does not decode to exactly
            ``len(out)`` bytes.
        """
        raise NotImplementedError

    def __repr__(self):
        return f"<Codec {self.name!r} id={self.codec_id}>"


class NoCodec(Codec):
    """Stores chunks as they are (after the optional shuffle)."""

    codec_id = 0
    name = "none"
    max_ratio = 1

    def compress(self, chunk, level):
        return chunk

    def decompress_into(self, data, out):
        if len(data) != len(out):
            raise FrameError(f"stored chunk has {len(data)} bytes, expected {len(out)}")
        memoryview(out).cast("B")[:] = data


class LZ4Codec(Codec):
    """LZ4 block format (no frame header), as ``LZ4_compress_fast``.

    ``level`` is LZ4's acceleration factor (1, the default, compresses best; larger values
    are faster and compress less), because the vendored lz4 has no high-compression mode.
    """

    codec_id = 1
    name = "lz4"
    # A 64 MiB chunk of zeros compresses 255x; nothing genuine does better.
    max_ratio = 256
    default_level = 1
    level_range = (1, 65537)
    level_meaning = "level (acceleration)"

    def compress(self, chunk, level):
        return lz4.block.compress(chunk, mode="fast", acceleration=level, store_size=False)

    def decompress_into(self, data, out):
        try:
            raw = lz4.block.decompress(data, uncompressed_size=len(out))
        except lz4.block.LZ4BlockError as exc:
            raise FrameError(f"corrupt lz4 chunk: {exc}") from None
        if len(raw) != len(out):
            raise FrameError(f"lz4 chunk decoded to {len(raw)} bytes, expected {len(out)}")
        memoryview(out).cast("B")[:] = raw


class GzipCodec(Codec):
    """DEFLATE in a gzip member per chunk (zlib, ``wbits=31``); default level 6.

    Slow (30-40 MB/s on dense floats), kept for compatibility with the seed's choice; the
    ``"auto"`` compression never picks it.
    """

    codec_id = 2
    name = "gzip"
    max_ratio = 1100
    default_level = 6
    level_range = (0, 9)

    def compress(self, chunk, level):
        compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
        return compressor.compress(chunk) + compressor.flush()

    def decompress_into(self, data, out):
        decompressor = zlib.decompressobj(31)
        try:
            raw = decompressor.decompress(data, len(out))
        except zlib.error as exc:
            raise FrameError(f"corrupt gzip chunk: {exc}") from None
        if len(raw) != len(out) or not decompressor.eof or decompressor.unconsumed_tail or decompressor.unused_data:
            raise FrameError(f"gzip chunk does not decode to exactly {len(out)} bytes")
        memoryview(out).cast("B")[:] = raw


class ZstdCodec(Codec):
    """Zstandard frames (zstandard package), default level 1: the best ratio on sparse matrices."""

    codec_id = 3
    name = "zstd"
    # 128 KiB zstd blocks of one repeated byte cost 4 bytes each: 32768x at most.
    max_ratio = 33000
    default_level = 1
    # Negative levels are zstd's fast modes; 0 would mean "zstd's default" and store the same.
    level_range = (-(1 << 17), zstandard.MAX_COMPRESSION_LEVEL)

    def compress(self, chunk, level):
        return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(chunk)

    def decompress_into(self, data, out):
        try:
            params = zstandard.get_frame_parameters(data)
        except zstandard.ZstdError as exc:
            raise FrameError(f"corrupt zstd chunk: {exc}") from None
        if params.content_size != len(out):
            raise FrameError(f"zstd chunk declares {params.content_size} bytes, expected {len(out)}")
        target = memoryview(out).cast("B")
        filled = 0
        # Streaming straight into `out` skips the intermediate bytes object (1.8x faster).
        try:
            with zstandard.ZstdDecompressor().stream_reader(data) as reader:
                while filled < len(target):
                    count = reader.readinto(target[filled:])
                    if not count:
                        break
                    filled += count
        except zstandard.ZstdError as exc:
            raise FrameError(f"corrupt zstd chunk: {exc}") from None
        if filled != len(target):
            raise FrameError(f"zstd chunk decoded to {filled} bytes, expected {len(target)}")


_CODECS = [NoCodec(), LZ4Codec(), GzipCodec(), ZstdCodec()]
_BY_NAME = {codec.name: codec for codec in _CODECS}
_BY_ID = {codec.codec_id: codec for codec in _CODECS}
CODEC_IDS = {codec.name: codec.codec_id for codec in _CODECS}


def codec_names():
    """Return the names ``dumps(compression=...)`` accepts besides ``"auto"``."""
    return tuple(_BY_NAME)


def get_codec(name_or_id):
    """Return the codec named ``name_or_id`` (a name such as ``"lz4"`` or a frame codec id).

    Raises
    ------
    InvalidArgumentError
        For an unknown name.
    FrameError
        For an unknown id (ids only come from frames).
    """
    if isinstance(name_or_id, str):
        try:
            return _BY_NAME[name_or_id]
        except KeyError:
            raise InvalidArgumentError(
                f"unknown compression {name_or_id!r}; expected one of {', '.join(('auto',) + codec_names())}"
            ) from None
    try:
        return _BY_ID[name_or_id]
    except (KeyError, TypeError):
        raise FrameError(f"unknown codec id {name_or_id!r} in frame") from None
