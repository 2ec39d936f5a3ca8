"""The embedded default stack: everything on loopback, in one command.

``Stack.start()`` starts Tansu (unless ``KIBOTOS_BOOTSTRAP_SERVERS`` points at a real
cluster), creates every topic with its partition count, opens the warehouse (embedded
chdb owned by this process, or a ClickHouse server) and applies migrations, runs the
ClickHouse sink in a thread, serves the read API for other shells, and spawns the gate
worker processes. ``stop()`` undoes it in reverse order. ``<home>/stack.json`` tells
other ``kibotos`` commands how to reach a running stack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from infra.migrate import apply_migrations
from infra.tansu import TansuBroker, free_loopback_port
from kibotos.errors import ServiceError
from kibotos.objectstore import LocalObjectStore
from kibotos.query_server import QueryServer
from kibotos.settings import Settings
from kibotos.warehouse import LockedClient, open_client
from streams.sink import ClickHouseSink
from topics.admin import ensure_topics
from topics.catalogue import Catalogue

REPO_ROOT = Path(__file__).resolve().parent.parent


def state_file(settings: Settings) -> Path:
    return settings.home / "stack.json"


def running_stack(settings: Settings) -> dict | None:
    """The state of a stack running under ``settings.home``, if its process is alive."""
    path = state_file(settings)
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
        return state
    except (OSError, ValueError, KeyError):
        return None


class Stack:
    def __init__(self, settings: Settings, workers: int = 1, log=print):
        self.settings = settings
        self.workers = workers
        self.log = log
        self.catalogue = Catalogue.from_settings(settings)
        self.broker: TansuBroker | None = None
        self.bootstrap: str | None = settings.bootstrap_servers
        self.client = None
        self.sink: ClickHouseSink | None = None
        self.query: QueryServer | None = None
        self._stop = threading.Event()
        self._sink_thread: threading.Thread | None = None
        self.processes: list[subprocess.Popen] = []
        self.store = LocalObjectStore.from_url(settings.store_url)

    def start(self) -> "Stack":
        self.settings.home.mkdir(parents=True, exist_ok=True)
        if running_stack(self.settings):
            raise ServiceError(f"a stack is already running under {self.settings.home} (see stack.json)")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if not self.bootstrap:
            self.broker = TansuBroker().start()
            self.bootstrap = self.broker.bootstrap
            self.log(f"broker   Tansu on {self.bootstrap}")
        ensure_topics(self.bootstrap, self.catalogue.all())
        self.log(f"topics   {len(self.catalogue.all())} topics x {self.catalogue.partitions} partitions")
        self.client = LockedClient(open_client(self.settings.chdb_dsn))
        apply_migrations(self.client)
        self.log(f"store    ClickHouse {self.settings.chdb_dsn.split('@')[-1]}; objects {self.store.root}")
        self.sink = ClickHouseSink(self.client, self.catalogue, self.bootstrap,
                                   f"{self.settings.consumer_group_prefix}-{self.settings.topic_prefix}sink")
        self._sink_thread = threading.Thread(target=self.sink.run, args=(self._stop,), name="sink", daemon=True)
        self._sink_thread.start()
        self.query = QueryServer(self.client).start()
        for _ in range(self.workers):
            self.processes.append(self._spawn_worker())
        self.log(f"workers  {self.workers} gate worker process(es); read API {self.query.url}")
        state_file(self.settings).write_text(json.dumps({
            "pid": os.getpid(), "bootstrap": self.bootstrap, "query_url": self.query.url,
            "topic_prefix": self.settings.topic_prefix, "object_store_url": self.settings.store_url,
        }))

    def _spawn_worker(self) -> subprocess.Popen:
        env = dict(os.environ)
        env.update({
            "KIBOTOS_TOPIC_PREFIX": self.settings.topic_prefix,
            "KIBOTOS_TOPIC_PARTITIONS": str(self.settings.topic_partitions),
            "KIBOTOS_OBJECT_STORE_URL": self.settings.store_url,
            "KIBOTOS_CONSUMER_GROUP_PREFIX": self.settings.consumer_group_prefix,
            "KIBOTOS_R_BASE": str(self.settings.r_base),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        })
        if self.settings.gate_config_path:
            env["KIBOTOS_GATE_CONFIG_PATH"] = str(self.settings.gate_config_path)
        log = open(self.settings.home / f"worker-{len(self.processes)}.log", "ab")
        return subprocess.Popen(
            [sys.executable, "-m", "streams.worker", "--bootstrap", self.bootstrap,
             "--web-port", str(free_loopback_port())],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def check_workers(self) -> None:
        dead = [p for p in self.processes if p.poll() is not None]
        if dead:
            raise ServiceError(f"{len(dead)} gate worker(s) exited (see {self.settings.home}/worker-*.log)")

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.processes:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.processes.clear()
        self._stop.set()
        if self._sink_thread is not None:
            self._sink_thread.join(15)
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        if self.query is not None:
            self.query.stop()
            self.query = None
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        try:
            state = json.loads(state_file(self.settings).read_text())
            if state.get("pid") == os.getpid():
                state_file(self.settings).unlink()
        except (OSError, ValueError):
            pass

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
