"""RedisCache against a real redis-server (started by tests/redis_server.py on 127.0.0.1).

The contract suite, then what only the Redis tier does: its key layout, chunked values,
signatures and the pickle rule, the dependency index shared by processes, outages, and
the cross-process lease of ``get_or_compute``.
"""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest
import redis

from contract import CacheTierContract
from tnfr_fastcache import (
    BackendError,
    BackendUnavailable,
    CacheLevel,
    InvalidArgumentError,
    MISSING,
    UnsafePickleError,
)
from tnfr_fastcache.backends.redis import RedisCache
from tnfr_fastcache.keys import fingerprint_hex

T = CacheLevel.TEMPORARY
D = CacheLevel.DERIVED_METRICS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_CHUNK = 64 << 10


def _prefix():
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def make_cache(redis_url):
    """Factory of RedisCache on the session server, each under its own key prefix."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("url", redis_url)
        kwargs.setdefault("key_prefix", _prefix())
        cache = RedisCache(**kwargs)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        try:
            cache.clear()
        except BackendUnavailable:
            pass
        cache.close()


@pytest.fixture
def raw(redis_server):
    """A plain redis-py client on the session server, to look behind the cache's back."""
    client = redis_server.client()
    yield client
    client.close()


class TestContractSigned(CacheTierContract):
    """Signed records (pickles trusted), small chunks so larger arrays take the chunked path."""

    @pytest.fixture
    def make_tier(self, make_cache):
        return lambda **kwargs: make_cache(secret=b"contract-secret", chunk_size=SMALL_CHUNK, **kwargs)


class TestContractUnsigned(CacheTierContract):
    """No secret, pickles allowed: the setting of a Redis only trusted writers reach."""

    @pytest.fixture
    def make_tier(self, make_cache):
        return lambda **kwargs: make_cache(allow_pickle=True, compression="none", **kwargs)


# -- layout ---------------------------------------------------------------------------


def test_entry_name_is_prefix_level_digest(make_cache, raw):
    cache = make_cache(secret="s")
    cache.set(("coherence", 7), 1.5, T)
    name = f"{cache.key_prefix}temporary:{fingerprint_hex(('coherence', 7))}"
    assert raw.exists(name) == 1
    assert raw.get(name)[:4] == b"TNFC"


def test_invalidation_and_len_use_scan_never_keys(private_redis_server):
    client = private_redis_server.client()
    cache = RedisCache(url=private_redis_server.url, secret="s")
    for i in range(30):
        cache.set(i, i, T)
    client.config_resetstat()
    assert len(cache) == 30
    assert cache.invalidate_by_pattern("temporary:*") == 30
    cache.set("x", 1, D)
    cache.clear()
    stats = client.info("commandstats")
    assert "cmdstat_keys" not in stats
    assert stats["cmdstat_scan"]["calls"] >= 3
    assert client.dbsize() == 0


def test_invalidate_by_pattern_counts_entries_only(make_cache, raw):
    cache = make_cache(secret="s", chunk_size=SMALL_CHUNK)
    cache.set("big", np.random.default_rng(0).random(40_000), D, dependencies={"dep"})  # 5 chunks
    cache.set("small", 1, T, dependencies={"dep"})
    assert cache.invalidate_by_pattern("*") == 2
    assert raw.keys(cache.key_prefix + "*") == []
    assert cache.invalidate_by_pattern("derived_metrics:*") == 0


def test_glob_characters_in_prefix_are_literal(make_cache, raw):
    base = _prefix()
    plain = make_cache(key_prefix=base + "a:", secret="s")
    starred = make_cache(key_prefix=base + "*:", secret="s")
    plain.set("k", 1, T)
    starred.set("k", 2, T)
    assert starred.invalidate_level(T) == 1
    assert plain.get("k", T) == 1
    starred.clear()
    assert plain.get("k", T) == 1


def test_clear_spares_other_prefixes(make_cache):
    mine, theirs = make_cache(secret="s"), make_cache(secret="s")
    mine.set("k", 1, T, dependencies={"d"})
    theirs.set("k", 2, T, dependencies={"d"})
    mine.clear()
    assert mine.get("k", T) is None and theirs.get("k", T) == 2
    assert theirs.invalidate_by_dependency("d") == 1


