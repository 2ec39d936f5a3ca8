"""Serve the ingest API with uvicorn in a background thread (the embedded stack, tests).

The socket is bound before the thread starts, so ``url`` is known at once and a port
of 0 picks a free one. Production runs the same app under any ASGI server
(``uvicorn 'kibotos.ingest.server:app_from_env' --factory``).
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from kibotos.errors import ServiceError


class IngestServer:
    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted connections inherit TCP_NODELAY; without it a kept-alive connection
        # waits ~40 ms per response (Nagle against delayed ACKs)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.bind((host, port))
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=5, limit_concurrency=256)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="ingest-api", daemon=True)

    def start(self, timeout_s: float = 15.0) -> "IngestServer":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServiceError(f"the ingest API did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> "IngestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def app_from_env() -> FastAPI:
    """An app from ``KIBOTOS_*`` settings for a standalone deployment (production: a
    ClickHouse server, a Kafka cluster, an S3 bucket)."""
    from kibotos.config.settings import Settings
    from kibotos.ingest.app import create_app
    from kibotos.ingest.service import build_service
    from kibotos.warehouse import open_client

    settings = Settings()
    if not settings.bootstrap_servers:
        raise ServiceError("a standalone ingest API needs KIBOTOS_BOOTSTRAP_SERVERS")
    client = open_client(settings.chdb_dsn)
    return create_app(build_service(settings, client=client, bootstrap=settings.bootstrap_servers))
