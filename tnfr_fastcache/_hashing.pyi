"""Type stubs for the compiled ``tnfr_fastcache._hashing`` (same API as ``_pure/_hashing.py``)."""

from typing import Any, Callable, Collection, Literal, Union

GraphAttrs = Union[None, Literal["all", "none"], Collection[Any], Callable[[Any], bool]]

DIGEST_VERSION: int

def fingerprint(*objs: Any, graph_attrs: GraphAttrs = None) -> bytes: ...
def fingerprint_hex(*objs: Any, graph_attrs: GraphAttrs = None) -> str: ...