def test_seed_positional_ttl_and_dependencies(make_cache, raw):
    cache = make_cache(secret="s")
    cache.set("k", 1, T, 3600, {"topology"})
    entry = cache.lookup("k", T)
    assert entry.dependencies == frozenset({"topology"})
    assert time.time() + 3590 < entry.expires_at < time.time() + 3610
    name = f"{cache.key_prefix}temporary:{fingerprint_hex('k')}"
    assert 3590_000 < raw.pttl(name) <= 3600_000


def test_default_ttl_applies(make_cache, raw):
    cache = make_cache(secret="s", ttl=100)
    cache.set("k", 1, T)
    assert 0 < raw.pttl(f"{cache.key_prefix}temporary:{fingerprint_hex('k')}") <= 100_000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key_prefix": ""},
        {"chunk_size": 10},
        {"chunk_size": 1 << 30},
        {"ttl": -1},
        {"secret": b""},
        {"retry_interval": 0},
        {"socket_timeout": float("nan")},
        {"compression": "no-such-codec"},
    ],
    ids=repr,
)
def test_bad_arguments_are_rejected(redis_url, kwargs):
    with pytest.raises(InvalidArgumentError):
        RedisCache(url=redis_url, **kwargs)


def test_bad_dependency_names_are_rejected(make_cache):
    cache = make_cache(secret="s")
    with pytest.raises(InvalidArgumentError):
        cache.set("k", 1, T, dependencies=[1, 2])
    with pytest.raises(InvalidArgumentError):
        cache.set("k", 1, T, dependencies=object())
    with pytest.raises(InvalidArgumentError):
        cache.set("k", 1, T, computation_cost="expensive")
    with pytest.raises(InvalidArgumentError):
        cache.invalidate_by_dependency(["a", "b"])
    with pytest.raises(InvalidArgumentError):
        cache.invalidate_by_pattern(None)
    assert cache.get("k", T) is None


def test_user_client_is_used_and_left_open(make_cache, redis_server):
    client = redis_server.client()
    cache = make_cache(client=client, secret="s")
    assert cache.address == f"127.0.0.1:{redis_server.port}"
    cache.set("k", 1, T)
    assert cache.get("k", T) == 1
    cache.clear()
    cache.close()
    assert client.ping() is True
    client.close()


# -- chunked values ---------------------------------------------------------------------


def _chunk_keys(raw, cache):
    return sorted(raw.keys(cache.key_prefix + "_chunk:*"))


def test_large_value_is_chunked_and_read_back(make_cache, raw):
    cache = make_cache(chunk_size=SMALL_CHUNK, compression="none")
    value = np.random.default_rng(3).random((300, 300))  # 720 kB: 11 chunks of 64 KiB
    cache.set("w", value, D)
    assert len(_chunk_keys(raw, cache)) == 11
    np.testing.assert_array_equal(cache.get("w", D), value)
    assert len(cache) == 1


def test_chunks_read_through_redis_py_when_the_socket_is_not_ours(make_cache, monkeypatch):
    import tnfr_fastcache.backends.redis as redis_tier

    cache = make_cache(chunk_size=SMALL_CHUNK, compression="none")
    value = np.random.default_rng(5).random(50_000)
    cache.set("w", value, D)
    monkeypatch.setattr(redis_tier, "_SocketBuffer", None)  # as with hiredis or another redis-py
    np.testing.assert_array_equal(cache.get("w", D), value)


def test_chunks_read_with_a_user_resp3_client(make_cache, redis_server):
    client = redis.Redis(host=redis_server.host, port=redis_server.port, protocol=3)
    cache = make_cache(client=client, chunk_size=SMALL_CHUNK, compression="none")
    value = np.random.default_rng(6).random(50_000)
    cache.set("w", value, D)
    np.testing.assert_array_equal(cache.get("w", D), value)
    assert client.ping() is True  # the connection we read replies from is still in step
    client.close()


def test_pickle_check_agrees_with_frame_info():
    from tnfr_fastcache.backends.redis import _is_pickle
    from tnfr_fastcache.serialize import dumps, frame_info

    for value in (np.arange(3), b"bytes", {"a": 1}, 1.5, None):
        frame = dumps(value)
        assert _is_pickle(memoryview(frame)) == (frame_info(frame)["kind"] == "pickle")
    assert not _is_pickle(b"") and not _is_pickle(b"\x89TFC\x01")


