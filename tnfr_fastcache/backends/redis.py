"""Redis tier: :class:`RedisCache`, values shared by every process that reaches one Redis.

Layout in Redis (``P`` is ``key_prefix``)
----------------------------------------
``P<level>:<digest>``
    An entry: one record (below); ``digest`` is ``fingerprint_hex(key)``.
``P_chunk:{P<level>:<digest>}:<write id>:<i>``
    Chunk ``i`` of a large entry's frame. The braces are a Redis Cluster hash tag, so an entry,
    its chunks, its lease and its fencing counter share one slot and one Lua script can touch
    them all.
``P_dep:<dependency>``
    The set of entry names that declared ``dependency``; it expires with the longest-lived of
    them (never, if one of them never expires).
``P_lease:{...}``, ``P_fence:{...}``
    :meth:`RedisCache.get_or_compute`'s lease and fencing counter.

A record is a 20-byte header (``<4sBBHIQ``: magic ``TNFC``, version 1, flags: 1 signed,
2 chunked; zero; meta length; frame length), the 32-byte HMAC-SHA256 when signed, the meta
(JSON: dependencies, cost, expiry, and for a chunked entry its chunk names and size), then
the frame itself (inline records) or nothing (a chunked entry's manifest). The HMAC covers
the entry name, header, meta and every frame byte, so a record cannot be altered or moved
to another key. A chunked entry's chunks are written first under fresh names and its
manifest last, in one Lua script that checks they are all there: readers see the old value
or the new one, never a mix.
"""

import errno
import functools
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import socket
import struct
import threading
import time

import numpy as np

try:
    import redis
    import redis.cluster
    from redis.backoff import NoBackoff
    from redis.connection import Encoder, PythonRespSerializer
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "RedisCache needs redis-py: pip install 'tnfr_fastcache[redis]'"
    ) from exc
try:
    from redis._parsers.socket import SocketBuffer as _SocketBuffer
except ImportError:  # pragma: no cover - another redis-py layout: chunks use redis-py's reader
    _SocketBuffer = None

from ..errors import (
    BackendError,
    BackendUnavailable,
    FastCacheError,
    FrameError,
    InvalidArgumentError,
    SignatureError,
    UnsafePickleError,
)
from .._pure._frame import KIND_PICKLE, MAGIC as _FRAME_MAGIC
from ..keys import fingerprint_hex
from ..levels import CacheLevel, as_level
from ..serialize import dumps, frame_info, loads
from .base import DEFAULT_LEVEL, CacheTier, Entry

__all__ = ["RedisCache"]

logger = logging.getLogger("tnfr_fastcache.redis")

_MAGIC = b"TNFC"
_VERSION = 1
_SIGNED = 1
_CHUNKED = 2
_HEADER = struct.Struct("<4sBBHIQ")
_SIG_LEN = hashlib.sha256().digest_size
_MAX_CHUNK = 256 << 20  # well under Redis's default 512 MB proto-max-bulk-len
_MIN_CHUNK = 64 << 10
# Chunks live this long until their manifest is written, so a writer that dies between the
# two leaves nothing behind for good.
_PROVISIONAL_CHUNK_MS = 600_000
# Chunks are requested in pipelined groups of about this many bytes: one round trip per
# group, and the server's reply buffer for us stays bounded.
_READ_GROUP_BYTES = 32 << 20
_SCAN_BATCH = 500
_OFFLINE = object()  # get_or_compute's marker: Redis failed, compute without it

# redis-py raises these (or OSError from the socket) when the server is unreachable.
_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

_LUA_HELPERS = """
local function read_meta(key)
  local head = redis.call('GETRANGE', key, 0, 19)
  if string.len(head) < 20 or string.sub(head, 1, 4) ~= 'TNFC' then return nil end
  local meta_len = struct.unpack('<I4', string.sub(head, 9, 12))
  local start = 20
  if string.byte(head, 6) % 2 == 1 then start = start + 32 end
  if meta_len == 0 then return nil end
  local ok, meta = pcall(cjson.decode, redis.call('GETRANGE', key, start, start + meta_len - 1))
  if ok and type(meta) == 'table' then return meta end
  return nil
end

-- Unlink an old record's chunks (only names under this entry's own chunk prefix, whatever
-- the stored meta says) and return its dependencies.
local function forget(meta, chunk_prefix)
  local deps = {}
  if meta == nil then return deps end
  if type(meta.ck) == 'table' then
    for _, name in ipairs(meta.ck) do
      if type(name) == 'string' and string.sub(name, 1, #chunk_prefix) == chunk_prefix then
        redis.call('UNLINK', name)
      end
    end
  end
  if type(meta.d) == 'table' then
    for _, dep in ipairs(meta.d) do
      if type(dep) == 'string' then table.insert(deps, dep) end
    end
  end
  return deps
end
"""

# KEYS: entry, lease, fence, new chunks...; ARGV: record, ttl ms (0: none), fencing token
# ('' for a plain write), this entry's chunk prefix, expected chunk lengths...
# Returns the old record's dependencies, or nil when the fencing token is stale.
_LUA_WRITE = _LUA_HELPERS + """
local token = ARGV[3]
if token ~= '' then
  if redis.call('GET', KEYS[3]) ~= token then return false end
  if redis.call('GET', KEYS[2]) == token then redis.call('DEL', KEYS[2]) end
elseif redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('INCR', KEYS[3])
end
for i = 4, #KEYS do
  if redis.call('STRLEN', KEYS[i]) ~= tonumber(ARGV[i + 1]) then
    return redis.error_reply('TNFRCHUNK chunk ' .. KEYS[i] .. ' is missing or short')
  end
end
local old = read_meta(KEYS[1])
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
for i = 4, #KEYS do
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) else redis.call('PERSIST', KEYS[i]) end
end
return forget(old, ARGV[4])
"""

