"""Declares the Cython extensions; all metadata lives in pyproject.toml.

``CYTHON_TRACE=1`` in the environment builds with line tracing (coverage, profilers)
and writes the annotated HTML next to each ``.pyx``. ``TNFR_FASTCACHE_BUILD_ONLY=_lru,_frame``
builds just those extensions (``python setup.py build_ext --inplace`` while working on one).
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

TRACE = os.environ.get("CYTHON_TRACE") == "1"
VENDOR = os.path.join("tnfr_fastcache", "_vendor")

macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if TRACE:
    macros += [("CYTHON_TRACE_NOGIL", "1")]
common = dict(
    include_dirs=[numpy.get_include(), os.path.join(VENDOR, "xxhash"), os.path.join(VENDOR, "lz4")],
    define_macros=macros,
    extra_compile_args=["-O3"],
)

extensions = [
    Extension(
        "tnfr_fastcache._frame",
        ["tnfr_fastcache/_frame.pyx", os.path.join(VENDOR, "lz4", "lz4.c")],
        **common,
    ),
    Extension("tnfr_fastcache._hashing", ["tnfr_fastcache/_hashing.pyx"], **common),
    Extension("tnfr_fastcache._lru", ["tnfr_fastcache/_lru.pyx"], **common),
]

only = [name for name in os.environ.get("TNFR_FASTCACHE_BUILD_ONLY", "").split(",") if name]
if only:
    extensions = [ext for ext in extensions if ext.name.rsplit(".", 1)[1] in only]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "embedsignature": True, "linetrace": TRACE},
        annotate=TRACE,
    )
)
