"""The disk tier: compressed, checksummed, crash-safe value files shared by processes.

Layout of a cache directory::

    cache_dir/index.sqlite3                          the index (SQLite, WAL mode)
    cache_dir/generation                             8-byte change counter
    cache_dir/<level>/<hex[:2]>/<hex>.<token>.tfc    one frame per entry

``<hex>`` is :func:`tnfr_fastcache.fingerprint_hex` of the key (never the key text, so a key
such as ``"../../escape"`` names a file inside the directory like any other) and ``<token>``
is random per write. A value file is written completely under a temporary name, renamed,
and only then does its index row point at it; a reader finds the file through the row and
trusts it only once its checksums verify. A crash therefore leaves at worst a file without
a row, which :meth:`CompressedPersistentCache.gc` removes. Because every write gets a new
file name, a row never describes another write's file, and a reader holding a file open
keeps a complete value even if a writer replaces the entry meanwhile.

The index keeps levels, dependencies, sizes, costs and access times, so invalidation in
one process removes what another wrote, and survives restarts. The processes sharing a
directory must run on one machine: SQLite's WAL mode and the change counter
(``cache_dir/generation``, which tells memory fronts when to re-check) use shared memory,
which network file systems do not provide.

``max_disk_mb`` bounds the bytes of all value files and is enforced on every write in the
same transaction as the insertion (least recently used first, or cheapest to recompute per
byte with ``eviction="cost"``). The default is **unbounded**: nothing is evicted unless you
ask for a limit.
"""

import logging
import math
import mmap as _mmap
import os
import re
import secrets
import threading
import time
from typing import NamedTuple

import numpy as np

from .. import serialize
from ..errors import (
    BackendError,
    BackendUnavailable,
    FrameError,
    InvalidArgumentError,
)
from ..keys import fingerprint_hex
from ..levels import CacheLevel, as_level
from ..telemetry import CacheMetrics
from ._diskindex import EVICTION_POLICIES, INDEX_NAME, DiskIndex, IndexRow
from .base import DEFAULT_LEVEL, CacheTier, Entry

__all__ = ["CompressedPersistentCache", "PersistentTNFRCache", "DiskEntry"]

logger = logging.getLogger(__name__)

_MB = 1024 * 1024
_SUFFIX = ".tfc"
_TEMP_SUFFIX = ".tmp"
# Uncompressed array frames smaller than this are decoded (copied): a view is not worth
# the separate checksum pass.
_SMALL_FILE = 1 << 16
_READ_RETRIES = 3
# Bound on remembered checks of memory copies; forgetting them only costs a re-check.
_MAX_FRONT_CHECKED = 1 << 16
_LEVEL_NAMES = frozenset(level.value for level in CacheLevel)
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX16 = re.compile(r"[0-9a-f]{16}")


class DiskEntry(NamedTuple):
    """One entry of a disk cache as :meth:`CompressedPersistentCache.entries` lists it.

    Attributes
    ----------
    key_hex : str
        The key's fingerprint (32 hex characters); the key itself is not stored.
    level : str
        The level's value (``"derived_metrics"``, ...).
    path : str
        The value file.
    raw_size, stored_size : int
        Bytes before and after compression (``stored_size`` is the file's size).
    codec : str
        The compression of the frame (``"lz4"``, ``"none"``, ...).
    computation_cost : float
        The cost given to ``set``.
    created, last_access : float
        ``time.time()`` seconds; access times are written in batches, so they may lag a
        few seconds behind.
    expires : float or None
        When the entry expires, None for never.
    dependencies : tuple of str
        What :meth:`~CompressedPersistentCache.invalidate_by_dependency` removes it by.
    """

    key_hex: str
    level: str
    path: str
    raw_size: int
    stored_size: int
    codec: str
    computation_cost: float
    created: float
    last_access: float
    expires: "float | None"
    dependencies: tuple


