"""Type stubs for the compiled frame codec (twin: tnfr_fastcache._pure._frame)."""

from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from ._pure._frame import (
    ALLOWED_DTYPES as ALLOWED_DTYPES,
    ALLOWED_SHUFFLES as ALLOWED_SHUFFLES,
    DEFAULT_CHUNK_SIZE as DEFAULT_CHUNK_SIZE,
    KIND_BYTES as KIND_BYTES,
    KIND_NAMES as KIND_NAMES,
    KIND_NDARRAY as KIND_NDARRAY,
    KIND_PICKLE as KIND_PICKLE,
    MAGIC as MAGIC,
    MAX_CHUNK_SIZE as MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE as MIN_CHUNK_SIZE,
    VERSION as VERSION,
    FrameHeader as FrameHeader,
    as_frame_buffer as as_frame_buffer,
    pack_header as pack_header,
)
from .codecs import Codec

threads: int
THREAD_MIN_BYTES: int

def encode(
    kind: int,
    flags: int,
    dtype_str: str,
    shape: Sequence[int],
    sources: Sequence[np.ndarray],
    codecs: Sequence[Codec],
    shuffles: Sequence[int],
    levels: Sequence[Any],
    chunk_size: int = ...,
) -> memoryview: ...
def decode_segment(
    buffer: Any, header: FrameHeader, index: int, out: npt.NDArray[np.uint8], verify: bool = ...
) -> None: ...
def header_length(ndim: int, n_segments: int, n_chunks: int) -> int: ...
def parse_header(buffer: Any) -> FrameHeader: ...
def lz4_sizes(sample: Any, shuffle: int) -> tuple[int, int | None]: ...
def verify_chunks(buffer: Any, header: FrameHeader) -> None: ...
