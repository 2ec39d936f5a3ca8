"""The embedded default stack: everything on loopback, in one command.

``Stack.start()`` starts Tansu (unless ``KIBOTOS_BOOTSTRAP_SERVERS`` points at a real
cluster), creates every topic with its partition count, opens the warehouse (embedded
chdb owned by this process, or a ClickHouse server) and applies migrations, runs the
ClickHouse sink and the novelty stage in threads, serves the read API for other shells, and spawns the gate
worker processes. ``stop()`` undoes it in reverse order. ``<home>/stack.json`` tells
other ``kibotos`` commands how to reach a running stack.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from infra.migrate import apply_migrations
from infra.tansu import TansuBroker, free_loopback_port
from kibotos.errors import ServiceError
from kibotos.ingest.app import create_app as create_ingest_app
from kibotos.ingest.server import IngestServer
from kibotos.ingest.service import build_service as build_ingest_service
from kibotos.objectstore import store_from_settings
from kibotos.query_server import QueryServer
from kibotos.settings import Settings
from kibotos.warehouse import LockedClient, open_client
from streams.novelty_worker import start_novelty_thread
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
    def __init__(self, settings: Settings, workers: int = 1, log=print, gpu_consumers: int = 1):
        self.settings = settings
        self.workers = workers
        self.gpu_consumers = gpu_consumers
        self.gpu_processes: list[subprocess.Popen] = []
        self.log = log
        self.catalogue = Catalogue.from_settings(settings)
        self.broker: TansuBroker | None = None
        self.bootstrap: str | None = settings.bootstrap_servers
        self.client = None
        self.sink: ClickHouseSink | None = None
        self.query: QueryServer | None = None
        self.ingest: IngestServer | None = None
        self.ingest_service = None
        self._stop = threading.Event()
        self._sink_thread: threading.Thread | None = None
        self._novelty_thread: threading.Thread | None = None
        self.novelty = None
        self.processes: list[subprocess.Popen] = []
        self.store = store_from_settings(settings)
        self.metrics_dir: Path | None = None

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
        # children write their Prometheus metrics here; the read API's /metrics sums them
        self.metrics_dir = self.settings.home / "metrics"
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True)
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
        if self.settings.novelty:
            self._novelty_thread, self.novelty = start_novelty_thread(self.settings, self.client, self.bootstrap,
                                                                      self._stop, self.store)
            self.log("novelty  duplicate and synthetic-artifact checks against the index in ClickHouse")
        self.query = QueryServer(self.client, metrics_dir=self.metrics_dir, store=self.store).start()
        self.ingest_service = build_ingest_service(self.settings, client=self.client, bootstrap=self.bootstrap,
                                                   catalogue=self.catalogue)
        self.ingest = IngestServer(create_ingest_app(self.ingest_service), self.settings.ingest_host,
                                   self.settings.ingest_port).start()
        self.log(f"ingest   API {self.ingest.url} (presigned uploads, signatures, rate limits)")
        for _ in range(self.workers):
            self.processes.append(self._spawn_worker())
        self.log(f"workers  {self.workers} gate worker process(es); read API {self.query.url}, "
                 f"Prometheus {self.query.url}/metrics")
        if self.settings.evidence_jobs:
            for _ in range(self.gpu_consumers):
                self.gpu_processes.append(self._spawn_gpu_consumer())
            self.log(f"evidence {self.gpu_consumers} GPU consumer process(es), Ray actors for "
                     f"{', '.join(self.settings.evidence_jobs)} ({self.settings.gpu_actors_per_kind} per kind)")
        else:
            self.log("evidence none configured (KIBOTOS_EVIDENCE_JOBS=[]): verdicts after gate E")
        state_file(self.settings).write_text(json.dumps({
            "pid": os.getpid(), "bootstrap": self.bootstrap, "query_url": self.query.url,
            "topic_prefix": self.settings.topic_prefix, "object_store_url": self.settings.store_url,
            "ingest_url": self.ingest.url,
        }))

    def _worker_env(self) -> dict[str, str]:
        """What every child process needs to see the same stack as this one."""
        env = dict(os.environ)
        env.update(self.settings.as_env())
        env.update({
            "KIBOTOS_TOPIC_PREFIX": self.settings.topic_prefix,
            "KIBOTOS_TOPIC_PARTITIONS": str(self.settings.topic_partitions),
            "KIBOTOS_OBJECT_STORE_URL": self.settings.store_url,
            "KIBOTOS_CONSUMER_GROUP_PREFIX": self.settings.consumer_group_prefix,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        })
        if self.settings.gate_config_path:
            env["KIBOTOS_GATE_CONFIG_PATH"] = str(self.settings.gate_config_path)
        for name in ("s3_endpoint", "s3_access_key", "s3_secret_key", "s3_region"):
            if getattr(self.settings, name):
                env[f"KIBOTOS_{name.upper()}"] = str(getattr(self.settings, name))
        env["KIBOTOS_EVIDENCE_JOBS"] = json.dumps(list(self.settings.evidence_jobs))
        env["KIBOTOS_LOG_FORMAT"], env["KIBOTOS_LOG_LEVEL"] = self.settings.log_format, self.settings.log_level
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir.resolve())
        env["KIBOTOS_GPU_ACTORS_PER_KIND"] = str(self.settings.gpu_actors_per_kind)
        return env

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.settings.home / f"{name}.log", "ab")
        return subprocess.Popen([sys.executable, "-m", *argv], env=self._worker_env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def _spawn_worker(self) -> subprocess.Popen:
        return self._spawn(f"worker-{len(self.processes)}",
                           ["streams.worker", "--bootstrap", self.bootstrap, "--web-port", str(free_loopback_port())])

    def _spawn_gpu_consumer(self) -> subprocess.Popen:
        return self._spawn(f"gpu-{len(self.gpu_processes)}", ["gpu_consumers.worker", "--bootstrap", self.bootstrap])

    def check_workers(self) -> None:
        dead = [p for p in self.processes if p.poll() is not None]
        if dead:
            raise ServiceError(f"{len(dead)} gate worker(s) exited (see {self.settings.home}/worker-*.log)")
        dead = [p for p in self.gpu_processes if p.poll() is not None]
        if dead:
            raise ServiceError(f"{len(dead)} GPU consumer(s) exited (see {self.settings.home}/gpu-*.log)")

    def stop(self) -> None:
        procs = self.processes + self.gpu_processes
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.processes.clear()
        self.gpu_processes.clear()
        self._stop.set()
        if self._sink_thread is not None:
            self._sink_thread.join(15)
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        if self._novelty_thread is not None:
            self._novelty_thread.join(30)
            self._novelty_thread = None
        if self.novelty is not None:
            self.novelty.close()
            self.novelty = None
        if self.ingest is not None:
            self.ingest.stop()
            self.ingest = None
        if self.ingest_service is not None:
            self.ingest_service.close()
            self.ingest_service = None
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
