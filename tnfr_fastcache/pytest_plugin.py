"""pytest plugin (entry point ``pytest11``): the ``fastcache`` fixture.

Expensive fixture data (a coherence matrix that takes minutes to build, say) is computed once
and kept on disk under pytest's cache directory, so later test and benchmark runs reuse it::

    def test_spectrum(fastcache, benchmark):
        W = fastcache.get_or_compute("coherence-8000", build_matrix, key=(8000, SEED, "v2"))
        benchmark(np.linalg.eigvalsh, W)

Changing ``key`` (a data version, a seed, a parameter) recomputes and replaces the stored value.
``pytest --fastcache-clear`` empties the cache; ``--fastcache-dir`` puts it elsewhere.
"""

import pytest

from .backends.base import MISSING
from .levels import CacheLevel

__all__ = ["FixtureCache"]


class FixtureCache:
    """A disk-backed store of named fixture values, each valid for one ``key``.

    Parameters
    ----------
    directory : path-like
        Where the values live (created if missing).
    compression : str
        Frame compression for stored values (``"auto"`` picks per value).
    """

    def __init__(self, directory, compression="auto"):
        from .backends.disk import CompressedPersistentCache
        from .keys import fingerprint

        self._fingerprint = fingerprint
        self._store = CompressedPersistentCache(directory, compression=compression)
        self.directory = directory

    @staticmethod
    def _dependency(name):
        return f"fastcache-fixture:{name}"

    def get_or_compute(self, name, compute, *, key=()):
        """Return the value stored as ``name`` for ``key``, computing and storing it on a miss.

        Parameters
        ----------
        name : str
            What the value is; one stored value per name.
        compute : callable
            Called with no arguments on a miss; its result is stored and returned.
        key : object
            Anything :func:`tnfr_fastcache.fingerprint` accepts. A different key than the
            stored one means the stored value is stale: it is removed and recomputed.
        """
        digest = self._fingerprint(name, key)
        value = self._store.get(digest, CacheLevel.GRAPH_STRUCTURE, default=MISSING)
        if value is MISSING:
            self._store.invalidate_by_dependency(self._dependency(name))
            value = compute()
            self._store.set(digest, value, CacheLevel.GRAPH_STRUCTURE, dependencies=(self._dependency(name),))
        return value

    def invalidate(self, name):
        """Remove what is stored as ``name``; return how many entries went."""
        return self._store.invalidate_by_dependency(self._dependency(name))

    def clear(self):
        """Remove every stored fixture value."""
        self._store.clear()

    def close(self):
        """Release the store's files."""
        self._store.close()


def pytest_addoption(parser):
    group = parser.getgroup("tnfr_fastcache")
    group.addoption("--fastcache-clear", action="store_true", help="empty the fastcache fixture store first")
    group.addoption("--fastcache-dir", default=None, help="directory of the fastcache fixture store")


@pytest.fixture(scope="session")
def fastcache(request):
    """A :class:`FixtureCache` under pytest's cache directory that survives between runs."""
    config = request.config
    directory = config.getoption("--fastcache-dir")
    if directory is None:
        if getattr(config, "cache", None) is None:
            raise pytest.UsageError("the fastcache fixture needs pytest's cacheprovider or --fastcache-dir")
        directory = config.cache.mkdir("tnfr_fastcache")
    store = FixtureCache(directory)
    if config.getoption("--fastcache-clear"):
        store.clear()
    yield store
    store.close()