def test_overwrite_and_delete_remove_old_chunks(make_cache, raw):
    cache = make_cache(chunk_size=SMALL_CHUNK, compression="none")
    rng = np.random.default_rng(4)
    cache.set("w", rng.random(50_000), D)
    first = _chunk_keys(raw, cache)
    second_value = rng.random(30_000)
    cache.set("w", second_value, D)
    second = _chunk_keys(raw, cache)
    assert len(first) == 7 and len(second) == 4 and not set(first) & set(second)
    np.testing.assert_array_equal(cache.get("w", D), second_value)
    cache.set("w", np.zeros(3), D)  # now inline
    assert _chunk_keys(raw, cache) == []
    cache.set("w", second_value, D)
    assert cache.delete("w", D) is True
    assert _chunk_keys(raw, cache) == []


def test_readers_never_see_a_mix_of_two_writes(make_cache):
    import threading

    writer = make_cache(chunk_size=SMALL_CHUNK, compression="none")
    reader = make_cache(key_prefix=writer.key_prefix, chunk_size=SMALL_CHUNK, compression="none")
    values = [np.full(40_000, 1.0), np.full(40_000, 2.0)]  # 5 chunks each
    writer.set("w", values[0], D)
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            got = reader.get("w", D)
            seen.append(None if got is None else (got.min(), got.max()))

    thread = threading.Thread(target=read)
    thread.start()
    for i in range(60):
        writer.set("w", values[i % 2], D)
    stop.set()
    thread.join()
    assert seen and set(seen) <= {(1.0, 1.0), (2.0, 2.0), None}
    assert reader.get_stats()["corrupt"] == 0


def test_chunks_get_the_entry_ttl(make_cache, raw):
    cache = make_cache(chunk_size=SMALL_CHUNK, compression="none")
    cache.set("w", np.ones(20_000), D, ttl=50)
    cache.set("forever", np.ones(20_000), T)
    by_ttl = {raw.pttl(k) > 0 for k in _chunk_keys(raw, cache) if b"derived" in k}
    assert by_ttl == {True}
    assert all(0 < raw.pttl(k) <= 50_000 for k in _chunk_keys(raw, cache) if b"derived" in k)
    assert all(raw.pttl(k) == -1 for k in _chunk_keys(raw, cache) if b"temporary" in k)


def test_lost_chunk_is_a_miss_and_the_entry_is_removed(make_cache, raw):
    cache = make_cache(chunk_size=SMALL_CHUNK, compression="none")
    cache.set("w", np.ones(20_000), D)
    raw.delete(_chunk_keys(raw, cache)[1])
    assert cache.get("w", D) is None
    assert raw.keys(cache.key_prefix + "*") == []
    assert cache.get_stats()["corrupt"] == 1


def test_forged_manifest_length_allocates_nothing_big(make_cache, raw):
    cache = make_cache(chunk_size=SMALL_CHUNK, compression="none", allow_pickle=True)
    cache.set("w", np.ones(20_000), D)
    name = f"{cache.key_prefix}derived_metrics:{fingerprint_hex('w')}"
    record = bytearray(raw.get(name))
    record[12:20] = (1 << 60).to_bytes(8, "little")  # the frame length field
    raw.set(name, bytes(record))
    assert cache.get("w", D) is None
    assert cache.get_stats()["corrupt"] == 1


@pytest.mark.slow
def test_600_mb_value_on_a_default_server(private_redis_server):
    client = private_redis_server.client()
    assert int(client.config_get("proto-max-bulk-len")["proto-max-bulk-len"]) == 512 * 1024 * 1024
    cache = RedisCache(url=private_redis_server.url, compression="none")
    value = np.arange(75_000_000, dtype=np.float64)  # 600 MB
    value[::1000] = -1.0
    assert cache.set("huge", value, D) is True
    got = cache.get("huge", D)
    assert got.shape == value.shape and got.dtype == value.dtype
    assert np.array_equal(got, value)
    del got
    assert cache.delete("huge", D) is True
    assert client.dbsize() == 0
    cache.close()
    client.close()


# -- signatures and pickles --------------------------------------------------------------


