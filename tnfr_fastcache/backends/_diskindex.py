"""The disk tier's index: one SQLite database in WAL mode, shared by every process.

A row per stored entry says which file holds its frame, its level, dependencies, sizes,
cost and times. The index is what makes an entry exist: a value file is written completely
before its row is committed, and a row is removed before its file is unlinked, so a crash
leaves at worst a file without a row (an orphan, removed by :meth:`DiskIndex.orphans` and
the tier's ``gc``), never a row pointing at half a file.

Every write runs in one ``BEGIN IMMEDIATE`` transaction, so the budget check, the eviction
and the insertion are atomic across processes; readers never block (WAL).
"""

import fcntl
import json
import mmap
import os
import sqlite3
import struct
import threading
import time
from typing import NamedTuple

from ..errors import BackendError, BackendUnavailable

__all__ = ["DiskIndex", "IndexRow", "INDEX_NAME", "GENERATION_NAME", "FORMAT_VERSION"]

INDEX_NAME = "index.sqlite3"
# An 8-byte counter every process maps: bumped whenever rows are removed or replaced, so
# memory copies of entries need re-checking against the index only after it moved.
GENERATION_NAME = "generation"
_COUNTER = struct.Struct("<Q")
FORMAT_VERSION = 1

# Touches (last access times) are batched: an SQLite write per cache hit would cost more
# than the hit. LRU order across processes is therefore approximate to this many seconds.
_TOUCH_FLUSH_SECONDS = 2.0
_TOUCH_FLUSH_COUNT = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    level TEXT NOT NULL,
    digest TEXT NOT NULL,
    token TEXT NOT NULL,
    raw_size INTEGER NOT NULL,
    stored_size INTEGER NOT NULL,
    codec TEXT NOT NULL,
    cost REAL NOT NULL,
    created REAL NOT NULL,
    last_access REAL NOT NULL,
    expires REAL,
    deps TEXT NOT NULL,
    PRIMARY KEY (level, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_access ON entries (last_access);
CREATE TABLE IF NOT EXISTS deps (
    dependency TEXT NOT NULL,
    level TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (dependency, level, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deps_by_entry ON deps (level, digest);
"""

# Connections a forked child inherited. SQLite forbids using them in the child, and closing
# them there could release locks the parent holds; they are kept, unused, until exit.
_INHERITED = []

_COLUMNS = "level, digest, token, raw_size, stored_size, codec, cost, created, last_access, expires, deps"

_ORDER_BY = {
    # Least recently used first.
    "lru": "last_access ASC",
    # Cheapest to recompute per byte first, then least recently used: a 10-minute result
    # outlives a 1-second one of the same size.
    "cost": "cost / MAX(stored_size, 1) ASC, last_access ASC",
}
EVICTION_POLICIES = tuple(_ORDER_BY)


class IndexRow(NamedTuple):
    """One entry as the index knows it (times are ``time.time()`` seconds)."""

    level: str
    digest: str
    token: str
    raw_size: int
    stored_size: int
    codec: str
    cost: float
    created: float
    last_access: float
    expires: "float | None"
    dependencies: tuple


def _row(values):
    *head, deps = values
    return IndexRow(*head, tuple(json.loads(deps)))


def _as_backend_error(exc, path):
    """Turn an sqlite3 error into the library's error, naming the index file."""
    message = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in message:
        return BackendUnavailable(f"disk cache index {path} stayed locked: {message}")
    return BackendError(f"disk cache index {path}: {message}")


class DiskIndex:
    """The SQLite index of one cache directory.

    Parameters
    ----------
    root : str or os.PathLike
        The cache directory (must exist).
    fsync : bool
        ``synchronous=FULL`` instead of ``NORMAL``: a commit survives power loss, not just
        a process crash.
    timeout : float
        Seconds to wait for another process's write transaction before giving up.
    """

    def __init__(self, root, *, fsync=False, timeout=30.0):
        self.path = os.path.join(os.fspath(root), INDEX_NAME)
        self._fsync = fsync
        self._timeout = timeout
        self._lock = threading.RLock()
        self._conn = None
        self._pid = None
        self._touches = {}
        self._touch_since = time.time()
        self._removed = False
        with self._lock:
            self._connection()
        self._open_generation(os.path.join(os.fspath(root), GENERATION_NAME))

    # -- connection -----------------------------------------------------------------------

    def _connection(self):
        # A connection must not cross fork(): the child opens its own.
        if self._conn is None or self._pid != os.getpid():
            if self._conn is not None:
                _INHERITED.append(self._conn)
                self._conn = None
            try:
                conn = sqlite3.connect(
                    self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'NORMAL'}")
                self._create_schema(conn)
            except sqlite3.Error as exc:
                raise _as_backend_error(exc, self.path) from exc
            self._conn = conn
            self._pid = os.getpid()
            self._touches = {}
        return self._conn

    def _create_schema(self, conn):
        # Every statement is idempotent, so processes opening a new directory at once agree.
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('total_stored', '0')")
            found = conn.execute("SELECT value FROM meta WHERE name = 'format_version'").fetchone()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if int(found[0]) > FORMAT_VERSION:
            raise BackendError(
                f"disk cache index {self.path} has format version {found[0]}; this "
                f"tnfr_fastcache reads up to version {FORMAT_VERSION}"
            )

    def _open_generation(self, path):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size < _COUNTER.size:
                    # Processes racing here all write zeros: any of them wins.
                    os.ftruncate(fd, _COUNTER.size)
                self._generation_map = mmap.mmap(fd, _COUNTER.size)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            raise BackendError(exc.errno, f"disk cache cannot open its change counter: {exc.strerror}", path) from exc
        # The file stays open for the POSIX lock that makes increments atomic; such locks
        # are per process, so a forked child excludes its parent as it should.
        self._generation_file = os.fdopen(fd, "r+b", buffering=0)

    def generation(self):
        """A number that changes whenever any process removes or replaces an entry."""
        return _COUNTER.unpack_from(self._generation_map)[0]

    def _bump_generation(self):
        fcntl.lockf(self._generation_file, fcntl.LOCK_EX)
        try:
            value = _COUNTER.unpack_from(self._generation_map)[0]
            _COUNTER.pack_into(self._generation_map, 0, (value + 1) & 0xFFFFFFFFFFFFFFFF)
        finally:
            fcntl.lockf(self._generation_file, fcntl.LOCK_UN)

    def close(self):
        """Write pending access times and close this process's connection."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                try:
                    self._write(lambda conn: None)
                finally:
                    self._conn.close()
            elif self._conn is not None:
                _INHERITED.append(self._conn)
            self._conn = None

    def _read(self, sql, params=()):
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _as_backend_error(exc, self.path) from exc

    def _write(self, body, wait=True):
        """Run ``body(conn)`` in one immediate transaction (pending touches included).

        With ``wait=False``, give up at once (BackendUnavailable) if another connection
        is writing, instead of waiting up to ``timeout``.
        """
        with self._lock:
            conn = self._connection()
            try:
                if not wait:
                    conn.execute("PRAGMA busy_timeout = 0")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                finally:
                    if not wait:
                        conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
                self._removed = False
                try:
                    self._flush_touches(conn)
                    result = body(conn)
                    # Bumped before the commit and after it: a process that checked its
                    # memory copy in between sees the second bump and checks again.
                    if self._removed:
                        self._bump_generation()
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise _as_backend_error(exc, self.path) from exc
            if self._removed:
                self._bump_generation()
            return result

    # -- meta ---------------------------------------------------------------------------

    def get_meta(self, name, default=None):
        """Return the directory setting ``name`` (a string), or ``default``."""
        rows = self._read("SELECT value FROM meta WHERE name = ?", (name,))
        return rows[0][0] if rows else default

    def set_meta(self, name, value):
        """Store the directory setting ``name``; ``None`` removes it."""

        def body(conn):
            if value is None:
                conn.execute("DELETE FROM meta WHERE name = ?", (name,))
            else:
                conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, str(value)))

        self._write(body)

    # -- reads --------------------------------------------------------------------------

    def get(self, level, digest):
        """Return the :class:`IndexRow` of ``(level, digest)`` or None."""
        rows = self._read(f"SELECT {_COLUMNS} FROM entries WHERE level = ? AND digest = ?", (level, digest))
        return _row(rows[0]) if rows else None

    def token_of(self, level, digest):
        """Return the file token of ``(level, digest)`` or None (one cheap lookup)."""
        rows = self._read("SELECT token FROM entries WHERE level = ? AND digest = ?", (level, digest))
        return rows[0][0] if rows else None

    def rows(self, level=None):
        """Return every row (of ``level`` when given), oldest access first."""
        if level is None:
            found = self._read(f"SELECT {_COLUMNS} FROM entries ORDER BY last_access")
        else:
            found = self._read(f"SELECT {_COLUMNS} FROM entries WHERE level = ? ORDER BY last_access", (level,))
        return [_row(r) for r in found]

    def tokens(self):
        """Return the set of ``(level, digest, token)`` of every row."""
        return set(self._read("SELECT level, digest, token FROM entries"))

    def count(self, now=None):
        """Number of rows; with ``now``, only those not expired at ``now``."""
        if now is None:
            return self._read("SELECT COUNT(*) FROM entries")[0][0]
        return self._read("SELECT COUNT(*) FROM entries WHERE expires IS NULL OR expires > ?", (now,))[0][0]

    def count_by_level(self, now):
        """``{level: rows not expired at now}`` for the levels that have any."""
        return dict(
            self._read(
                "SELECT level, COUNT(*) FROM entries WHERE expires IS NULL OR expires > ? GROUP BY level", (now,)
            )
        )

    def total_stored(self):
        """Bytes of every value file the index points at."""
        return int(self.get_meta("total_stored", "0"))

    # -- access times -------------------------------------------------------------------

    def touch(self, level, digest, when):
        """Record an access at ``when`` (``time.time()`` seconds).

        Written with the next transaction, or once enough accesses or seconds piled up.
        """
        # No lock on this hot path: a dict store is atomic and a flush swaps the dict out.
        touches = self._touches
        touches[(level, digest)] = when
        if len(touches) >= _TOUCH_FLUSH_COUNT or when - self._touch_since > _TOUCH_FLUSH_SECONDS:
            with self._lock:
                try:
                    self._write(lambda conn: None, wait=False)
                except (BackendError, BackendUnavailable):
                    # Access times only order evictions: a read must not fail because
                    # another process holds the index for long. Keep them for next time.
                    self._touch_since = when

    def _flush_touches(self, conn):
        touches, self._touches = self._touches, {}
        if touches:
            conn.executemany(
                "UPDATE entries SET last_access = MAX(last_access, ?) WHERE level = ? AND digest = ?",
                [(when, level, digest) for (level, digest), when in touches.items()],
            )
        self._touch_since = time.time()

    # -- writes -------------------------------------------------------------------------

    def _delete_rows(self, conn, rows):
        if not rows:
            return
        self._removed = True
        keys = [(r.level, r.digest) for r in rows]
        conn.executemany("DELETE FROM entries WHERE level = ? AND digest = ?", keys)
        conn.executemany("DELETE FROM deps WHERE level = ? AND digest = ?", keys)
        freed = sum(r.stored_size for r in rows)
        conn.execute(
            "UPDATE meta SET value = CAST(CAST(value AS INTEGER) - ? AS TEXT) WHERE name = 'total_stored'",
            (freed,),
        )

    def put(self, row, budget=None, policy="lru"):
        """Insert or replace ``row``, then evict others until the total fits ``budget``.

        Parameters
        ----------
        row : IndexRow
            The new entry; its file is already complete on disk.
        budget : int or None
            Bytes all value files may take; None for no limit.
        policy : {"lru", "cost"}
            Which entries go first when over budget.

        Returns
        -------
        (IndexRow or None, list of IndexRow)
            The row it replaced and the rows evicted; the caller unlinks their files.
        """
        key = (row.level, row.digest)

        def body(conn):
            found = conn.execute(f"SELECT {_COLUMNS} FROM entries WHERE level = ? AND digest = ?", key).fetchall()
            replaced = _row(found[0]) if found else None
            self._delete_rows(conn, [replaced] if replaced else [])
            conn.execute(
                f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row[:-1], json.dumps(sorted(row.dependencies))),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO deps VALUES (?, ?, ?)",
                [(dep, row.level, row.digest) for dep in row.dependencies],
            )
            conn.execute(
                "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT) WHERE name = 'total_stored'",
                (row.stored_size,),
            )
            evicted = self._evict(conn, budget, policy, keep=key) if budget is not None else []
            return replaced, evicted

        return self._write(body)

    def _evict(self, conn, budget, policy, keep=None):
        total = int(conn.execute("SELECT value FROM meta WHERE name = 'total_stored'").fetchone()[0])
        if total <= budget:
            return []
        now = time.time()
        # Expired entries go first whatever the policy: they are worthless already.
        cursor = conn.execute(
            f"SELECT {_COLUMNS} FROM entries "
            f"ORDER BY (expires IS NOT NULL AND expires <= ?) DESC, {_ORDER_BY[policy]}",
            (now,),
        )
        victims = []
        for values in cursor:
            victim = _row(values)
            if (victim.level, victim.digest) == keep:
                continue
            victims.append(victim)
            total -= victim.stored_size
            if total <= budget:
                break
        cursor.close()
        self._delete_rows(conn, victims)
        return victims

    def evict_to(self, budget, policy="lru"):
        """Evict until the total fits ``budget`` bytes; return the rows removed."""
        return self._write(lambda conn: self._evict(conn, budget, policy))

    def remove(self, level, digest, token=None):
        """Remove the row of ``(level, digest)`` (only if its file is ``token``, when given).

        Returns the removed row or None.
        """

        def body(conn):
            found = conn.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE level = ? AND digest = ?", (level, digest)
            ).fetchall()
            if not found:
                return None
            row = _row(found[0])
            if token is not None and row.token != token:
                return None
            self._delete_rows(conn, [row])
            return row

        return self._write(body)

    def remove_where(self, where, params=()):
        """Remove every row matching the SQL condition ``where``; return the rows removed."""

        def body(conn):
            rows = [_row(v) for v in conn.execute(f"SELECT {_COLUMNS} FROM entries WHERE {where}", params)]
            self._delete_rows(conn, rows)
            return rows

        return self._write(body)

    def remove_dependency(self, dependency):
        """Remove every row that names ``dependency``; return the rows removed."""
        return self.remove_where(
            "(level, digest) IN (SELECT level, digest FROM deps WHERE dependency = ?)", (dependency,)
        )

    def recount(self):
        """Recompute the stored total from the rows (repairs a total a bug made wrong)."""

        def body(conn):
            total = conn.execute("SELECT COALESCE(SUM(stored_size), 0) FROM entries").fetchone()[0]
            conn.execute("UPDATE meta SET value = ? WHERE name = 'total_stored'", (str(total),))
            return total

        return self._write(body)
