"""A real ``redis-server`` for the tests and benchmarks, on a free 127.0.0.1 port.

Importable as a plain module (``benchmarks/bench_redis.py`` uses :class:`RedisServer`) and
registered as a pytest plugin by ``tests/conftest.py``, which gives the fixtures:

- ``redis_server``: one server for the whole session (no persistence, in a temp dir).
- ``redis_url``: its ``redis://127.0.0.1:PORT/0`` URL.
- ``private_redis_server``: a server of the test's own, which the test may kill and
  restart (the outage tests) without disturbing anybody else.
- ``redis_cluster``: a Redis Cluster of three primaries (:class:`RedisClusterServers`).

The executable is ``$TNFR_FASTCACHE_REDIS_SERVER``, else ``redis-server`` on the PATH, else
``/usr/bin/redis-server``. A missing server fails the tests (CI installs it with
``.ci/dev``); it never skips them.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

__all__ = ["RedisServer", "RedisClusterServers", "find_redis_server", "free_port", "free_cluster_port"]

HOST = "127.0.0.1"


def find_redis_server():
    """Return the path of the ``redis-server`` executable, or raise FileNotFoundError."""
    candidates = [
        os.environ.get("TNFR_FASTCACHE_REDIS_SERVER"),
        shutil.which("redis-server"),
        "/usr/bin/redis-server",
    ]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "redis-server not found (set TNFR_FASTCACHE_REDIS_SERVER or install it: "
        "`bash .ci/dev test` installs Debian's redis-server)"
    )


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 without persistence.

    ``start()`` picks a free port the first time and keeps it, so ``kill()`` then
    ``start()`` brings the same server address back (empty: nothing is persisted).

    Parameters
    ----------
    directory : str, optional
        Working directory for the server's log; a temporary directory by default
        (removed by :meth:`stop`).
    port : int, optional
        A fixed port instead of a free one picked at start.
    extra_args : sequence of str
        More ``redis-server`` options (``--cluster-enabled yes`` ...).
    """

    def __init__(self, directory=None, port=None, extra_args=()):
        self.executable = find_redis_server()
        self.host = HOST
        self.port = port
        self.extra_args = list(extra_args)
        self._own_dir = directory is None
        self.directory = tempfile.mkdtemp(prefix="tnfr-redis-") if directory is None else directory
        self.process = None
        self._at_exit = False

    @property
    def url(self):
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def _command(self, port):
        return [
            self.executable,
            "--bind", self.host,
            "--port", str(port),
            "--dir", self.directory,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", os.path.join(self.directory, f"redis-{port}.log"),
            *self.extra_args,
        ]

    def start(self, timeout=10.0):
        """Start the server and wait until it answers PING; return self."""
        if self.running:
            return self
        # A fresh free port can be taken by someone else between our probe and the
        # server's bind: try a few ports the first time, keep the port afterwards.
        attempts = 1 if self.port is not None else 5
        last_error = None
        for _ in range(attempts):
            port = self.port if self.port is not None else free_port()
            self.process = subprocess.Popen(
                self._command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                self._wait_ready(port, timeout)
            except RuntimeError as exc:
                last_error = exc
                self._reap(signal.SIGKILL)
                continue
            self.port = port
            if not self._at_exit:
                # A script that dies without stop() must not leave a server behind.
                atexit.register(self.stop)
                self._at_exit = True
            return self
        raise RuntimeError(f"could not start {self.executable}: {last_error}")

    def _wait_ready(self, port, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} ({self._log_tail(port)})")
            try:
                with socket.create_connection((self.host, port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {port} not ready after {timeout}s ({self._log_tail(port)})")

    def _log_tail(self, port):
        try:
            with open(os.path.join(self.directory, f"redis-{port}.log"), encoding="utf-8", errors="replace") as fh:
                return fh.read()[-500:].strip()
        except OSError:
            return "no log"

    def _reap(self, sig):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self):
        """Kill the server at once (SIGKILL), as a crash or an outage would."""
        self._reap(signal.SIGKILL)

    def stop(self):
        """Stop the server (SIGTERM) and remove its temporary directory."""
        self._reap(signal.SIGTERM)
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def client(self, **kwargs):
        """A plain ``redis.Redis`` connected to this server."""
        import redis

        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def free_cluster_port():
    """A free port whose cluster bus port (port + 10000) is free too."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((HOST, p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterServers:
    """A Redis Cluster of ``n`` primaries on 127.0.0.1 (no replicas, no persistence)."""

    def __init__(self, n=3):
        self.nodes = []
        self.directory = tempfile.mkdtemp(prefix="tnfr-redis-cluster-")
        for _ in range(n):
            port = free_cluster_port()
            self.nodes.append(RedisServer(
                directory=self.directory, port=port,
                extra_args=["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                            "--cluster-node-timeout", "2000"],
            ))

    def start(self, timeout=30.0):
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli") or os.path.join(os.path.dirname(self.nodes[0].executable), "redis-cli")
        subprocess.run(
            [cli, "--cluster", "create", *(f"{n.host}:{n.port}" for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [n.client().cluster("info").get("cluster_state") for n in self.nodes]
            if all(state == "ok" for state in states):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"cluster not ready after {timeout}s: {states}")

    def stop(self):
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def _serve(kind=None):
    try:
        server = (kind or RedisServer)()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    with server:
        yield server


@pytest.fixture(scope="session")
def redis_server():
    """The session's redis-server (started once, stopped at the end)."""
    yield from _serve()


@pytest.fixture(scope="session")
def redis_url(redis_server):
    """``redis://127.0.0.1:PORT/0`` of the session's server."""
    return redis_server.url


@pytest.fixture
def private_redis_server():
    """A server of this test's own, which it may ``kill()`` and ``start()`` again."""
    yield from _serve()


@pytest.fixture(scope="session")
def redis_cluster():
    """A three-primary Redis Cluster on 127.0.0.1, for the session."""
    yield from _serve(RedisClusterServers)