def test_garbage_frame_without_secret_is_corrupt_not_unsafe(make_cache, raw):
    cache = make_cache()
    cache.set("a", np.arange(5), T)
    name = f"{cache.key_prefix}temporary:{fingerprint_hex('a')}"
    record = bytearray(raw.get(name))
    record[-20:] = bytes(20)  # the frame's payload and checksum
    raw.set(name, bytes(record))
    assert cache.get("a", T) is None
    assert cache.get_stats()["corrupt"] == 1


def test_unsigned_pickle_is_refused_without_allow_pickle(make_cache):
    cache = make_cache()
    cache.set("d", {"a": 1}, T)
    with pytest.raises(UnsafePickleError, match="allow_pickle"):
        cache.get("d", T)


def test_arrays_and_bytes_need_no_secret(make_cache):
    cache = make_cache()
    cache.set("a", np.arange(5), T)
    cache.set("b", b"raw bytes", T)
    np.testing.assert_array_equal(cache.get("a", T), np.arange(5))
    assert cache.get("b", T) == b"raw bytes"


def test_secret_from_environment(make_cache, monkeypatch):
    monkeypatch.setenv("TNFR_CACHE_SECRET", "from-env")
    writer = make_cache()
    writer.set("d", {"a": 1}, T)
    assert writer.get("d", T) == {"a": 1}
    assert writer.get_stats()["signed"] is True
    monkeypatch.setenv("TNFR_CACHE_SECRET", "another")
    reader = make_cache(key_prefix=writer.key_prefix)
    assert reader.get("d", T) is None  # wrong secret: rejected and deleted
    assert reader.get_stats()["corrupt"] == 1


@pytest.mark.parametrize("where", ["header", "meta", "frame"])
def test_tampered_entry_is_rejected_deleted_and_counted(make_cache, raw, where):
    cache = make_cache(secret="s3cret")
    cache.set("d", {"answer": 42}, T, dependencies={"dep"})
    name = f"{cache.key_prefix}temporary:{fingerprint_hex('d')}"
    record = bytearray(raw.get(name))
    offset = {"header": 7, "meta": 20 + 32 + 3, "frame": len(record) - 1}[where]
    record[offset] ^= 0x01
    raw.set(name, bytes(record))
    assert cache.get("d", T, default=MISSING) is MISSING
    assert raw.exists(name) == 0
    assert cache.get_stats()["corrupt"] == 1


def test_tampered_chunk_is_rejected(make_cache, raw):
    cache = make_cache(secret="s", chunk_size=SMALL_CHUNK, compression="none")
    cache.set("w", np.ones(20_000), D)
    chunk = _chunk_keys(raw, cache)[0]
    data = bytearray(raw.get(chunk))
    data[100] ^= 0xFF
    raw.set(chunk, bytes(data))
    assert cache.get("w", D) is None
    assert raw.keys(cache.key_prefix + "*") == []
    assert cache.get_stats()["corrupt"] == 1


def test_unsigned_entry_is_rejected_by_a_signed_cache(make_cache):
    unsigned = make_cache(allow_pickle=True)
    unsigned.set("d", {"a": 1}, T)
    signed = make_cache(key_prefix=unsigned.key_prefix, secret="s")
    assert signed.get("d", T) is None
    assert unsigned.get("d", T) is None  # deleted
    assert signed.get_stats()["corrupt"] == 1


def test_signed_record_moved_to_another_key_is_rejected(make_cache, raw):
    cache = make_cache(secret="s")
    cache.set("a", "value of a", T)
    cache.set("b", "value of b", T)
    name_a = f"{cache.key_prefix}temporary:{fingerprint_hex('a')}"
    name_b = f"{cache.key_prefix}temporary:{fingerprint_hex('b')}"
    raw.set(name_b, raw.get(name_a))
    assert cache.get("b", T) is None
    assert cache.get("a", T) == "value of a"


@pytest.mark.parametrize(
    "garbage",
    [b"", b"TNFC", b"not ours at all", b"TNFC\x01\x00\x00\x00\xff\xff\xff\xff" + bytes(12), os.urandom(300)],
    ids=["empty", "magic-only", "foreign", "huge-meta-length", "random"],
)
def test_garbage_record_is_a_miss(make_cache, raw, garbage):
    cache = make_cache(allow_pickle=True)
    name = f"{cache.key_prefix}temporary:{fingerprint_hex('k')}"
    raw.set(name, garbage)
    assert cache.get("k", T) is None
    assert raw.exists(name) == 0
    assert cache.delete("k", T) is False


