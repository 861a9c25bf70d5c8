"""Stable content fingerprints of call arguments: the keys every cache tier stores under.

``fingerprint(*objs)`` is a 16-byte xxh3_128 digest of a canonical encoding of the values
(scheme version :data:`DIGEST_VERSION`, part of every digest). It is the same in every
process and on every run; the compiled and pure-Python implementations agree byte for byte.
Disk and Redis name entries by :func:`fingerprint_hex`.
"""

from ._impl import load
from ._pure._hashing import DIGEST_VERSION, Prehashed, register_fingerprint

__all__ = ["DIGEST_VERSION", "Prehashed", "fingerprint", "fingerprint_hex", "register_fingerprint"]

_implementation = load("_hashing")

fingerprint = _implementation.fingerprint
fingerprint_hex = _implementation.fingerprint_hex
