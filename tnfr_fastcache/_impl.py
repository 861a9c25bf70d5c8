"""Chooses the compiled Cython modules or their pure-Python twins, once, at import.

``TNFR_FASTCACHE_PUREPYTHON=1`` forces the twins. Otherwise the compiled module is used
when it imports; if it does not (no compiler at install time), the twin is used, unless
``TNFR_FASTCACHE_REQUIRE_COMPILED=1`` (set by CI) turns that into an ImportError.
"""

import importlib
import os

PUREPYTHON = os.environ.get("TNFR_FASTCACHE_PUREPYTHON", "") not in ("", "0")
REQUIRE_COMPILED = os.environ.get("TNFR_FASTCACHE_REQUIRE_COMPILED", "") not in ("", "0")


def load(name):
    """Return the implementation module ``name`` (``"_frame"``, ``"_hashing"`` or ``"_lru"``)."""
    if not PUREPYTHON:
        try:
            return importlib.import_module(f"tnfr_fastcache.{name}")
        except ImportError:
            if REQUIRE_COMPILED:
                raise
    return importlib.import_module(f"tnfr_fastcache._pure.{name}")


def load_both(name):
    """Return ``(compiled, pure)`` for twin tests; compiled is None when it is not built."""
    pure = importlib.import_module(f"tnfr_fastcache._pure.{name}")
    try:
        compiled = importlib.import_module(f"tnfr_fastcache.{name}")
    except ImportError:
        if REQUIRE_COMPILED:
            raise
        compiled = None
    return compiled, pure


def implementation():
    """``"cython"`` when every compiled module is in use, else ``"python"``."""
    names = ("_frame", "_hashing", "_lru")
    modules = [load(name) for name in names]
    compiled = all(not m.__name__.startswith("tnfr_fastcache._pure.") for m in modules)
    return "cython" if compiled else "python"


def describe():
    """``{"_frame": "cython" | "python" | "not importable: ...", ...}`` for test headers and bug reports."""
    found = {}
    for name in ("_frame", "_hashing", "_lru"):
        try:
            module = load(name)
        except ImportError as exc:
            found[name] = f"not importable: {exc}"
        else:
            found[name] = "python" if module.__name__.startswith("tnfr_fastcache._pure.") else "cython"
    return found