# -- dependencies across processes and TTLs ----------------------------------------------


def test_dependency_set_lives_as_long_as_its_longest_entry(make_cache, raw):
    cache = make_cache(secret="s")
    dep = f"{cache.key_prefix}_dep:topology"
    cache.set("a", 1, T, dependencies={"topology"}, ttl=10)
    assert 0 < raw.pttl(dep) <= 10_000
    cache.set("b", 1, T, dependencies={"topology"}, ttl=100)
    assert 10_000 < raw.pttl(dep) <= 100_000
    cache.set("c", 1, T, dependencies={"topology"}, ttl=5)
    assert 10_000 < raw.pttl(dep) <= 100_000
    cache.set("d", 1, T, dependencies={"topology"})
    assert raw.pttl(dep) == -1


def _run_python(code, *args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.path.join(ROOT, "tests"))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_invalidation_across_processes(make_cache, redis_url):
    cache = make_cache(secret="s")
    out = _run_python(
        """
        import sys
        from tnfr_fastcache.backends.redis import RedisCache
        cache = RedisCache(url=sys.argv[1], key_prefix=sys.argv[2], secret="s")
        for i in range(5):
            cache.set(("w", i), i, "derived_metrics", dependencies={"graph_topology"})
        cache.set("other", 1, "temporary", dependencies={"node_vf"})
        print(len(cache))
        """,
        redis_url, cache.key_prefix,
    )
    assert out.split() == ["6"]
    assert cache.get(("w", 3), D) == 3
    assert cache.invalidate_by_dependency("graph_topology") == 5
    out = _run_python(
        """
        import sys
        from tnfr_fastcache.backends.redis import RedisCache
        cache = RedisCache(url=sys.argv[1], key_prefix=sys.argv[2], secret="s")
        print(cache.get(("w", 3), "derived_metrics"), cache.get("other", "temporary"))
        print(cache.invalidate_by_dependency("node_vf"))
        """,
        redis_url, cache.key_prefix,
    )
    assert out.split() == ["None", "1", "1"]
    assert len(cache) == 0


# -- outages -----------------------------------------------------------------------------


def test_server_killed_mid_run_then_restarted(private_redis_server, caplog):
    server = private_redis_server
    cache = RedisCache(url=server.url, secret="s", retry_interval=0.3)
    cache.set("k", 1, T)
    server.kill()
    caplog.set_level(logging.WARNING, logger="tnfr_fastcache.redis")
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{server.port}") as info:
        cache.get("k", T)
    assert isinstance(info.value, ConnectionError)
    # The tier is now skipped: these calls fail at once, without touching the network.
    for _ in range(20):
        with pytest.raises(BackendUnavailable, match="skipped"):
            cache.set("k", 2, T)
    stats = cache.get_stats()
    assert stats["errors"] == 1 and stats["skipped"] == 20 and stats["available"] is False
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    server.start()
    time.sleep(0.35)
    assert cache.get("k", T) is None  # the restarted server is empty: a miss, not an error
    cache.set("k", 3, T)
    assert cache.get("k", T) == 3
    assert cache.get_stats()["available"] is True
    cache.close()


def test_connection_reset_is_retried_transparently(private_redis_server):
    cache = RedisCache(url=private_redis_server.url, secret="s")
    cache.set("k", 1, T)
    admin = private_redis_server.client()
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    assert cache.get("k", T) == 1
    assert cache.get_stats()["errors"] == 0
    admin.close()
    cache.close()