def _number(value, name, accept, expected):
    """``float(value)`` if ``accept`` of it holds, else InvalidArgumentError naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not accept(number):
        raise InvalidArgumentError(f"{name} must be {expected}, not {value!r}")
    return number


def _check_ttl(ttl):
    if ttl is None:
        return None
    ttl = _number(ttl, "ttl", lambda x: x > 0, "a positive number of seconds or None")
    return None if math.isinf(ttl) else ttl


def _check_cost(cost):
    return _number(cost, "computation_cost", lambda x: 0 <= x < math.inf, "a finite number >= 0")


def _check_dependencies(dependencies):
    if dependencies is None:
        return frozenset()
    if isinstance(dependencies, str):
        return frozenset((dependencies,))
    deps = frozenset(dependencies)
    bad = [d for d in deps if not isinstance(d, str)]
    if bad:
        raise InvalidArgumentError(f"dependencies must be strings, got {bad[0]!r}")
    return deps


def _budget_bytes(max_disk_mb):
    """``max_disk_mb`` -> bytes; None stays None (use the directory's), inf means no limit."""
    if max_disk_mb is None:
        return None
    value = _number(max_disk_mb, "max_disk_mb", lambda x: x > 0, "a positive number of MiB, math.inf or None")
    return math.inf if math.isinf(value) else int(value * _MB)


def _backend_error(exc, action, path):
    """Wrap an OSError from the file system, keeping its errno, naming what failed."""
    reason = exc.strerror or str(exc)
    return BackendError(exc.errno, f"disk cache cannot {action}: {reason}", os.fspath(path))


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        # The row is already gone, so the file is an orphan that gc() will retry.
        logger.warning("disk cache could not remove %s: %s", path, exc)


def _read_only(value):
    """Mark the arrays of a freshly decoded value read-only (the tier's contract)."""
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _read_only(item)
    elif isinstance(value, dict):
        for item in value.values():
            _read_only(item)
    return value


class CompressedPersistentCache(CacheTier):
    """A cache of compressed, checksummed frames in a directory several processes share.

    Parameters
    ----------
    cache_dir : str or os.PathLike
        The directory; created if missing (unless ``create=False``). Opening an existing
        directory needs no other argument: frames say how they were compressed and the
        directory remembers its budget.
    compression : str
        Codec of new frames: ``"lz4"`` (default), ``"zstd"``, ``"gzip"``, ``"none"`` or
        ``"auto"`` (the codec chooses per value). Only ``"none"`` frames of arrays can be
        memory-mapped by ``mmap=True``.
    max_memory_mb : float or None
        Size of an in-process memory tier in front of the disk (None: no memory tier).
        A hit is checked against the index (one SQLite lookup) whenever any process
        has removed or replaced an entry since the last check, so an entry another
        process deleted or replaced is not served from memory.
    max_disk_mb : float or None
        Bound on the bytes of all value files (MiB; the index database and file-system
        block rounding are not counted), enforced on every write by evicting entries. None keeps the directory's stored limit, which is **no limit** unless some
        opener set one; ``math.inf`` removes a stored limit. A value larger than the whole
        budget is refused (``set`` returns False, counted as ``rejected``).
    shuffle : {"auto", True, False}
        Byte shuffle of array frames (see :func:`tnfr_fastcache.serialize.dumps`).
    eviction : {"lru", "cost"} or None
        Which entries go first when over budget: least recently used, or cheapest to
        recompute per byte (``computation_cost / stored bytes``). None keeps the directory's
        (``"lru"`` by default). Expired entries always go first.
    fsync : bool
        Also ``fsync`` each value file and its directory, and commit the index with
        ``synchronous=FULL``: entries survive power loss, not just process crashes.
    metrics : CacheMetrics or None
        Where to record hits, misses, evictions...; a new instance when None.
    create : bool
        Create ``cache_dir`` if it does not exist; with False a missing directory raises
        :class:`~tnfr_fastcache.BackendUnavailable` (what a command-line tool wants).
    timeout : float
        Seconds to wait for another process's index transaction.
    orphan_grace : float
        Files without an index row younger than this many seconds are left alone by
        :meth:`gc` and :meth:`verify`: another process may be about to commit them.

    Raises
    ------
    BackendError
        If the directory or its index cannot be created or opened (permissions, disk full).

    Notes
    -----
    Values come back with read-only arrays unless ``copy=True``. ``mmap=True`` on the load
    methods returns, for an uncompressed array frame, a read-only array backed by the file
    (the file is not read until the array is).
    """

    tier_name = "disk"

    def __init__(
        self,
        cache_dir,
        compression="lz4",
        max_memory_mb=None,
        max_disk_mb=None,
        *,
        shuffle="auto",
        eviction=None,
        fsync=False,
        metrics=None,
        create=True,
        timeout=30.0,
        orphan_grace=60.0,
    ):
        self.cache_dir = os.path.abspath(os.fspath(cache_dir))
        self.compression = compression
        self._shuffle = shuffle
        self._fsync = bool(fsync)
        self.orphan_grace = float(orphan_grace)
        self.metrics = CacheMetrics() if metrics is None else metrics
        # Level values, not members: hashing an Enum member runs Python code on every lookup.
        self._persisted = frozenset(level.value for level in CacheLevel)
        budget = _budget_bytes(max_disk_mb)
        if eviction is not None and eviction not in EVICTION_POLICIES:
            raise InvalidArgumentError(f"eviction must be one of {EVICTION_POLICIES}, not {eviction!r}")
        # Refuse a codec name before anything is written with it.
        serialize.dumps(None, compression=compression)

        if not os.path.isdir(self.cache_dir):
            if not create:
                raise BackendUnavailable(f"disk cache directory {self.cache_dir} does not exist")
            try:
                os.makedirs(self.cache_dir, exist_ok=True)
            except OSError as exc:
                raise _backend_error(exc, "create its directory", self.cache_dir) from exc
        self._index = DiskIndex(self.cache_dir, fsync=self._fsync, timeout=timeout)
        if budget is not None:
            self._index.set_meta("max_disk_bytes", None if math.isinf(budget) else budget)
        if eviction is not None:
            self._index.set_meta("eviction", eviction)
        stored = self._index.get_meta("max_disk_bytes")
        self.max_disk_bytes = None if stored is None else int(stored)
        self.eviction = self._index.get_meta("eviction", "lru")

        self._front = self._memory_tier(max_memory_mb)
        # Entries kept in memory only (PersistentTNFRCache's unpersisted levels and
        # persist_to_disk=False); a CompressedPersistentCache persists everything.
        self._volatile = None
        # (digest, level value) of persisted levels' entries held in memory only
        # (persist_to_disk=False), so lookups know to ask the memory-only tier first.
        self._volatile_keys = set()
        # (digest, level value) -> index generation at which its memory copy was last checked.
        self._front_checked = {}
        self._dirs_made = set()
        self._dirs_lock = threading.Lock()

    @staticmethod
    def _memory_tier(max_memory_mb):
        if max_memory_mb is None or max_memory_mb == 0:
            return None
        from .memory import TNFRHierarchicalCache

        # Its own counters stay off: every hit it serves is recorded here, once.
        return TNFRHierarchicalCache(max_memory_mb=max_memory_mb, enable_metrics=False)

    # -- names --------------------------------------------------------------------------

    @property
    def max_disk_mb(self):
        """The enforced bound in MiB, or None when the directory is unbounded."""
        return None if self.max_disk_bytes is None else self.max_disk_bytes / _MB

    def _path(self, level, digest, token):
        return os.path.join(self.cache_dir, level, digest[:2], f"{digest}.{token}{_SUFFIX}")

    def _row_path(self, row):
        # Rows come from a file anyone with write access could edit; a path built from
        # them must not leave the cache directory (clear() and gc() unlink it).
        if not (row.level in _LEVEL_NAMES and _HEX32.fullmatch(row.digest) and _HEX16.fullmatch(row.token)):
            raise BackendError(
                f"disk cache index {self._index.path} has a row this library did not write: "
                f"level={row.level!r} digest={row.digest!r} token={row.token!r}"
            )
        return self._path(row.level, row.digest, row.token)

    def __repr__(self):
        limit = "unbounded" if self.max_disk_bytes is None else f"{self.max_disk_mb:g} MiB"
        return f"{type(self).__name__}({self.cache_dir!r}, compression={self.compression!r}, max_disk={limit})"

    # -- writing ------------------------------------------------------------------------

    def set(self, key, value, level=DEFAULT_LEVEL, dependencies=(), computation_cost=1.0, ttl=None):
        """Store ``value`` under ``(key, level)`` on disk (and in the memory front).

        Parameters
        ----------
        key : object
            Anything :func:`tnfr_fastcache.fingerprint` accepts.
        value : object
            Arrays are stored as frames, anything else with pickle protocol 5.
        level : CacheLevel or str
        dependencies : iterable of str
            Names :meth:`invalidate_by_dependency` removes the entry by.
        computation_cost : float
            What the value cost to compute (used by ``eviction="cost"``).
        ttl : float or None
            Seconds until the entry expires; None for never.

        Returns
        -------
        bool
            True if stored; False if the frame is larger than the whole disk budget.

        Raises
        ------
        BackendError
            The file or the index cannot be written (disk full, permission denied, the
            directory removed under us); nothing half-written is left behind.
        """
        level = as_level(level)
        digest = fingerprint_hex(key)
        deps = _check_dependencies(dependencies)
        cost = _check_cost(computation_cost)
        ttl = _check_ttl(ttl)
        if level.value not in self._persisted:
            return self._set_volatile(digest, value, level, deps, cost, ttl)
        if (digest, level.value) in self._volatile_keys:
            self._volatile_keys.discard((digest, level.value))
            self._volatile.delete(digest, level)
        try:
            return self._set_disk(digest, value, level, deps, cost, ttl)
        except OSError as exc:
            self.metrics.record_error(tier=self.tier_name, exc=exc)
            raise

    def _set_volatile(self, digest, value, level, deps, cost, ttl):
        """Keep ``value`` in memory only, removing any disk copy so it cannot come back."""
        if self._volatile is None:
            self.metrics.record_rejected(level, tier=self.tier_name)
            return False
        if level.value in self._persisted:
            if self._front is not None:
                self._front.delete(digest, level)
            removed = self._index.remove(level.value, digest)
            self._remove_rows([removed])
            self._volatile_keys.add((digest, level.value))
        return self._volatile.set(digest, value, level, deps, cost, ttl)

    def _set_disk(self, digest, value, level, deps, cost, ttl):
        start = time.perf_counter()
        frame = serialize.dumps(value, compression=self.compression, shuffle=self._shuffle)
        info = serialize.frame_info(frame)
        stored_size = len(frame)
        if self.max_disk_bytes is not None and stored_size > self.max_disk_bytes:
            # The caller meant to replace the entry, so the older value must not survive.
            self._remove_one(digest, level)
            self.metrics.record_rejected(level, tier=self.tier_name)
            return False
        token = secrets.token_hex(8)
        path = self._path(level.value, digest, token)
        self._write_file(path, frame)
        now = time.time()
        row = IndexRow(
            level=level.value,
            digest=digest,
            token=token,
            raw_size=int(info["raw_nbytes"]),
            stored_size=stored_size,
            codec=str(info["codec"]),
            cost=cost,
            created=now,
            last_access=now,
            expires=None if ttl is None else now + ttl,
            dependencies=tuple(sorted(deps)),
        )
        try:
            replaced, evicted = self._index.put(row, self.max_disk_bytes, self.eviction)
        except BaseException:
            _unlink(path)
            raise
        delta = stored_size
        if replaced is not None:
            _unlink(self._row_path(replaced))
            delta -= replaced.stored_size
        self.metrics.adjust_size(level, delta, tier=self.tier_name)
        self._forget_evicted(evicted)
        self.metrics.record_set(
            level, row.raw_size, tier=self.tier_name, stored_nbytes=stored_size,
            duration=time.perf_counter() - start,
        )
        if self._front is not None:
            self._front.delete(digest, level)
            self._front.set(digest, (token, value), level, deps, cost, ttl)
        return True

    def _make_dirs(self, directory):
        if directory in self._dirs_made:
            return
        os.makedirs(directory, exist_ok=True)
        with self._dirs_lock:
            self._dirs_made.add(directory)

    def _write_file(self, path, frame):
        """Write ``frame`` to ``path`` atomically: complete under a temporary name, then renamed."""
        directory = os.path.dirname(path)
        temp = path[: -len(_SUFFIX)] + _TEMP_SUFFIX
        try:
            try:
                self._make_dirs(directory)
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                # The directory was removed under us (clear by another process, rm -rf).
                with self._dirs_lock:
                    self._dirs_made.discard(directory)
                self._make_dirs(directory)
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise _backend_error(exc, "create a value file", temp) from exc
        try:
            try:
                view = memoryview(frame).cast("B")
                written = 0
                while written < len(view):
                    written += os.write(fd, view[written:])
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
            if self._fsync:
                dir_fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            _unlink(temp)
            _unlink(path)
            raise _backend_error(exc, "write a value file", path) from exc

    def _forget_evicted(self, evicted):
        for row in evicted:
            _unlink(self._row_path(row))
            self.metrics.record_eviction(row.level, tier=self.tier_name, nbytes=row.stored_size)
            self.metrics.adjust_size(row.level, -row.stored_size, tier=self.tier_name)

    def _forget_removed(self, rows, invalidation):
        by_level = {}
        for row in rows:
            _unlink(self._row_path(row))
            by_level[row.level] = by_level.get(row.level, 0) + 1
            self.metrics.adjust_size(row.level, -row.stored_size, tier=self.tier_name)
        if invalidation:
            for level, count in by_level.items():
                self.metrics.record_invalidation(level, count, tier=self.tier_name)

    # -- reading ------------------------------------------------------------------------

    def lookup(self, key, level=DEFAULT_LEVEL, *, copy=False, mmap=False, verify=True):
        """Return the :class:`~tnfr_fastcache.backends.base.Entry` of ``(key, level)``, or None.

        Parameters
        ----------
        key : object
        level : CacheLevel or str
        copy : bool
            Give arrays as private writeable copies instead of read-only ones.
        mmap : bool
            Map the value file instead of reading it: an uncompressed array frame comes
            back as a read-only array backed by the file (the memory front is bypassed).
        verify : bool
            False skips the payload checksums (the frame header is always checked); with
            ``mmap=True`` nothing of the payload is then read until the array is used.

        Returns
        -------
        Entry or None
            None when absent, expired or corrupt (a corrupt entry is removed, counted as
            ``corrupt`` and logged).

        Raises
        ------
        BackendError
            The value file or index exists but cannot be read (permission denied, I/O error).
        """
        start = time.perf_counter()
        level = as_level(level)
        digest = fingerprint_hex(key)
        if level.value not in self._persisted:
            if self._volatile is None:
                self.metrics.record_miss(level, time.perf_counter() - start, tier="memory")
                return None
            # The memory-only tier shares our metrics and counts this hit or miss itself.
            return self._volatile.lookup(digest, level, copy=copy)
        if (digest, level.value) in self._volatile_keys:
            entry = self._volatile.lookup(digest, level, copy=copy)
            if entry is not None:
                return entry
            self._volatile_keys.discard((digest, level.value))
        if self._front is not None and not mmap:
            entry = self._front_lookup(digest, level, copy)
            if entry is not None:
                self.metrics.record_hit(level, time.perf_counter() - start, entry.computation_cost, tier="memory")
                return entry
        try:
            found = self._read_disk(digest, level, copy, mmap, verify)
        except OSError as exc:
            self.metrics.record_error(tier=self.tier_name, exc=exc)
            raise
        if found is None:
            self.metrics.record_miss(level, time.perf_counter() - start, tier=self.tier_name)
            return None
        row, value = found
        entry = Entry(value, frozenset(row.dependencies), row.cost, row.expires)
        self.metrics.record_hit(level, time.perf_counter() - start, row.cost, tier=self.tier_name)
        self.metrics.record_read(row.raw_size, tier=self.tier_name, stored_nbytes=row.stored_size)
        if self._front is not None and not mmap:
            ttl = None if row.expires is None else row.expires - time.time()
            if ttl is None or ttl > 0:
                self._front.set(digest, (row.token, value), level, entry.dependencies, row.cost, ttl)
        return entry

    def _front_lookup(self, digest, level, copy):
        entry = self._front.lookup(digest, level, copy=copy)
        if entry is None:
            return None
        token, value = entry.value
        # Another process may have replaced or removed the entry: memory serves it only if
        # the index still points at the very file this copy was made from. That is known
        # without asking the index until some process removes or replaces any entry.
        generation = self._index.generation()
        if self._front_checked.get((digest, level.value)) != generation:
            if self._index.token_of(level.value, digest) != token:
                self._front.delete(digest, level)
                self._front_checked.pop((digest, level.value), None)
                return None
            if len(self._front_checked) >= _MAX_FRONT_CHECKED:
                self._front_checked.clear()
            self._front_checked[(digest, level.value)] = generation
        self._index.touch(level.value, digest, time.time())
        return Entry(value, entry.dependencies, entry.computation_cost, entry.expires_at)

    def _read_disk(self, digest, level, copy, mmap, verify):
        """Return ``(row, value)`` from disk, or None; removes what is expired or corrupt."""
        previous = None
        for _ in range(_READ_RETRIES):
            row = self._index.get(level.value, digest)
            if row is None:
                return None
            if row.expires is not None and row.expires <= time.time():
                self._remove_rows([self._index.remove(row.level, row.digest, row.token)])
                return None
            if previous is not None and row.token == previous.token:
                # Same row, file gone: deleted under us, not replaced by a writer.
                self._drop_corrupt(row, "value file deleted")
                return None
            path = self._row_path(row)
            try:
                value = self._load_file(path, row, copy, mmap, verify)
            except FileNotFoundError:
                previous = row
                continue
            except FrameError as exc:
                self._drop_corrupt(row, str(exc))
                return None
            except OSError as exc:
                raise _backend_error(exc, "read a value file", path) from exc
            self._index.touch(row.level, row.digest, time.time())
            return row, value
        self._drop_corrupt(previous, "value file keeps disappearing")
        return None

    def _load_file(self, path, row, copy, mmap, verify):
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size != row.stored_size:
                raise FrameError(f"{path} has {size} bytes, the index says {row.stored_size}")
            if mmap:
                buf = _mmap.mmap(fd, 0, access=_mmap.ACCESS_READ)
            else:
                # A numpy buffer: large ones get huge pages (PERFORMANCE.md, lesson 1).
                buf = np.empty(size, dtype=np.uint8)
                got = 0
                while got < size:
                    n = os.readv(fd, [buf[got:]])
                    if n == 0:
                        raise FrameError(f"{path} ended after {got} of {size} bytes")
                    got += n
        finally:
            os.close(fd)
        if not copy and row.codec == "none" and (mmap or size > _SMALL_FILE):
            info = serialize.frame_info(buf)
            if info["kind"] == "ndarray" and not info["shuffle"]:
                # A read-only view of ``buf`` (our own buffer, or the file's mapping) saves
                # a copy; the payload checksum is then checked in a pass of its own.
                if verify:
                    serialize.verify_frame(buf)
                return serialize.loads(buf, view=True, verify=False)
        # A plain decode makes fresh writeable arrays: the private copy ``copy`` asks for.
        value = serialize.loads(buf, verify=verify)
        return value if copy else _read_only(value)

    def _drop_corrupt(self, row, problem):
        logger.warning("disk cache entry %s/%s is corrupt (%s); removed", row.level, row.digest, problem)
        self.metrics.record_corrupt(tier=self.tier_name)
        removed = self._index.remove(row.level, row.digest, row.token)
        self._remove_rows([removed] if removed else [])

    def _remove_rows(self, rows, invalidation=False):
        self._forget_removed([r for r in rows if r is not None], invalidation)

    # -- removing -----------------------------------------------------------------------

    def _remove_one(self, digest, level):
        present = False
        if self._volatile is not None:
            self._volatile_keys.discard((digest, level.value))
            present = self._volatile.delete(digest, level)
        if self._front is not None:
            self._front.delete(digest, level)
        row = self._index.remove(level.value, digest)
        if row is not None:
            self._remove_rows([row])
            present = True
        return present

    def delete(self, key, level=DEFAULT_LEVEL):
        """Remove ``(key, level)`` from disk and memory; return True if it was present."""
        level = as_level(level)
        return self._remove_one(fingerprint_hex(key), level)

    def invalidate_by_dependency(self, dependency):
        """Remove every entry naming ``dependency``, whichever process wrote it.

        Returns
        -------
        int
            How many entries were removed (disk and memory-only).
        """
        rows = self._index.remove_dependency(dependency)
        self._remove_rows(rows, invalidation=True)
        count = len(rows)
        if self._front is not None:
            self._front.invalidate_by_dependency(dependency)
        if self._volatile is not None:
            count += self._volatile.invalidate_by_dependency(dependency)
        return count

    def invalidate_level(self, level):
        """Remove every entry of ``level``; return how many were removed."""
        level = as_level(level)
        rows = self._index.remove_where("level = ?", (level.value,))
        self._remove_rows(rows, invalidation=True)
        count = len(rows)
        if self._front is not None:
            self._front.invalidate_level(level)
        if self._volatile is not None:
            count += self._volatile.invalidate_level(level)
        return count

    def clear(self, level=None):
        """Remove every entry (of ``level`` when given) from disk and memory.

        Parameters
        ----------
        level : CacheLevel or str or None
        """
        if level is None:
            rows = self._index.remove_where("1")
            self._volatile_keys.clear()
            for tier in (self._front, self._volatile):
                if tier is not None:
                    tier.clear()
        else:
            level = as_level(level)
            rows = self._index.remove_where("level = ?", (level.value,))
            self._volatile_keys = {k for k in self._volatile_keys if k[1] != level.value}
            for tier in (self._front, self._volatile):
                if tier is not None:
                    tier.invalidate_level(level)
        self._remove_rows(rows)

    # -- seed and upstream names ----------------------------------------------------------

    def save_compressed(self, key, value, level=DEFAULT_LEVEL, dependencies=(), computation_cost=1.0, ttl=None):
        """Compress and store ``value``; the seed's name for :meth:`set` (same arguments and result)."""
        return self.set(key, value, level, dependencies, computation_cost, ttl)

    def load_compressed(self, key, level=DEFAULT_LEVEL, *, copy=False, mmap=False, verify=True):
        """Return the value of ``(key, level)``, or None when absent, expired or corrupt.

        A corrupt entry (bad checksum, truncated, wrong size) is removed, counted as
        ``corrupt`` and never returned. ``copy``, ``mmap`` and ``verify`` are as in
        :meth:`lookup`.
        """
        entry = self.lookup(key, level, copy=copy, mmap=mmap, verify=verify)
        return None if entry is None else entry.value

    # -- size and statistics --------------------------------------------------------------

    def __len__(self):
        """Live entries: unexpired index rows plus memory-only entries."""
        count = self._index.count(now=time.time())
        if self._volatile is not None:
            count += len(self._volatile)
        return count

    def get_stats(self):
        """Return this process's counters and the directory's totals.

        Returns
        -------
        dict
            ``hits``, ``misses``, ``hit_rate``, ``evictions``, ``invalidations``,
            ``rejected``, ``corrupt``, ``errors`` (this process, every tier it owns);
            ``entries`` and ``entry_counts`` (live entries, per level: disk and
            memory-only); ``memory_used_mb`` and ``memory_limit_mb`` of the memory tiers;
            ``disk_files``, ``disk_size_bytes``, ``disk_size_mb`` (MiB) and
            ``max_disk_mb`` (None when unbounded) for the whole directory, whichever
            process wrote it; ``cache_dir``, ``compression``, ``eviction``.
        """
        if self._volatile is not None:
            # It records into our metrics in batches; bring them up to date first.
            self._volatile.flush_metrics()
        metrics = self.metrics
        snap = metrics.snapshot()
        hits, misses = metrics.hits, metrics.misses
        stats = {
            "hits": hits,
            "misses": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
            "evictions": metrics.evictions,
            "invalidations": metrics.invalidations,
            "rejected": sum(sum(by_level.values()) for by_level in snap["level_counters"]["rejected"].values()),
            "corrupt": sum(snap["tier_counters"]["corrupt"].values()),
            "errors": sum(snap["tier_counters"]["errors"].values()),
        }
        counts = dict.fromkeys((level.value for level in CacheLevel), 0)
        counts.update(self._index.count_by_level(time.time()))
        memory_used = memory_limit = 0
        for tier in (self._front, self._volatile):
            if tier is not None:
                memory = tier.get_stats()
                memory_used += memory["memory_used_bytes"]
                memory_limit += memory["memory_limit_bytes"]
                if tier is self._volatile:
                    for level, n in memory["entry_counts"].items():
                        counts[level] += n
        stats.update(
            entries=sum(counts.values()),
            entry_counts=counts,
            memory_used_mb=memory_used / _MB,
            memory_limit_mb=memory_limit / _MB,
        )
        disk_bytes = self._index.total_stored()
        stats.update(
            disk_files=self._index.count(),
            disk_size_bytes=disk_bytes,
            disk_size_mb=disk_bytes / _MB,
            max_disk_mb=self.max_disk_mb,
            cache_dir=self.cache_dir,
            compression=self.compression,
            eviction=self.eviction,
        )
        return stats

    # -- maintenance (the command line uses these) ----------------------------------------

    def entries(self, level=None):
        """Iterate over the entries on disk, least recently used first.

        Parameters
        ----------
        level : CacheLevel or str or None
            Only this level's entries; every level when None.

        Yields
        ------
        DiskEntry
            One record per index row (expired rows included until removed; compare
            ``expires`` with ``time.time()``).
        """
        rows = self._index.rows(None if level is None else as_level(level).value)
        for row in rows:
            yield DiskEntry(
                key_hex=row.digest,
                level=row.level,
                path=self._row_path(row),
                raw_size=row.raw_size,
                stored_size=row.stored_size,
                codec=row.codec,
                computation_cost=row.cost,
                created=row.created,
                last_access=row.last_access,
                expires=row.expires,
                dependencies=row.dependencies,
            )

    def _files(self):
        """Yield ``(path, level, digest, token, is_temp, mtime)`` of every file in the level dirs."""
        for level in CacheLevel:
            level_dir = os.path.join(self.cache_dir, level.value)
            try:
                shards = [e for e in os.scandir(level_dir) if e.is_dir(follow_symlinks=False)]
            except FileNotFoundError:
                continue
            for shard in shards:
                try:
                    files = list(os.scandir(shard.path))
                except FileNotFoundError:
                    continue
                for item in files:
                    name = item.name
                    is_temp = name.endswith(_TEMP_SUFFIX)
                    if not (is_temp or name.endswith(_SUFFIX)):
                        continue
                    digest, _, token = name.rsplit(".", 1)[0].partition(".")
                    try:
                        mtime = item.stat(follow_symlinks=False).st_mtime
                    except FileNotFoundError:
                        continue
                    yield item.path, level.value, digest, token, is_temp, mtime

    def _stray_files(self, now):
        """Files no row points at, old enough not to be another process's write in flight."""
        known = self._index.tokens()
        for path, level, digest, token, is_temp, mtime in self._files():
            if now - mtime < self.orphan_grace:
                continue
            if is_temp:
                yield path, "unfinished write (temporary file)"
            elif (level, digest, token) not in known:
                yield path, "orphan file (no index row)"

    def verify(self, fix=False):
        """Check every entry's file against its checksums and the index.

        Parameters
        ----------
        fix : bool
            Remove what is found broken: corrupt or missing files and their rows, orphan
            files, leftover temporary files.

        Returns
        -------
        list of (str, str)
            ``(path, problem)`` for each problem found (an empty list when all is well).
        """
        problems = []
        for row in self._index.rows():
            path = self._row_path(row)
            problem = None
            try:
                with open(path, "rb") as f:
                    data = f.read()
                if len(data) != row.stored_size:
                    problem = f"size {len(data)} bytes, the index says {row.stored_size}"
                else:
                    serialize.verify_frame(data)
            except FileNotFoundError:
                if self._index.token_of(row.level, row.digest) != row.token:
                    continue  # replaced or removed by a writer since the rows were listed
                problem = "missing file (index row without file)"
            except FrameError as exc:
                problem = f"corrupt frame: {exc}"
            except OSError as exc:
                problem = f"unreadable: {exc.strerror or exc}"
            if problem is not None:
                problems.append((path, problem))
                if fix:
                    self._drop_corrupt(row, problem)
        for path, problem in self._stray_files(time.time()):
            problems.append((path, problem))
            if fix:
                _unlink(path)
        return problems

    def gc(self, max_disk_mb=None):
        """Remove expired entries and orphans, then evict down to the budget.

        Cheap compared with :meth:`verify`: files are checked for existence, not read.

        Parameters
        ----------
        max_disk_mb : float or None
            Evict down to this many MiB (this once, the stored limit is not changed); the
            directory's own limit when None.

        Returns
        -------
        dict
            ``expired``, ``orphan_files``, ``orphan_rows``, ``temp_files``, ``evicted``
            (counts), ``freed_bytes``, and the resulting ``disk_files`` and
            ``disk_size_bytes``.
        """
        budget = _budget_bytes(max_disk_mb)
        if budget is None:
            budget = self.max_disk_bytes
        elif math.isinf(budget):
            budget = None
        report = dict(expired=0, orphan_files=0, orphan_rows=0, temp_files=0, evicted=0, freed_bytes=0)
        now = time.time()
        expired = self._index.remove_where("expires IS NOT NULL AND expires <= ?", (now,))
        self._remove_rows(expired)
        report["expired"] = len(expired)
        report["freed_bytes"] += sum(r.stored_size for r in expired)
        for row in self._index.rows():
            if not os.path.exists(self._row_path(row)):
                removed = self._index.remove(row.level, row.digest, row.token)
                if removed is not None:
                    report["orphan_rows"] += 1
        for path, problem in self._stray_files(now):
            try:
                size = os.path.getsize(path)
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _backend_error(exc, "remove an orphan file", path) from exc
            report["temp_files" if path.endswith(_TEMP_SUFFIX) else "orphan_files"] += 1
            report["freed_bytes"] += size
        if budget is not None:
            evicted = self._index.evict_to(budget, self.eviction)
            self._forget_evicted(evicted)
            report["evicted"] = len(evicted)
            report["freed_bytes"] += sum(r.stored_size for r in evicted)
        report["disk_files"] = self._index.count()
        report["disk_size_bytes"] = self._index.total_stored()
        return report

    def cleanup_old_entries(self, max_age_days=30):
        """Remove entries written more than ``max_age_days`` days ago; return how many.

        Parameters
        ----------
        max_age_days : float
        """
        age = _number(max_age_days, "max_age_days", lambda x: x >= 0, "a number of days >= 0") * 86400.0
        rows = self._index.remove_where("created < ?", (time.time() - age,))
        self._remove_rows(rows)
        if self._front is not None and rows:
            # The memory copies are checked against the index on each hit; dropping them
            # now just returns their memory sooner.
            self._front.clear()
        return len(rows)

    def close(self):
        """Write pending access times and close the index connection (reopened on next use)."""
        self._index.close()
        for tier in (self._front, self._volatile):
            if tier is not None:
                tier.close()


class PersistentTNFRCache(CompressedPersistentCache):
    """Upstream TNFR's persistent cache, crash-safe: memory first, selected levels on disk.

    Drop-in for ``tnfr.cache.PersistentTNFRCache`` (same constructor and methods), plus
    the :class:`~tnfr_fastcache.backends.base.CacheTier` interface. Unlike upstream, the
    key never becomes a file name, a crash never leaves a value file half-written,
    invalidation removes only the entries that named the dependency (in every process and
    after restarts), and the directory can be bounded.

    Parameters
    ----------
    cache_dir : str or os.PathLike
        Directory of the persistent entries (default ``".tnfr_cache"``).
    max_memory_mb : float or None
        Size of the memory tier (default 512). It holds copies of disk entries and,
        separately bounded by the same size, the entries of levels not persisted. None or
        0: no memory tier, so levels not persisted are not stored at all.
    persist_levels : iterable of CacheLevel or str, optional
        Levels written to disk; default ``GRAPH_STRUCTURE`` and ``DERIVED_METRICS`` as
        upstream. Other levels live in memory only.
    compression, max_disk_mb, shuffle, eviction, fsync, metrics, create, timeout, orphan_grace
        As in :class:`CompressedPersistentCache`.
    """

    def __init__(
        self,
        cache_dir=".tnfr_cache",
        max_memory_mb=512,
        persist_levels=None,
        *,
        compression="lz4",
        max_disk_mb=None,
        **options,
    ):
        super().__init__(cache_dir, compression, max_memory_mb, max_disk_mb, **options)
        if persist_levels is None:
            persist_levels = (CacheLevel.GRAPH_STRUCTURE, CacheLevel.DERIVED_METRICS)
        self._persisted = frozenset(as_level(level).value for level in persist_levels)
        if max_memory_mb:
            from .memory import TNFRHierarchicalCache

            self._volatile = TNFRHierarchicalCache(max_memory_mb=max_memory_mb, metrics=self.metrics)

    @property
    def persist_levels(self):
        """The levels written to disk (a frozenset of CacheLevel)."""
        return frozenset(CacheLevel(value) for value in self._persisted)

    def get_persistent(self, key, level=DEFAULT_LEVEL, *, copy=False, mmap=False, verify=True):
        """Return the value of ``(key, level)`` from memory, else disk; None when absent.

        ``copy``, ``mmap`` and ``verify`` are as in :meth:`CompressedPersistentCache.lookup`.
        """
        entry = self.lookup(key, level, copy=copy, mmap=mmap, verify=verify)
        return None if entry is None else entry.value

    def set_persistent(
        self, key, value, level=DEFAULT_LEVEL, dependencies=(), computation_cost=1.0,
        persist_to_disk=True, ttl=None,
    ):
        """Store ``value`` in memory and, for persisted levels, on disk.

        Parameters
        ----------
        key, value, level, dependencies, computation_cost, ttl
            As in :meth:`CompressedPersistentCache.set`.
        persist_to_disk : bool
            False keeps the value in memory only and removes any disk copy of the key, so
            an older value cannot come back after a restart.

        Returns
        -------
        bool
            True if stored.
        """
        if persist_to_disk:
            return self.set(key, value, level, dependencies, computation_cost, ttl)
        level = as_level(level)
        digest = fingerprint_hex(key)
        return self._set_volatile(
            digest, value, level, _check_dependencies(dependencies),
            _check_cost(computation_cost), _check_ttl(ttl),
        )

    def clear_persistent_cache(self, level=None):
        """Remove the disk entries (of ``level`` when given) and their memory copies.

        Entries kept in memory only are not touched, as upstream.
        """
        if level is None:
            rows = self._index.remove_where("1")
            if self._front is not None:
                self._front.clear()
        else:
            level = as_level(level)
            rows = self._index.remove_where("level = ?", (level.value,))
            if self._front is not None:
                self._front.invalidate_level(level)
        self._remove_rows(rows)
