"""Frames written by format version 1, stored in this directory, must decode forever.

Each ``<name>.frame`` was written once by ``dumps(RECIPES[name][0](), **RECIPES[name][1])``.
The test decodes every stored file with the implementation in use and compares it with the
recipe's value; for the codecs whose bytes we control (none, lz4: vendored C and the pinned
python-lz4 block format) it also checks that today's ``dumps`` writes the very same bytes,
except for pickled values, whose stream depends on the Python and numpy versions.
"""

import pathlib

import numpy as np
import pytest

from tnfr_fastcache.serialize import dumps, frame_info, loads

HERE = pathlib.Path(__file__).parent


def ring_matrix():
    n = 64
    matrix = np.zeros((n, n))
    idx = np.arange(n)
    for k in (1, 2, 3):
        matrix[idx, (idx + k) % n] = matrix[(idx + k) % n, idx] = 0.4 + 0.6 * ((idx * k) % 17) / 17
    np.fill_diagonal(matrix, 1.0)
    return matrix


def dense_matrix():
    i, j = np.meshgrid(np.arange(48), np.arange(48), indexing="ij")
    return 0.4 + 0.6 * np.sin(i * 0.37 + j * 0.11) ** 2


RECIPES = {
    "v1_f8_sparse_lz4": (ring_matrix, {"compression": "lz4", "shuffle": False, "chunk_size": 4096}),
    "v1_f8_dense_lz4_shuffle": (dense_matrix, {"compression": "lz4", "shuffle": True, "chunk_size": 4096}),
    "v1_i2_fortran_none": (lambda: np.asfortranarray(np.arange(35, dtype="<i2").reshape(5, 7) - 17), {"compression": "none"}),
    "v1_f4_strided_lz4": (lambda: np.arange(600, dtype="<f4").reshape(20, 30)[::3, 1::2], {"compression": "lz4", "shuffle": True}),
    "v1_c16_bigendian_zstd": (lambda: (np.arange(300) * (1 + 2j)).astype(">c16"), {"compression": "zstd", "shuffle": True}),
    "v1_bool_gzip": (lambda: np.arange(1000) % 3 == 0, {"compression": "gzip"}),
    "v1_u8_0d_none": (lambda: np.array(2**63 + 5, dtype="<u8"), {"compression": "none"}),
    "v1_f8_empty_lz4": (lambda: np.zeros((0, 4)), {"compression": "lz4"}),
    "v1_bytes_lz4": (lambda: b"coherence " * 500, {"compression": "lz4"}),
    "v1_bytearray_none": (lambda: bytearray(range(256)), {"compression": "none"}),
    "v1_pickle_dict_lz4": (
        lambda: {"W": ring_matrix(), "meta": ["nodes", 64, (1.5, None)], "ids": np.arange(100, dtype="<i8")},
        {"compression": "lz4", "shuffle": "auto"},
    ),
}
BYTE_STABLE = {"none", "lz4"}


def assert_equal_values(result, expected):
    assert type(result) is type(expected)
    if isinstance(expected, np.ndarray):
        assert result.dtype.str == expected.dtype.str and result.shape == expected.shape
        np.testing.assert_array_equal(result, expected)
    elif isinstance(expected, dict):
        assert result.keys() == expected.keys()
        for key in expected:
            assert_equal_values(result[key], expected[key])
    else:
        assert result == expected


def test_every_recipe_has_its_stored_frame():
    assert sorted(p.stem for p in HERE.glob("*.frame")) == sorted(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_stored_frame_decodes(name):
    make, kwargs = RECIPES[name]
    stored = (HERE / f"{name}.frame").read_bytes()
    assert frame_info(stored)["version"] == 1
    assert_equal_values(loads(stored), make())


@pytest.mark.parametrize(
    "name", sorted(n for n, (_, kw) in RECIPES.items() if kw["compression"] in BYTE_STABLE and "pickle" not in n)
)
def test_todays_encoder_writes_the_stored_bytes(name):
    make, kwargs = RECIPES[name]
    assert bytes(dumps(make(), **kwargs)) == (HERE / f"{name}.frame").read_bytes()
