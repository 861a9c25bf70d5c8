"""Shared data for every benchmark: TNFR-like coherence matrices.

TNFR's coherence matrix W has w_ij = 0.4 + 0.6 * similarity(i, j) of the nodes' phase, EPI,
structural frequency and sense index, and a diagonal of 1. With TNFR's default neighbour
scope only graph edges carry a weight (``kind="sparse"``: zeros elsewhere, ~10 neighbours a
node); the all-pairs scope fills the matrix (``kind="dense"``).
"""

import functools

import numpy as np
import pytest

SIZES = (100, 1000, 4000)


@functools.lru_cache(maxsize=8)
def _coherence_matrix(n, kind, seed):
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 2 * np.pi, n)
    epi = rng.uniform(0, 1, n)
    vf = rng.uniform(0, 1, n)
    si = rng.uniform(0, 1, n)

    def similarity(i, j):
        s_phase = 0.5 * (1 + np.cos(theta[i] - theta[j]))
        return 0.25 * (s_phase + (1 - abs(epi[i] - epi[j])) + (1 - abs(vf[i] - vf[j])) + (1 - abs(si[i] - si[j])))

    if kind == "dense":
        i = np.arange(n)[:, None]
        j = np.arange(n)[None, :]
        w = 0.4 + 0.6 * similarity(i, j)
    elif kind == "sparse":
        # Watts-Strogatz-like: a ring of 5 neighbours each side, 10% rewired at random.
        k = 5
        src = np.repeat(np.arange(n), k)
        dst = (src + np.tile(np.arange(1, k + 1), n)) % n
        rewire = rng.random(src.size) < 0.1
        dst[rewire] = rng.integers(0, n, rewire.sum())
        keep = src != dst
        src, dst = src[keep], dst[keep]
        w = np.zeros((n, n))
        weights = 0.4 + 0.6 * similarity(src, dst)
        w[src, dst] = weights
        w[dst, src] = weights
    else:
        raise ValueError(f"kind must be 'sparse' or 'dense', not {kind!r}")
    np.fill_diagonal(w, 1.0)
    w.flags.writeable = False
    return w


def coherence_matrix(n, kind="sparse", seed=0):
    """Return an ``n`` x ``n`` float64 TNFR-like coherence matrix (read-only; copy to mutate)."""
    return _coherence_matrix(int(n), kind, int(seed))


@pytest.fixture(scope="session")
def make_matrix():
    """The generator as a fixture: ``make_matrix(1000, "sparse")``."""
    return coherence_matrix