def test_timeout_of_a_hung_server(private_redis_server):
    cache = RedisCache(url=private_redis_server.url, secret="s", socket_timeout=0.2, retry_interval=0.2)
    cache.set("k", 1, T)
    os.kill(private_redis_server.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(BackendUnavailable, match="Timeout"):
            cache.get("k", T)
    finally:
        os.kill(private_redis_server.process.pid, signal.SIGCONT)
    time.sleep(0.25)
    assert cache.get("k", T) == 1
    cache.close()


def test_get_or_compute_survives_an_outage(private_redis_server):
    cache = RedisCache(url=private_redis_server.url, secret="s", retry_interval=60)
    private_redis_server.kill()
    assert cache.get_or_compute("k", T, lambda: 41 + 1) == 42
    assert cache.get_or_compute("k", T, lambda: 43) == 43  # skipped tier: computed again
    assert cache.get_stats()["errors"] == 1


def test_refused_write_is_a_backend_error(private_redis_server):
    client = private_redis_server.client()
    client.config_set("maxmemory", "2mb")
    client.config_set("maxmemory-policy", "noeviction")
    cache = RedisCache(url=private_redis_server.url, compression="none")
    with pytest.raises(BackendError, match="OOM|memory"):
        for i in range(20):
            cache.set(i, np.ones(1 << 15), D)
    assert cache.get_stats()["errors"] >= 1
    assert cache.available is True
    client.close()
    cache.close()


# -- get_or_compute: leases and fencing ----------------------------------------------------


def test_get_or_compute_computes_once(make_cache):
    cache = make_cache(secret="s")
    calls = []

    def compute():
        calls.append(1)
        return np.arange(4.0)

    first = cache.get_or_compute("k", D, compute, dependencies={"dep"})
    second = cache.get_or_compute("k", D, compute)
    np.testing.assert_array_equal(first, second)
    assert len(calls) == 1 and second.flags.writeable is False
    assert cache.lookup("k", D).dependencies == frozenset({"dep"})


def test_get_or_compute_counts_one_miss_or_one_hit(make_cache):
    cache = make_cache(secret="s")
    cache.get_or_compute("k", D, lambda: 1)
    cache.get_or_compute("k", D, lambda: 2)
    stats = cache.get_stats()
    assert (stats["misses"], stats["hits"]) == (1, 1)


def test_lease_is_renewed_while_its_holder_computes(make_cache):
    import threading

    holder = make_cache(secret="s", lease_timeout=0.3)
    waiter = make_cache(key_prefix=holder.key_prefix, secret="s", lease_timeout=0.3)
    started, results = threading.Event(), {}

    def slow():
        started.set()
        time.sleep(1.2)  # four lease lifetimes
        return "holder's value"

    def not_again():
        raise AssertionError("the waiter computed while the holder was alive")

    thread = threading.Thread(target=lambda: results.setdefault("holder", holder.get_or_compute("k", D, slow)))
    thread.start()
    started.wait(10)
    results["waiter"] = waiter.get_or_compute("k", D, not_again)
    thread.join()
    assert results == {"holder": "holder's value", "waiter": "holder's value"}


def test_get_or_compute_exception_releases_the_lease(make_cache, raw):
    cache = make_cache(secret="s")

    def fail():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.get_or_compute("k", D, fail)
    assert raw.keys(cache.key_prefix + "_lease:*") == []
    assert cache.get_or_compute("k", D, lambda: 7) == 7


def test_lease_of_a_dead_holder_expires(make_cache):
    cache = make_cache(secret="s", lease_timeout=0.3)
    name = cache._entry_name("k", D)
    # A holder that took the lease and died: nobody releases it.
    assert cache._script("acquire", [cache._lease_name(name), cache._fence_name(name)], [300, 60_000]) == 1
    start = time.monotonic()
    assert cache.get_or_compute("k", D, lambda: "recomputed") == "recomputed"
    assert time.monotonic() - start >= 0.2  # it waited for the lease instead of computing at once
    assert cache.get("k", D) == "recomputed"


def test_waiter_gives_up_after_wait_timeout(make_cache):
    cache = make_cache(secret="s", lease_timeout=30)
    name = cache._entry_name("k", D)
    cache._script("acquire", [cache._lease_name(name), cache._fence_name(name)], [30_000, 60_000])
    assert cache.get_or_compute("k", D, lambda: "mine", wait_timeout=0.2) == "mine"
    assert cache.get("k", D) == "mine"


def test_late_holder_cannot_overwrite_a_newer_value(make_cache):
    cache = make_cache(secret="s", lease_timeout=0.1)
    name = cache._entry_name("k", D)
    keys = [cache._lease_name(name), cache._fence_name(name)]
    late = cache._script("acquire", keys, [100, 60_000])
    time.sleep(0.15)  # its lease expires while it computes
    assert cache.get_or_compute("k", D, lambda: "newer") == "newer"
    assert cache._store("k", "stale", D, (), 1.0, None, token=late) is False
    assert cache.get("k", D) == "newer"
    # A plain set() after a lease moves the fence too.
    token = cache._script("acquire", keys, [10_000, 60_000])
    cache.set("k", "plain", D)
    assert cache._store("k", "stale", D, (), 1.0, None, token=token) is False
    assert cache.get("k", D) == "plain"


_STAMPEDE = """
import sys, time
import redis
from tnfr_fastcache.backends.redis import RedisCache
url, prefix, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
cache = RedisCache(url=url, key_prefix=prefix, secret="s")
counter = redis.Redis.from_url(url)

def compute():
    counter.incr(prefix + "computations")
    time.sleep(0.5)
    return {"si": 0.73, "pid": "one value"}

time.sleep(max(0.0, start_at - time.time()))
print(cache.get_or_compute("si", "derived_metrics", compute))
"""


def test_stampede_across_processes_computes_once(make_cache, redis_url, raw):
    cache = make_cache(secret="s")
    env = dict(os.environ, PYTHONPATH=ROOT)
    start_at = time.time() + 1.5  # all three start computing at the same moment
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _STAMPEDE, redis_url, cache.key_prefix, str(start_at)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {"{'si': 0.73, 'pid': 'one value'}"}
    assert int(raw.get(cache.key_prefix + "computations")) == 1


_DECORATED = """
import sys
import numpy as np
import redis
from tnfr_fastcache.backends.redis import RedisCache
from tnfr_fastcache.decorator import cache_tnfr_computation

url, prefix = sys.argv[1], sys.argv[2]
counter = redis.Redis.from_url(url)
cache = RedisCache(url=url, key_prefix=prefix, secret="s")

@cache_tnfr_computation(cache_instance=cache, dependencies={"graph_topology"})
def coherence(n, scale):
    counter.incr(prefix + "computations")
    return {"W": np.full((n, n), scale), "n": n}

result = coherence(50, 0.5)
print(result["n"], float(result["W"].sum()), int(counter.get(prefix + "computations")))
"""


def test_two_processes_share_a_value_through_the_decorator(make_cache, redis_url):
    cache = make_cache(secret="s")
    first = _run_python(_DECORATED, redis_url, cache.key_prefix)
    second = _run_python(_DECORATED, redis_url, cache.key_prefix)
    assert first.split() == ["50", "1250.0", "1"]
    assert second.split() == ["50", "1250.0", "1"]  # the second process did not recompute
    assert cache.invalidate_by_dependency("graph_topology") == 1
    third = _run_python(_DECORATED, redis_url, cache.key_prefix)
    assert third.split() == ["50", "1250.0", "2"]


def test_redis_cluster_client(redis_cluster):
    from redis.cluster import RedisCluster

    client = RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    cache = RedisCache(client=client, secret="s", chunk_size=SMALL_CHUNK, key_prefix=_prefix())
    value = np.random.default_rng(8).random(50_000)  # chunked: 7 chunks in the entry's slot
    cache.set("w", value, D, dependencies={"topology"})
    for i in range(20):  # spread over the three primaries
        cache.set(("k", i), i, T, dependencies={"topology", f"node{i}"})
    np.testing.assert_array_equal(cache.get("w", D), value)
    assert cache.get(("k", 7), T) == 7
    assert len(cache) == 21
    assert cache.invalidate_by_dependency("node7") == 1
    assert cache.invalidate_by_dependency("topology") == 20
    assert cache.get_or_compute("g", T, lambda: "once") == "once"
    assert cache.get_or_compute("g", T, lambda: "twice") == "once"
    cache.clear()
    assert len(cache) == 0
    assert not any(node.client().dbsize() for node in redis_cluster.nodes)
    client.close()


def test_unix_socket_url(tmp_path):
    from redis_server import RedisServer

    path = str(tmp_path / "redis.sock")
    with RedisServer(directory=str(tmp_path), extra_args=["--unixsocket", path, "--unixsocketperm", "700"]):
        cache = RedisCache(url=f"unix://{path}", secret="s", chunk_size=SMALL_CHUNK)
        value = np.random.default_rng(9).random(30_000)
        cache.set("w", value, D, dependencies={"dep"})
        np.testing.assert_array_equal(cache.get("w", D), value)
        assert cache.address == path
        assert cache.invalidate_by_dependency("dep") == 1
        cache.close()