# KEYS: entry; ARGV: its chunk prefix. Returns {1 if it existed else 0, its dependencies}.
_LUA_DELETE = _LUA_HELPERS + """
local deps = forget(read_meta(KEYS[1]), ARGV[1])
return {redis.call('UNLINK', KEYS[1]), deps}
"""

# KEYS: dependency set; ARGV: entry name, ttl ms (0: none). The set lives as long as its
# longest-lived member.
_LUA_DEPEND = """
local existed = redis.call('EXISTS', KEYS[1])
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl == 0 then
  redis.call('PERSIST', KEYS[1])
elseif existed == 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  local left = redis.call('PTTL', KEYS[1])
  if left >= 0 and left < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
end
return 1
"""

# KEYS: lease, fence; ARGV: lease ms, fence ttl ms. Returns the fencing token, or nil.
_LUA_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
"""

# KEYS: lease, fence; ARGV: token, lease ms, fence ttl ms. Extends a lease still ours.
_LUA_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: lease; ARGV: token.
_LUA_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_SCRIPTS = {
    "write": _LUA_WRITE,
    "delete": _LUA_DELETE,
    "depend": _LUA_DEPEND,
    "acquire": _LUA_ACQUIRE,
    "renew": _LUA_RENEW,
    "release": _LUA_RELEASE,
}
_SHAS = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in _SCRIPTS.items()}


class _ChunksChanged(Exception):
    """A chunk vanished while we read it: the entry was overwritten or deleted meanwhile."""


class _Immediate:
    """Stands in for a pipeline on a RedisCluster (whose pipelines refuse EVALSHA):
    runs each queued command at once and keeps its reply."""

    def __init__(self, client):
        self._client = client
        self.replies = []

    def __getattr__(self, command):
        method = getattr(self._client, command)

        def run(*args, **kwargs):
            self.replies.append(method(*args, **kwargs))

        return run


def _kernel_timeouts(connection, seconds):
    """redis-py connect hook: kernel send/receive timeouts, then the usual handshake."""
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        connection._sock.setsockopt(socket.SOL_SOCKET, option, timeval)
    connection.on_connect()


def _plain_socket(connection):
    """The socket of a connected redis-py connection whose parser holds nothing, else None.

    Only such a connection's replies can be read from the socket by us instead of its
    parser (redis-py's own RESP2/RESP3 reader; hiredis keeps its own buffer).
    """
    parser = getattr(connection, "_parser", None)
    sock = getattr(connection, "_sock", None)
    buffer = getattr(parser, "_buffer", None)
    if _SocketBuffer is None or sock is None or type(buffer) is not _SocketBuffer or buffer.unread_bytes():
        return None
    return sock


class _UnexpectedReply(Exception):
    """A reply other than the bulk string we asked for (a RESP3 push, an error)."""


class _BulkReader:
    """Reads RESP bulk-string replies from a socket, each payload straight into its buffer.

    redis-py's Python reader copies a large reply three times through a growing BytesIO
    (and fresh ``bytes`` objects page-fault at ~1-2 GB/s); ``recv_into`` the destination
    copies it once, from the kernel.
    """

    def __init__(self, sock):
        self.sock = sock
        self.pending = bytearray()

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise redis.exceptions.ConnectionError("Redis closed the connection")
        self.pending += data

    def _line(self):
        while (end := self.pending.find(b"\r\n")) < 0:
            if len(self.pending) > 1 << 16:  # no reply we ask for has a line this long
                raise _UnexpectedReply(bytes(self.pending[:80]))
            self._fill()
        line = bytes(self.pending[:end])
        del self.pending[:end + 2]
        return line

    def _payload_into(self, view):
        n = min(len(self.pending), len(view))
        view[:n] = self.pending[:n]
        del self.pending[:n]
        while n < len(view):
            got = self.sock.recv_into(view[n:])
            if not got:
                raise redis.exceptions.ConnectionError("Redis closed the connection")
            n += got
        while len(self.pending) < 2:
            self._fill()
        if self.pending[:2] != b"\r\n":
            raise _UnexpectedReply(bytes(self.pending[:80]))
        del self.pending[:2]

    def read_into(self, view):
        """Read one reply into ``view``; False if it is a bulk string of another length.

        Raises _UnexpectedReply for anything but a bulk string (RESP2 and RESP3 alike).
        """
        line = self._line()
        if line[:1] != b"$":
            raise _UnexpectedReply(line[:80])
        if line[1:] != str(len(view)).encode():
            return False
        self._payload_into(view)
        return True

    def read_bulk(self):
        """Read one bulk-string reply: a new bytearray, or None for a missing key."""
        line = self._line()
        if line in (b"$-1", b"_"):  # RESP2 and RESP3 nulls
            return None
        if line[:1] != b"$" or not line[1:].isdigit():
            raise _UnexpectedReply(line[:80])
        data = bytearray(int(line[1:]))
        self._payload_into(memoryview(data))
        return data


def _glob_escape(text):
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def _is_pickle(frame):
    """Whether ``frame`` holds a pickle: the kind byte that ``loads`` dispatches on.

    Read without parsing the whole header (on a small hit the parse costs a fifth of the
    Redis round trip). A buffer that is no frame at all is not a pickle: ``loads`` rejects it.
    """
    return len(frame) > 5 and bytes(frame[:4]) == _FRAME_MAGIC and frame[5] == KIND_PICKLE


def _as_name(value):
    return value.decode() if isinstance(value, bytes) else value


def _freeze(value):
    """Make the arrays of a freshly decoded value read-only (the tier's default)."""
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, dict):
        for item in value.values():
            _freeze(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _freeze(item)
    return value


def _client_address(client):
    """``host:port`` (or the socket path, or the cluster's nodes) of a redis-py client."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if kwargs:
        if "path" in kwargs:
            return str(kwargs["path"])
        return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    nodes = getattr(client, "startup_nodes", None) or getattr(client, "nodes_manager", None)
    if nodes is not None and hasattr(nodes, "startup_nodes"):
        nodes = nodes.startup_nodes
    if isinstance(nodes, dict):
        return ",".join(nodes)
    if nodes:
        return ",".join(f"{n.host}:{n.port}" for n in nodes)
    return repr(client)


class RedisCache(CacheTier):
    """A cache tier in Redis, shared by every process that connects to the same server.

    Values are stored as frames (:func:`tnfr_fastcache.dumps`): arrays are never pickled.
    Values whose frame is larger than ``chunk_size`` are split into chunks, so values over
    Redis's 512 MB string limit work, and are read back straight into one preallocated
    buffer.

    Parameters
    ----------
    host, port, db, password
        Where Redis is, when neither ``client`` nor ``url`` is given.
    key_prefix : str
        Every key this cache writes starts with it; :meth:`clear` removes exactly those.
    ttl : float, optional
        Default time to live of an entry, in seconds (None: no expiry).
    client : redis.Redis or redis.RedisCluster, optional
        A client you configured (TLS, Sentinel, cluster, ...). It is used as given (its
        own timeouts, retries and request packer) and :meth:`close` leaves it open.
    url : str, optional
        ``redis://``, ``rediss://`` or ``unix://`` URL, instead of host/port/db/password.
    compression : str
        Frame compression (``"lz4"``, ``"zstd"``, ``"none"``, ``"auto"``, ...).
    secret : str or bytes, optional
        HMAC-SHA256 key; defaults to ``$TNFR_CACHE_SECRET``. With a secret every record is
        signed, and unsigned or tampered records are rejected, deleted and counted as
        corrupt. Signed values are trusted, pickles included.
    allow_pickle : bool
        Without a secret, a pickled (non-array, non-bytes) value read from Redis is only
        unpickled when this is True: unpickling data from a shared server runs whatever
        code the writer chose. Otherwise reading one raises :class:`UnsafePickleError`.
    socket_timeout, socket_connect_timeout : float
        Seconds, for the client this cache builds. Short, so an outage costs little.
    retry_interval : float
        After a connection failure the tier is skipped (calls raise
        :class:`BackendUnavailable` at once) for this many seconds; the first call after
        it tries the server again, and caching resumes by itself when it answers.
    chunk_size : int
        Frames larger than this are stored as chunks of this many bytes.
    lease_timeout : float
        How long a :meth:`get_or_compute` lease lasts if its holder dies.
    metrics : CacheMetrics, optional
        Where to record hits, misses, errors...; a new one by default.

    Notes
    -----
    The request path for large values is chosen, not inherited. The client built here
    sends requests with redis-py's own Python packer even when hiredis is installed: for
    large values hiredis's packer copies the value twice (8 MB SET at 340 MB/s against
    1.5 GB/s), and chunks go out as memoryview slices of the frame, never joined into new
    bytes. Chunk replies are read from the connection's socket straight into the
    destination buffer when the connection uses redis-py's own reader (redis-py's reader
    copies a large reply three times); with hiredis's reader or a cluster client, chunks
    are read through redis-py.

    With a ``RedisCluster`` client, an entry, its chunks, its lease and its fencing counter
    share one hash slot (the chunk, lease and fence names carry the entry name as a hash
    tag); commands that would be pipelined run one by one, since cluster pipelines refuse
    EVALSHA.
    """

    tier_name = "redis"

    def __init__(
        self,
        host="localhost",
        port=6379,
        db=0,
        password=None,
        key_prefix="tnfr:cache:",
        ttl=None,
        *,
        client=None,
        url=None,
        compression="lz4",
        secret=None,
        allow_pickle=False,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        retry_interval=5.0,
        chunk_size=1 << 20,
        lease_timeout=60.0,
        metrics=None,
    ):
        from ..telemetry import CacheMetrics

        if not isinstance(key_prefix, str) or not key_prefix:
            raise InvalidArgumentError(f"key_prefix must be a non-empty str, not {key_prefix!r}")
        if not isinstance(chunk_size, int) or not _MIN_CHUNK <= chunk_size <= _MAX_CHUNK:
            raise InvalidArgumentError(
                f"chunk_size must be an int from {_MIN_CHUNK} to {_MAX_CHUNK} bytes, not {chunk_size!r}"
            )
        self.key_prefix = key_prefix
        self.default_ttl = self._check_ttl(ttl)
        self.compression = compression
        dumps(b"", compression=compression)  # an unknown codec name fails here, not at set()
        self.retry_interval = self._positive("retry_interval", retry_interval)
        self.lease_timeout = self._positive("lease_timeout", lease_timeout)
        self.chunk_size = chunk_size
        self.allow_pickle = bool(allow_pickle)
        if secret is None:
            secret = os.environ.get("TNFR_CACHE_SECRET") or None
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if secret is not None and (not isinstance(secret, bytes) or not secret):
            raise InvalidArgumentError("secret must be a non-empty str or bytes")
        self._secret = secret
        self.metrics = CacheMetrics() if metrics is None else metrics

        if client is not None:
            self._client = client
            self._own_client = False
            self.socket_timeout = None  # the client's own business
        else:
            self.socket_timeout = self._positive("socket_timeout", socket_timeout)
            options = dict(
                # The read/write timeout is the kernel's (SO_RCVTIMEO/SO_SNDTIMEO on a
                # blocking socket): Python's own socket timeout polls before every recv,
                # ~20 us per round trip here, as much as decoding a small value.
                socket_timeout=None,
                redis_connect_func=functools.partial(_kernel_timeouts, seconds=self.socket_timeout),
                socket_connect_timeout=self._positive("socket_connect_timeout", socket_connect_timeout),
                # One immediate retry replaces a pooled connection the server dropped (a
                # restart); redis-py's default backoff retries cost seconds per call in an outage.
                retry=Retry(NoBackoff(), 1),
                command_packer=PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode),
            )
            if url is not None:
                pool = redis.ConnectionPool.from_url(url, **options)
            else:
                pool = redis.ConnectionPool(host=host, port=port, db=db, password=password, **options)
            self._client = redis.Redis(connection_pool=pool)
            self._own_client = True
        self.address = _client_address(self._client)
        self._cluster = isinstance(self._client, redis.cluster.RedisCluster)

        self._entry_re = re.compile(
            rb"\A" + re.escape(key_prefix.encode())
            + rb"(" + b"|".join(lv.value.encode() for lv in CacheLevel) + rb"):[0-9a-f]{32}\Z"
        )
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._last_logged = -math.inf
        self._skipped = 0

    # -- validation -------------------------------------------------------------------

    @staticmethod
    def _positive(name, value):
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = math.nan
        if not (value > 0 and math.isfinite(value)):
            raise InvalidArgumentError(f"{name} must be a positive number of seconds")
        return value

    @staticmethod
    def _check_ttl(ttl):
        if ttl is None:
            return None
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (ttl > 0 and math.isfinite(ttl)):
            raise InvalidArgumentError(f"ttl must be a positive number of seconds or None, not {ttl!r}")
        return float(ttl)

    @staticmethod
    def _dependencies(dependencies):
        if isinstance(dependencies, str):
            dependencies = (dependencies,)
        try:
            deps = frozenset(dependencies)
        except TypeError:
            raise InvalidArgumentError(
                f"dependencies must be an iterable of str, not {dependencies!r}"
            ) from None
        for dep in deps:
            if not isinstance(dep, str):
                raise InvalidArgumentError(f"dependency names must be str, not {dep!r}")
        return deps

    # -- names ------------------------------------------------------------------------

    def _entry_name(self, key, level):
        return f"{self.key_prefix}{as_level(level).value}:{fingerprint_hex(key)}"

    def _chunk_prefix(self, name):
        return f"{self.key_prefix}_chunk:{{{name}}}:"

    def _lease_name(self, name):
        return f"{self.key_prefix}_lease:{{{name}}}"

    def _fence_name(self, name):
        return f"{self.key_prefix}_fence:{{{name}}}"

    def _dep_name(self, dependency):
        return f"{self.key_prefix}_dep:{dependency}"

    def _level_of(self, name):
        return name[len(self.key_prefix):].split(":", 1)[0]

    # -- connection handling ----------------------------------------------------------

    def _check_circuit(self):
        if self._down_until and time.monotonic() < self._down_until:
            with self._lock:
                self._skipped += 1
            raise BackendUnavailable(
                f"Redis at {self.address} is unavailable; the tier is skipped for up to "
                f"{self.retry_interval:g}s after the last failure"
            )

    def _failed(self, exc):
        """Open the circuit and return the BackendUnavailable to raise for ``exc``."""
        now = time.monotonic()
        with self._lock:
            self._down_until = now + self.retry_interval
            log = now - self._last_logged >= self.retry_interval
            if log:
                self._last_logged = now
        self.metrics.record_error(tier=self.tier_name, exc=exc)
        if log:
            logger.warning(
                "Redis at %s unreachable (%s); skipping the Redis tier for %gs",
                self.address, self._explain(exc), self.retry_interval,
            )
        if self._own_client:
            # Every pooled connection is stale after a server restart: drop them all now
            # rather than fail once per connection later.
            self._client.connection_pool.disconnect()
        return BackendUnavailable(f"Redis at {self.address} is unreachable: {self._explain(exc)}")

    def _explain(self, exc):
        # A kernel receive/send timeout surfaces as EAGAIN, which redis-py words as a
        # socket error: say what it means.
        if getattr(exc, "errno", None) in (errno.EAGAIN, errno.EWOULDBLOCK) or "Resource temporarily unavailable" in str(exc):
            within = "in time" if self.socket_timeout is None else f"within socket_timeout={self.socket_timeout:g}s"
            return f"Timeout: no answer {within}"
        return f"{type(exc).__name__}: {exc}"

    def _call(self, fn, *args, **kwargs):
        """Run one client operation under the circuit breaker, mapping redis-py's errors."""
        self._check_circuit()
        try:
            result = fn(*args, **kwargs)
        except redis.exceptions.NoScriptError:
            raise
        except redis.exceptions.ResponseError as exc:
            self.metrics.record_error(tier=self.tier_name, exc=exc)
            raise BackendError(f"Redis at {self.address} refused the command: {exc}") from exc
        except _UNREACHABLE as exc:
            raise self._failed(exc) from exc
        except redis.exceptions.RedisError as exc:
            self.metrics.record_error(tier=self.tier_name, exc=exc)
            raise BackendError(f"Redis at {self.address} failed: {type(exc).__name__}: {exc}") from exc
        if self._down_until:
            with self._lock:
                self._down_until = 0.0
            logger.warning("Redis at %s is back; caching resumes", self.address)
        return result

    def _load_scripts(self):
        for source in _SCRIPTS.values():
            self._client.script_load(source)

    def _script(self, name, keys, args):
        """EVALSHA one of our scripts, loading them first if the server does not know it."""
        def run():
            try:
                return self._client.evalsha(_SHAS[name], len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                self._load_scripts()
                return self._client.evalsha(_SHAS[name], len(keys), *keys, *args)

        return self._call(run)

    def _pipeline(self, build):
        """Run the commands ``build(pipe)`` queues in one round trip; return their replies."""
        def run():
            for attempt in (0, 1):
                try:
                    if self._cluster:
                        pipe = _Immediate(self._client)
                        build(pipe)
                        return pipe.replies
                    pipe = self._client.pipeline(transaction=False)
                    build(pipe)
                    return pipe.execute()
                except redis.exceptions.NoScriptError:
                    if attempt:
                        raise
                    self._load_scripts()

        return self._call(run)

    @staticmethod
    def _queue_script(pipe, name, keys, args):
        pipe.evalsha(_SHAS[name], len(keys), *keys, *args)

    @property
    def available(self):
        """False while the tier is skipped after a connection failure."""
        return not (self._down_until and time.monotonic() < self._down_until)

    def ping(self):
        """Return True if the server answers (raises BackendUnavailable otherwise)."""
        return bool(self._call(self._client.ping))

    # -- records ----------------------------------------------------------------------

    def _mac(self, name, header, meta, frame):
        mac = hmac.new(self._secret, digestmod=hashlib.sha256)
        mac.update(name.encode())
        mac.update(header)
        mac.update(meta)
        mac.update(frame)
        return mac.digest()

    def _build(self, name, frame, raw_nbytes, deps, cost, expires_at, write_id):
        """Return ``(record, chunk names)``; the record is the manifest for a chunked frame."""
        meta = {"d": sorted(deps), "c": cost, "e": expires_at, "r": raw_nbytes}
        chunked = len(frame) > self.chunk_size
        chunk_names = []
        if chunked:
            count = -(-len(frame) // self.chunk_size)
            prefix = self._chunk_prefix(name)
            chunk_names = [f"{prefix}{write_id}:{i}" for i in range(count)]
            meta["ck"] = chunk_names
            meta["cz"] = self.chunk_size
        meta_bytes = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode()
        flags = (_SIGNED if self._secret else 0) | (_CHUNKED if chunked else 0)
        header = _HEADER.pack(_MAGIC, _VERSION, flags, 0, len(meta_bytes), len(frame))
        signature = self._mac(name, header, meta_bytes, frame) if self._secret else b""
        if chunked:
            return header + signature + meta_bytes, chunk_names
        # An inline frame is at most chunk_size bytes: one bounded copy into the record.
        return b"".join((header, signature, meta_bytes, frame)), chunk_names

    def _parse(self, name, raw):
        """Return ``(flags, signature, header, meta bytes, meta, inline frame or None)``."""
        view = memoryview(raw)
        if len(view) < _HEADER.size:
            raise FrameError(f"record {name!r} has {len(view)} bytes, fewer than its {_HEADER.size}-byte header")
        magic, version, flags, _, meta_len, frame_len = _HEADER.unpack_from(view)
        if magic != _MAGIC:
            raise FrameError(f"record {name!r} does not start with {_MAGIC!r} (found {bytes(magic)!r})")
        if version != _VERSION or flags & ~(_SIGNED | _CHUNKED):
            raise FrameError(f"record {name!r} has unknown version {version} or flags {flags:#x}")
        offset = _HEADER.size
        signature = None
        if flags & _SIGNED:
            signature = bytes(view[offset:offset + _SIG_LEN])
            offset += _SIG_LEN
        meta_end = offset + meta_len
        expected = meta_end if flags & _CHUNKED else meta_end + frame_len
        if len(view) != expected:
            raise FrameError(f"record {name!r} has {len(view)} bytes where its header says {expected}")
        meta_bytes = view[offset:meta_end]
        try:
            meta = json.loads(bytes(meta_bytes))
        except ValueError as exc:
            raise FrameError(f"record {name!r} has unreadable meta: {exc}") from None
        if not isinstance(meta, dict):
            raise FrameError(f"record {name!r} has malformed meta {bytes(meta_bytes)[:200]!r}")
        deps, cost, expires = meta.get("d"), meta.get("c"), meta.get("e")
        if not (
            isinstance(deps, list) and all(isinstance(d, str) for d in deps)
            and isinstance(cost, (int, float))
            and (expires is None or isinstance(expires, (int, float)))
        ):
            raise FrameError(f"record {name!r} has malformed meta {bytes(meta_bytes)[:200]!r}")
        if flags & _CHUNKED:
            self._check_manifest(name, meta, frame_len)
        frame = None if flags & _CHUNKED else view[meta_end:]
        return flags, signature, view[:_HEADER.size], meta_bytes, meta, frame

    def _check_manifest(self, name, meta, frame_len):
        names, size = meta.get("ck"), meta.get("cz")
        prefix = self._chunk_prefix(name)
        if not (
            isinstance(size, int) and _MIN_CHUNK <= size <= _MAX_CHUNK
            and isinstance(names, list) and len(names) == -(-frame_len // size)
            and all(isinstance(n, str) and n.startswith(prefix) for n in names)
        ):
            raise FrameError(f"record {name!r} has a malformed chunk manifest")

    def _read_chunks(self, meta, frame_len):
        """Assemble a chunked frame into one new uint8 buffer (no bytes concatenation)."""
        names, size = meta["ck"], meta["cz"]
        expected = [min(size, frame_len - i * size) for i in range(len(names))]
        # Sizes first: the buffer we allocate is bounded by data really in Redis, not by a
        # length field someone could have forged.
        lengths = self._pipeline(lambda pipe: [pipe.strlen(n) for n in names])
        if lengths != expected:
            raise _ChunksChanged()
        buffer = np.empty(frame_len, dtype=np.uint8)
        whole = memoryview(buffer)
        views = [whole[i * size:i * size + n] for i, n in enumerate(expected)]
        per_group = max(1, _READ_GROUP_BYTES // size)
        for first in range(0, len(names), per_group):
            group, targets = names[first:first + per_group], views[first:first + per_group]
            if not self._call(self._read_direct, group, targets):
                parts = self._pipeline(lambda pipe: [pipe.get(n) for n in group])
                for part, target in zip(parts, targets):
                    if part is None or len(part) != len(target):
                        raise _ChunksChanged()
                    target[:] = part
        return buffer

    def _on_socket(self, commands, read):
        """Send ``commands`` pipelined and return ``(True, read(reader))`` from the socket.

        Possible on a redis-py connection pool whose connections use redis-py's own reader
        (the client this cache builds, and most user clients); with a cluster client, a
        hiredis reader or a reply other than the bulk strings asked for, it returns
        ``(False, None)`` and the caller goes through redis-py instead.
        """
        pool = getattr(self._client, "connection_pool", None)
        if _SocketBuffer is None or pool is None or self._cluster:
            return False, None
        connection = pool.get_connection()
        clean = False
        try:
            sock = _plain_socket(connection)
            if sock is None:
                clean = True
                return False, None
            connection.send_packed_command(connection.pack_commands(commands))
            reader = _BulkReader(sock)
            try:
                result = read(reader)
            except _UnexpectedReply:
                return False, None  # replies left unread: the connection is dropped below
            clean = not reader.pending
            return True, result
        finally:
            if not clean:
                connection.disconnect()
            pool.release(connection)

    def _read_direct(self, names, views):
        """GET ``names`` pipelined, each reply straight into its view; False if not possible."""
        def read(reader):
            for view in views:
                if not reader.read_into(view):
                    raise _ChunksChanged()  # the connection is dropped on the way out

        return self._on_socket([("GET", n) for n in names], read)[0]

    def _get(self, name):
        """GET one record: on the socket when possible, since redis-py's command path costs
        as much again as decoding a small value; else through redis-py."""
        done, raw = self._on_socket([("GET", name)], _BulkReader.read_bulk)
        return raw if done else self._client.get(name)

    def _discard(self, name, exc):
        """Delete a corrupt or forged record, count it and log it."""
        self.metrics.record_corrupt(tier=self.tier_name)
        logger.warning("discarding Redis entry %s: %s", name, exc)
        self._delete_names([name], count_as=None)

    def _fetch(self, name):
        """Return ``(value, meta, raw size, stored size)`` of entry ``name``, or None on a miss."""
        previous = None
        for _attempt in range(5):
            raw = self._call(self._get, name)
            if raw is None:
                return None
            try:
                flags, signature, header, meta_bytes, meta, frame = self._parse(name, raw)
                if frame is None:
                    frame = self._read_chunks(meta, _HEADER.unpack_from(header)[5])
                self._authenticate(name, signature, header, meta_bytes, frame)
            except _ChunksChanged:
                if raw != previous:
                    previous = raw
                    continue  # overwritten or deleted while we read: look again
                # The same manifest twice with a chunk missing: the chunk itself is gone
                # (evicted under maxmemory, deleted by hand), so the entry is unusable.
                self._discard(name, FrameError(f"record {name!r} lost one of its chunks"))
                return None
            except FrameError as exc:
                self._discard(name, exc)
                return None
            trusted = signature is not None and self._secret is not None
            if not trusted and not self.allow_pickle and _is_pickle(frame):
                raise UnsafePickleError(
                    f"Redis entry {name} holds a pickled value without a signature; "
                    "configure secret= (or TNFR_CACHE_SECRET) on every process, or pass "
                    "allow_pickle=True if every writer to this Redis is trusted"
                )
            try:
                value = loads(frame)
            except FrameError as exc:
                self._discard(name, exc)
                return None
            raw_nbytes = meta.get("r")
            return value, meta, raw_nbytes if isinstance(raw_nbytes, int) else len(frame), len(frame)
        return None  # rewritten faster than we could read it: a miss
        return None

    def _authenticate(self, name, signature, header, meta_bytes, frame):
        if self._secret is None:
            return
        if signature is None:
            raise SignatureError(f"record {name!r} is not signed and this cache requires signatures")
        if not hmac.compare_digest(signature, self._mac(name, header, meta_bytes, frame)):
            raise SignatureError(f"record {name!r} has a bad signature (tampered, or another secret)")

    # -- the tier interface -----------------------------------------------------------

    def lookup(self, key, level=DEFAULT_LEVEL, *, copy=False):
        """Return the :class:`Entry` stored under ``(key, level)``, or None on a miss.

        Raises
        ------
        BackendUnavailable
            The server cannot be reached (or the tier is skipped after a recent failure).
        UnsafePickleError
            The value is an unsigned pickle and ``allow_pickle`` is off.
        """
        level = as_level(level)
        return self._lookup(self._entry_name(key, level), level, copy, count_miss=True)

    def _lookup(self, name, level, copy, count_miss):
        start = time.perf_counter()
        found = self._fetch(name)
        if found is None:
            if count_miss:
                self.metrics.record_miss(level, time.perf_counter() - start, tier=self.tier_name)
            return None
        value, meta, raw_nbytes, stored_nbytes = found
        if not copy:
            _freeze(value)
        self.metrics.record_read(raw_nbytes, tier=self.tier_name, stored_nbytes=stored_nbytes)
        self.metrics.record_hit(level, time.perf_counter() - start, meta["c"], tier=self.tier_name)
        return Entry(value, frozenset(meta["d"]), float(meta["c"]), meta["e"])

    def set(self, key, value, level=DEFAULT_LEVEL, dependencies=(), computation_cost=1.0, ttl=None):
        """Store ``value`` under ``(key, level)``; return True.

        ``ttl`` (seconds) overrides the cache's default. As in the seed's sketch, a number
        in the fourth position is a TTL (``set(key, value, level, 3600, {"dep"})``).

        Raises
        ------
        BackendUnavailable
            The server cannot be reached.
        BackendError
            The server refused the write (out of memory, read-only replica, ...).
        """
        if isinstance(dependencies, (int, float)) and not isinstance(dependencies, bool) and ttl is None:
            ttl, dependencies = dependencies, ()
            if not isinstance(computation_cost, (int, float)):
                dependencies, computation_cost = computation_cost, 1.0
        return self._store(key, value, level, dependencies, computation_cost, ttl, token=None)

    def _store(self, key, value, level, dependencies, computation_cost, ttl, token):
        level = as_level(level)
        name = self._entry_name(key, level)
        deps = self._dependencies(dependencies)
        ttl = self.default_ttl if ttl is None else self._check_ttl(ttl)
        try:
            cost = float(computation_cost)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"computation_cost must be a number, not {computation_cost!r}") from None
        if not math.isfinite(cost):
            raise InvalidArgumentError(f"computation_cost must be finite, not {cost!r}")
        start = time.perf_counter()
        frame = memoryview(dumps(value, compression=self.compression)).cast("B")
        expires_at = None if ttl is None else time.time() + ttl
        ttl_ms = 0 if ttl is None else max(1, math.ceil(ttl * 1000))
        raw_nbytes = frame_info(frame)["raw_nbytes"]
        record, chunk_names = self._build(name, frame, raw_nbytes, deps, cost, expires_at, secrets.token_hex(8))
        size = self.chunk_size
        chunk_lengths = [min(size, len(frame) - i * size) for i in range(len(chunk_names))]
        keys = [name, self._lease_name(name), self._fence_name(name), *chunk_names]
        args = [record, ttl_ms, "" if token is None else str(token), self._chunk_prefix(name), *chunk_lengths]

        def build(pipe):
            # Index first, then the value: an entry is never visible without its dependencies.
            for dep in deps:
                self._queue_script(pipe, "depend", [self._dep_name(dep)], [name, ttl_ms])
            for i, chunk_name in enumerate(chunk_names):
                pipe.set(chunk_name, frame[i * size:(i + 1) * size], px=_PROVISIONAL_CHUNK_MS)
            self._queue_script(pipe, "write", keys, args)

        if deps or chunk_names:
            old_deps = self._pipeline(build)[-1]
        else:
            old_deps = self._script("write", keys, args)
        if old_deps is None:
            return False  # a newer lease or write came after ours: the fencing token is stale
        stale = {_as_name(d) for d in old_deps} - deps
        if stale:
            self._pipeline(lambda pipe: [pipe.srem(self._dep_name(d), name) for d in stale])
        self.metrics.record_set(
            level, raw_nbytes, tier=self.tier_name,
            stored_nbytes=len(frame), duration=time.perf_counter() - start,
        )
        return True

    def delete(self, key, level=DEFAULT_LEVEL):
        """Remove ``(key, level)`` and its chunks; return True if it was present."""
        return self._delete_names([self._entry_name(key, level)], count_as=None) == 1

    def _delete_names(self, names, count_as):
        """Delete entries (chunks and index memberships too); return how many existed.

        ``count_as="invalidation"`` records them as invalidations per level.
        """
        names = [_as_name(n) for n in names]
        if not names:
            return 0
        replies = self._pipeline(
            lambda pipe: [self._queue_script(pipe, "delete", [n], [self._chunk_prefix(n)]) for n in names]
        )
        removed_by_level = {}
        memberships = []
        for name, (removed, deps) in zip(names, replies):
            if removed:
                level = self._level_of(name)
                removed_by_level[level] = removed_by_level.get(level, 0) + 1
            memberships.extend((self._dep_name(_as_name(d)), name) for d in deps)
        if memberships:
            self._pipeline(lambda pipe: [pipe.srem(dep, name) for dep, name in memberships])
        if count_as == "invalidation":
            for level, count in removed_by_level.items():
                self.metrics.record_invalidation(level, count, tier=self.tier_name)
        return sum(removed_by_level.values())

    def _scan(self, pattern):
        """Names matching the glob ``pattern`` (SCAN, never KEYS), in batches."""
        batch = []
        for name in self._call(lambda: list(self._client.scan_iter(match=pattern, count=1000))):
            batch.append(name)
            if len(batch) >= _SCAN_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def invalidate_by_pattern(self, pattern):
        """Remove the entries whose name after ``key_prefix`` matches the glob ``pattern``.

        Names are ``<level>:<digest>``, so ``"temporary:*"`` is one level and ``"*"``
        every entry. Uses SCAN and deletes in batches (never KEYS). Returns how many
        entries were removed.
        """
        if not isinstance(pattern, str):
            raise InvalidArgumentError(f"pattern must be a str glob, not {pattern!r}")
        total = 0
        for batch in self._scan(_glob_escape(self.key_prefix) + pattern):
            entries = [n for n in batch if self._entry_re.match(n)]
            total += self._delete_names(entries, count_as="invalidation")
        return total

    def invalidate_level(self, level):
        """Remove every entry of ``level``; return how many were removed."""
        return self.invalidate_by_pattern(as_level(level).value + ":*")

    def invalidate_by_dependency(self, dependency):
        """Remove every entry (of any process) that named ``dependency``; return the count."""
        if not isinstance(dependency, str):
            raise InvalidArgumentError(f"dependency must be a str name, not {dependency!r}")
        dep_name = self._dep_name(dependency)
        total = 0
        while True:
            # SPOP takes members out atomically: a writer adding one meanwhile is either
            # taken in this loop or keeps its membership for the next invalidation.
            names = self._call(self._client.spop, dep_name, _SCAN_BATCH)
            if not names:
                return total
            total += self._delete_names(names, count_as="invalidation")

    def clear(self):
        """Remove every key under ``key_prefix``: entries, chunks, indexes, leases."""
        for batch in self._scan(_glob_escape(self.key_prefix) + "*"):
            self._call(self._client.unlink, *batch)

    def __len__(self):
        """Number of entries (a SCAN of this cache's keys: O(keys))."""
        count = 0
        for batch in self._scan(_glob_escape(self.key_prefix) + "*"):
            count += sum(1 for n in batch if self._entry_re.match(n))
        return count

    def get_stats(self):
        """The metrics summary (hits, misses, hit_rate, evictions, invalidations, errors,
        corrupt, ...) plus this tier's address and state.

        ``skipped`` counts calls refused while the tier was skipped after a failure;
        ``available`` says whether it is skipped now.
        """
        stats = dict(self.metrics.get_summary())
        stats.update(
            tier=self.tier_name,
            address=self.address,
            key_prefix=self.key_prefix,
            available=self.available,
            skipped=self._skipped,
            signed=self._secret is not None,
        )
        return stats

    # -- stampede protection ----------------------------------------------------------

    def get_or_compute(
        self, key, level=DEFAULT_LEVEL, fn=None, *, dependencies=(), computation_cost=1.0,
        ttl=None, copy=False, wait_timeout=None,
    ):
        """Return the cached value of ``(key, level)``, computing it with ``fn()`` once.

        Across processes, one caller takes a lease and computes; the others poll until
        its value appears. The holder renews the lease while it computes; the lease
        expires ``lease_timeout`` seconds after its holder dies, and its fencing token
        stops a holder that outlived its lease from overwriting a newer value. A waiter waits as long as the holder
        lives, or at most ``wait_timeout`` seconds if given, then computes the value itself. When Redis is
        unreachable, ``fn()`` is called and its result returned uncached (the failure is
        counted in the stats); exceptions from ``fn`` reach the caller and release the lease.
        """
        if not callable(fn):
            raise InvalidArgumentError(f"fn must be callable, not {fn!r}")
        level = as_level(level)
        name = self._entry_name(key, level)
        lease, fence = self._lease_name(name), self._fence_name(name)
        lease_ms = math.ceil(self.lease_timeout * 1000)
        fence_ms = 4 * lease_ms + 60_000
        start = time.monotonic()
        deadline = math.inf if wait_timeout is None else start + wait_timeout
        delay = 0.002
        token = None
        try:
            # Polls while another process computes are not misses: one call counts one hit
            # (found, perhaps after waiting) or one miss (computed here).
            while True:
                entry = self._lookup(name, level, copy, count_miss=False)
                if entry is not None:
                    return entry.value
                token = self._script("acquire", [lease, fence], [lease_ms, fence_ms])
                if token is not None:
                    # The previous holder may have stored its value and released the lease
                    # between our lookup and our acquire: look once more before computing.
                    entry = self._lookup(name, level, copy, count_miss=False)
                    if entry is not None:
                        self._release(name, token)
                        return entry.value
                    break
                if time.monotonic() >= deadline:
                    break
                time.sleep(delay)
                delay = min(2 * delay, 0.05)
        except (BackendUnavailable, BackendError, UnsafePickleError):
            token = _OFFLINE
        if token is _OFFLINE:
            # The tier cannot help now: compute, as the decorator would on a miss (outside
            # the handler, so fn's own errors do not come chained to the tier's).
            return fn()
        self.metrics.record_miss(level, time.monotonic() - start, tier=self.tier_name)
        stop_renewing = self._keep_lease(lease, fence, token, lease_ms, fence_ms)
        try:
            value = fn()
        except BaseException:
            stop_renewing()
            if token is not None:
                self._release(name, token)
            raise
        stop_renewing()
        try:
            self._store(key, value, level, dependencies, computation_cost, ttl, token=token)
        except (BackendUnavailable, BackendError):
            pass  # counted where it failed; the caller still gets its value
        return value

    def _keep_lease(self, lease, fence, token, lease_ms, fence_ms):
        """Renew the lease while its holder computes; return the function that stops it.

        So a computation may outlast ``lease_timeout``: the lease only expires once its
        holder has died (or lost Redis for longer than the lease).
        """
        if token is None:
            return lambda: None
        stop = threading.Event()

        def renew():
            while not stop.wait(self.lease_timeout / 3):
                try:
                    if not self._script("renew", [lease, fence], [token, lease_ms, fence_ms]):
                        return  # taken over: our write will be fenced off anyway
                except (BackendUnavailable, BackendError):
                    return

        threading.Thread(target=renew, name="tnfr-redis-lease", daemon=True).start()
        return stop.set

    def _release(self, name, token):
        try:
            self._script("release", [self._lease_name(name)], [token])
        except (BackendUnavailable, BackendError):
            pass  # the lease expires by itself

    def close(self):
        """Disconnect the client this cache built (a client passed in is left open)."""
        if self._own_client:
            self._client.close()

    def __repr__(self):
        return f"RedisCache({self.address!r}, key_prefix={self.key_prefix!r})"
