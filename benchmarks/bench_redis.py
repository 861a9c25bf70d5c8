"""Redis tier: our RedisCache next to the seed's pickle-everything sketch and raw redis-py.

Every subject talks to the same redis-server (started here on a free 127.0.0.1 port, no
persistence) through redis-py on loopback. Groups:

- ``redis-set+get-<size>-<kind>``: one set and one get of a coherence matrix (8 MB and
  128 MB, sparse and dense). Raw redis-py is ``SET k arr.tobytes()`` and
  ``np.frombuffer(GET k)``; the seed pickles the array.
- ``redis-get-small``: a hit on a 10-float array against a raw ``GET`` of its 80 bytes.

Goals (issue 6): sparse set+get at least 4x faster than raw; dense at most 1.2x raw; small
get within 1.3x of a raw GET round trip.
"""

import os
import pickle
import sys
import uuid

import numpy as np
import pytest

redis = pytest.importorskip("redis")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from redis_server import RedisServer  # noqa: E402  (tests/ holds the one server controller)

from tnfr_fastcache import CacheLevel  # noqa: E402
from tnfr_fastcache.backends.redis import RedisCache  # noqa: E402

D = CacheLevel.DERIVED_METRICS
MATRICES = [(1000, "sparse"), (1000, "dense"), (4000, "sparse"), (4000, "dense")]


class SeedRedisCache:
    """The seed's sketch: every value pickled whole into one key, read back with pickle."""

    def __init__(self, client, key_prefix="tnfr:seed:"):
        self.client = client
        self.key_prefix = key_prefix

    def _key(self, key, level):
        return f"{self.key_prefix}{level.value}:{key}"

    def set(self, key, value, level, ttl=None):
        self.client.set(self._key(key, level), pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), ex=ttl)

    def get(self, key, level):
        data = self.client.get(self._key(key, level))
        return None if data is None else pickle.loads(data)


@pytest.fixture(scope="module")
def server():
    with RedisServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    c = server.client()
    yield c
    c.close()


@pytest.fixture
def ours(server, client):
    cache = RedisCache(url=server.url, key_prefix=f"bench:{uuid.uuid4().hex[:8]}:")
    yield cache
    cache.clear()
    cache.close()
    client.flushdb()


def _label(n, kind):
    return f"{n * n * 8 // 1_000_000}MB-{kind}"


def _run(benchmark, subject, group, fn, nbytes, check):
    benchmark.group = group
    benchmark.extra_info["subject"] = subject
    benchmark.extra_info["nbytes"] = nbytes
    # Many rounds: medians on a shared 2-core machine need them.
    rounds = 5 if nbytes > 50_000_000 else 25
    result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    check(result)


@pytest.mark.parametrize("n,kind", MATRICES, ids=[_label(n, k) for n, k in MATRICES])
def test_set_get_ours(benchmark, ours, make_matrix, n, kind):
    w = make_matrix(n, kind)

    def work():
        ours.set("w", w, D)
        return ours.get("w", D)

    _run(benchmark, "ours", f"redis-set+get-{_label(n, kind)}", work, w.nbytes,
         lambda got: np.testing.assert_array_equal(got, w))


@pytest.mark.parametrize("n,kind", MATRICES, ids=[_label(n, k) for n, k in MATRICES])
def test_set_get_ours_signed(benchmark, server, make_matrix, n, kind):
    """The same with ``secret=``: the price of HMAC-SHA256 over every frame byte."""
    w = make_matrix(n, kind)
    cache = RedisCache(url=server.url, key_prefix=f"bench:{uuid.uuid4().hex[:8]}:", secret=b"bench")

    def work():
        cache.set("w", w, D)
        return cache.get("w", D)

    _run(benchmark, "ours-signed", f"redis-set+get-{_label(n, kind)}", work, w.nbytes,
         lambda got: np.testing.assert_array_equal(got, w))
    cache.clear()
    cache.close()


@pytest.mark.parametrize("n,kind", MATRICES, ids=[_label(n, k) for n, k in MATRICES])
def test_set_get_raw_redis_py(benchmark, client, make_matrix, n, kind):
    w = make_matrix(n, kind)

    def work():
        client.set("raw:w", w.tobytes())
        return np.frombuffer(client.get("raw:w"), dtype=w.dtype).reshape(w.shape)

    _run(benchmark, "redis-py", f"redis-set+get-{_label(n, kind)}", work, w.nbytes,
         lambda got: np.testing.assert_array_equal(got, w))
    client.delete("raw:w")


@pytest.mark.parametrize("n,kind", MATRICES, ids=[_label(n, k) for n, k in MATRICES])
def test_set_get_seed(benchmark, client, make_matrix, n, kind):
    w = make_matrix(n, kind)
    seed = SeedRedisCache(client)

    def work():
        seed.set("w", w, D)
        return seed.get("w", D)

    _run(benchmark, "seed-pickle", f"redis-set+get-{_label(n, kind)}", work, w.nbytes,
         lambda got: np.testing.assert_array_equal(got, w))
    client.delete(seed._key("w", D))


SMALL = np.linspace(0.0, 1.0, 10)


def test_get_small_ours(benchmark, ours):
    ours.set("small", SMALL, D)
    benchmark.group = "redis-get-small"
    benchmark.extra_info["subject"] = "ours"
    np.testing.assert_array_equal(benchmark(ours.get, "small", D), SMALL)


def test_get_small_raw_redis_py(benchmark, client):
    client.set("raw:small", SMALL.tobytes())
    benchmark.group = "redis-get-small"
    benchmark.extra_info["subject"] = "redis-py"
    assert benchmark(client.get, "raw:small") == SMALL.tobytes()


def test_get_small_seed(benchmark, client):
    seed = SeedRedisCache(client)
    seed.set("small", SMALL, D)
    benchmark.group = "redis-get-small"
    benchmark.extra_info["subject"] = "seed-pickle"
    np.testing.assert_array_equal(benchmark(seed.get, "small", D), SMALL)
