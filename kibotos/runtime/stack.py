"""The embedded default stack: everything on loopback, in one command.

``Stack.start()`` starts Tansu (unless ``KIBOTOS_BOOTSTRAP_SERVERS`` points at a real
cluster) with its log on disk (``s3://`` on a SeaweedFS server under ``<home>/broker``;
``memory://`` only when ``ephemeral``), creates every topic with its partition count, opens the warehouse (embedded
chdb owned by this process, or a ClickHouse server) and applies migrations, runs the
ClickHouse sink and the novelty stage in threads, serves the read API for other shells, and spawns the gate
worker processes and the dataset builder (``streams.dataset_builder``). ``stop()`` undoes it in reverse order. ``<home>/stack.json`` tells
other ``kibotos`` commands how to reach a running stack.

Supervision: ``supervise()`` (called every second by ``kibotos up``) restarts a dead gate
worker, GPU consumer or dataset builder process, a dead sink / novelty / reconciler thread and a dead
broker (on its old port), each with an exponential back-off per slot (1 s doubling to
60 s; reset once it has run for a minute). The consumer group hands the dead member's
partitions to the others and back. Restarts are counted in
``kibotos_process_restarts_total{kind}`` and listed by ``restarts()``.

Children die with the stack (``PR_SET_PDEATHSIG``), and a stack started after a SIGKILL
of the previous one first ends whatever of it is still running (pids in ``stack.json``),
then resumes from the broker's committed offsets; the reconciler (``kibotos.runtime.reconcile``)
re-emits whatever was accepted and still has no verdict after ``stuck_after_s``.
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
from typing import TYPE_CHECKING, cast

from prometheus_client import Counter

from infra.embedded_broker import EmbeddedBroker
from infra.migrate import apply_migrations
from infra.tansu import die_with_parent, free_loopback_port
from kibotos.config.settings import Settings
from kibotos.errors import ServiceError
from kibotos.ingest.app import create_app as create_ingest_app
from kibotos.ingest.server import IngestServer
from kibotos.ingest.service import build_service as build_ingest_service
from kibotos.objectstore import LocalObjectStore, store_from_settings
from kibotos.reports.server import QueryServer
from kibotos.warehouse import LockedClient, open_client
from streams.novelty_worker import start_novelty_thread
from streams.sink import ClickHouseSink
from topics.admin import ensure_topics
from topics.catalogue import Catalogue

if TYPE_CHECKING:
    from confluent_kafka import Producer

    from kibotos.ingest.service import IngestService
    from kibotos.runtime.reconcile import Reconciler
    from streams.stage_consumer import StageConsumer

REPO_ROOT = Path(__file__).resolve().parents[2]

PROCESS_RESTARTS = Counter("kibotos_process_restarts", "stack components restarted by the supervisor", ["kind"])
BACKOFF_FIRST_S, BACKOFF_MAX_S, HEALTHY_AFTER_S = 1.0, 60.0, 60.0
# what a leftover child of a killed stack looks like in /proc/<pid>/cmdline
CHILD_MARKERS = (b"tansu", b"weed", b"streams.worker", b"gpu_consumers.worker", b"streams.dataset_builder")


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


class Slot:
    """One supervised component: a child process or a thread of this process."""

    def __init__(self, kind: str, name: str, start):
        self.kind, self.name, self._start = kind, name, start
        self.handle: subprocess.Popen | threading.Thread | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.backoff = BACKOFF_FIRST_S
        self.due_at: float | None = None  # when a restart of a dead handle is due
        self.paused = False  # stopped on request (``pause``): restarted when due, no back-off
        self.event = threading.Event()  # a thread's stop signal

    def start(self) -> None:
        self.event = threading.Event()
        self.handle = self._start(self.event)
        self.paused = False
        self.started_at = time.monotonic()
        self.due_at = None

    def alive(self) -> bool:
        if isinstance(self.handle, subprocess.Popen):
            return self.handle.poll() is None
        return self.handle is not None and self.handle.is_alive()

    @property
    def pid(self) -> int | None:
        return self.handle.pid if isinstance(self.handle, subprocess.Popen) else None


class Stack:
    """:param ephemeral: keep the broker's log in memory (fast, lost on exit); default:
        on disk, so that a restart resumes every in-flight submission.
    :param reconcile_every_s: period of the reconciler thread (None: no thread; a pass
        still runs at start-up).
    :param stuck_after_s: a submission accepted this long ago without a verdict is
        emitted again (``kibotos.runtime.reconcile``).
    """

    def __init__(self, settings: Settings, workers: int = 1, log=print, gpu_consumers: int = 1, *,
                 ephemeral: bool = False, reconcile_every_s: float | None = 60.0, stuck_after_s: float = 900.0):
        self.settings = settings
        self.workers = workers
        self.gpu_consumers = gpu_consumers
        self.ephemeral = ephemeral
        self.reconcile_every_s = reconcile_every_s
        self.stuck_after_s = stuck_after_s
        self.log = log
        self.catalogue = Catalogue.from_settings(settings)
        self.broker: EmbeddedBroker | None = None
        self.bootstrap: str | None = settings.bootstrap_servers
        self.client: LockedClient | None = None
        self.sink: ClickHouseSink | None = None
        self.query: QueryServer | None = None
        self.ingest: IngestServer | None = None
        self.ingest_service: IngestService | None = None
        self._stop = threading.Event()
        self.novelty: StageConsumer | None = None
        self.reconciler: Reconciler | None = None
        self._reconcile_producer: Producer | None = None
        self.slots: list[Slot] = []
        self.store = store_from_settings(settings)
        self.metrics_dir: Path | None = None
        self._stopping = False

    # --- compatibility views -------------------------------------------------------
    @property
    def processes(self) -> list[subprocess.Popen]:
        return [cast(subprocess.Popen, s.handle) for s in self.slots if s.kind == "worker"]

    @property
    def gpu_processes(self) -> list[subprocess.Popen]:
        return [cast(subprocess.Popen, s.handle) for s in self.slots if s.kind == "gpu"]

    def start(self) -> "Stack":
        self.settings.home.mkdir(parents=True, exist_ok=True)
        if running_stack(self.settings):
            raise ServiceError(f"a stack is already running under {self.settings.home} (see stack.json)")
        try:
            self._end_leftovers()
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _end_leftovers(self) -> None:
        """End the children of a stack that was killed (its stack.json names them and
        its pid is dead): a leftover broker or SeaweedFS would hold the data directory,
        a leftover worker would consume with stale settings."""
        try:
            state = json.loads(state_file(self.settings).read_text())
        except (OSError, ValueError):
            return
        pids = [int(p) for p in (state.get("children") or {}).values()]
        leftovers = [pid for pid in pids if _is_our_child(pid)]
        for pid in leftovers:
            _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_is_our_child(pid) for pid in leftovers) and time.monotonic() < deadline:
            time.sleep(0.1)
        if leftovers:
            self.log(f"ended    {len(leftovers)} leftover process(es) of a stack that did not stop cleanly")

    def _start(self) -> None:
        # children write their Prometheus metrics here; the read API's /metrics sums them
        self.metrics_dir = self.settings.home / "metrics"
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True)
        if not self.bootstrap:
            t0 = time.monotonic()
            self.broker = EmbeddedBroker(self.settings.home / "broker", ephemeral=self.ephemeral).start()
            self.bootstrap = self.broker.bootstrap
            kind = ("in memory (--ephemeral: lost on exit)" if self.ephemeral
                    else f"log on disk ({self.broker.storage_engine} on SeaweedFS under {self.settings.home / 'broker'})")
            self.log(f"broker   Tansu on {self.bootstrap}, {kind}; up in {time.monotonic() - t0:.1f}s")
        ensure_topics(self.bootstrap, self.catalogue.all())
        self.log(f"topics   {len(self.catalogue.all())} topics x {self.catalogue.partitions} partitions")
        self.client = LockedClient(open_client(self.settings.chdb_dsn))
        apply_migrations(self.client)
        objects = (self.store.root if isinstance(self.store, LocalObjectStore)  # S3 stores have no root
                   else f"s3://{self.store.bucket}/{self.store.prefix}")
        self.log(f"store    ClickHouse {self.settings.chdb_dsn.split('@')[-1]}; objects {objects}")
        self._add_slot("sink", "sink", self._start_sink)
        if self.settings.novelty:
            self._add_slot("novelty", "novelty", self._start_novelty)
            self.log("novelty  duplicate and synthetic-artifact checks against the index in ClickHouse")
        self.query = QueryServer(self.client, metrics_dir=self.metrics_dir, store=self.store,
                                 datasets_root=self.settings.home / "datasets").start()
        self.ingest_service = build_ingest_service(self.settings, client=self.client, bootstrap=self.bootstrap,
                                                   catalogue=self.catalogue)
        self.ingest = IngestServer(create_ingest_app(self.ingest_service), self.settings.ingest_host,
                                   self.settings.ingest_port).start()
        self.log(f"ingest   API {self.ingest.url} (presigned uploads, signatures, rate limits)")
        for i in range(self.workers):
            self._add_slot("worker", f"worker-{i}", lambda _, i=i: self._spawn_worker(i))
        self.log(f"workers  {self.workers} gate worker process(es); read API {self.query.url}, "
                 f"Prometheus {self.query.url}/metrics")
        if self.gpu_kinds:
            for i in range(self.gpu_consumers):
                self._add_slot("gpu", f"gpu-{i}", lambda _, i=i: self._spawn_gpu_consumer(i))
            self.log(f"evidence {self.gpu_consumers} GPU consumer process(es), Ray actors for "
                     f"{', '.join(self.settings.evidence_jobs) or 'no evidence job'} and XGen "
                     f"{', '.join(self.settings.xgen_jobs) or 'none'}, training "
                     f"{', '.join(self.settings.training_jobs) or 'none'} ({self.settings.gpu_actors_per_kind} per kind)")
        if not self.settings.evidence_jobs:
            self.log("evidence none configured (KIBOTOS_EVIDENCE_JOBS=[]): verdicts after gate E")
        # accepted episodes into the datasets under <home>/datasets (streams.dataset_builder)
        self._add_slot("datasets", "dataset-builder", lambda _: self._spawn(
            "dataset-builder", ["streams.dataset_builder", "--bootstrap", self.bootstrap]))
        self.log(f"datasets builder process for every dataset spec under {self.settings.home / 'datasets'}")
        self._start_reconciler()
        self._write_state()

    def _start_reconciler(self) -> None:
        from kibotos.runtime.reconcile import Reconciler
        from kibotos.runtime.submit import producer

        self._reconcile_producer = producer(cast(str, self.bootstrap))  # set by _start
        self.reconciler = Reconciler(self.client, self._reconcile_producer, self.catalogue,
                                     stuck_after_s=self.stuck_after_s, store=self.store)
        try:  # what a killed stack left stuck goes again at once
            first = self.reconciler.run_once()
            self.log(f"reconcile {first.pending} submission(s) in flight, {len(first.reemitted)} stuck ones "
                     f"emitted again; every {self.reconcile_every_s or 0:.0f}s, stuck after {self.stuck_after_s:.0f}s")
        except ServiceError as exc:
            self.log(f"reconcile first pass failed: {exc}")
        if self.reconcile_every_s:
            self._add_slot("reconciler", "reconciler", lambda stop: self._thread(
                "reconciler", self.reconciler.run, stop, self.reconcile_every_s))

    def reconcile_now(self, retry: list[str] | None = None) -> dict:
        """One reconciliation pass (``kibotos admin reconcile`` against this stack);
        ``retry``: given-up submissions to give another round first (``--retry``)."""
        reconciler = cast("Reconciler", self.reconciler)  # set by start()
        reset = reconciler.reset(retry) if retry else []
        return {**reconciler.run_once().as_dict(), "reset": reset}

    def _thread(self, name: str, target, *args) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        return thread

    def _start_sink(self, stop: threading.Event) -> threading.Thread:
        if self.sink is not None:
            self.sink.close()
        self.sink = ClickHouseSink(self.client, self.catalogue, cast(str, self.bootstrap),
                                   f"{self.settings.consumer_group_prefix}-{self.settings.topic_prefix}sink")
        return self._thread("sink", self.sink.run, stop)

    def _start_novelty(self, stop: threading.Event) -> threading.Thread:
        if self.novelty is not None:
            self.novelty.close()
        thread, self.novelty = start_novelty_thread(self.settings, self.client, cast(str, self.bootstrap), stop,
                                                   self.store)
        return thread

    def _add_slot(self, kind: str, name: str, start) -> Slot:
        slot = Slot(kind, name, start)
        slot.start()
        self.slots.append(slot)
        return slot

    def _write_state(self) -> None:
        children = {s.name: s.pid for s in self.slots if s.pid}
        if self.broker is not None:
            children.update(self.broker.pids())
        state_file(self.settings).write_text(json.dumps({
            "pid": os.getpid(), "bootstrap": self.bootstrap, "query_url": cast(QueryServer, self.query).url,
            "topic_prefix": self.settings.topic_prefix, "object_store_url": self.settings.store_url,
            "ingest_url": cast(IngestServer, self.ingest).url, "durable": self.broker is None or not self.ephemeral,
            "children": children,
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
        env["PROMETHEUS_MULTIPROC_DIR"] = str(cast(Path, self.metrics_dir).resolve())
        env["KIBOTOS_GPU_ACTORS_PER_KIND"] = str(self.settings.gpu_actors_per_kind)
        return env

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        with open(self.settings.home / f"{name}.log", "ab") as log:
            return subprocess.Popen([sys.executable, "-m", *argv], env=self._worker_env(), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)

    def _spawn_worker(self, index: int) -> subprocess.Popen:
        return self._spawn(f"worker-{index}",
                           ["streams.worker", "--bootstrap", cast(str, self.bootstrap), "--web-port", str(free_loopback_port())])

    @property
    def gpu_kinds(self) -> tuple[str, ...]:
        """The job kinds the GPU consumers serve: the evidence jobs, XGen's stages, training."""
        return tuple(self.settings.evidence_jobs) + tuple(self.settings.xgen_jobs) + tuple(self.settings.training_jobs)

    def _spawn_gpu_consumer(self, index: int) -> subprocess.Popen:
        return self._spawn(f"gpu-{index}", ["gpu_consumers.worker", "--bootstrap", cast(str, self.bootstrap),
                                            "--kinds", ",".join(self.gpu_kinds)])

    # --- supervision ---------------------------------------------------------------
    def supervise(self) -> list[str]:
        """Restart what died (after its back-off); returns the names restarted now.
        Called every second or so by whoever runs the stack."""
        if self._stopping:
            return []
        self._answer_requests()
        restarted: list[str] = []
        if self.broker is not None:
            try:
                for name in self.broker.revive():
                    PROCESS_RESTARTS.labels(name).inc()
                    restarted.append(name)
            except ServiceError as exc:  # the next call tries again
                self.log(f"broker restart failed: {exc}")
            if "broker" in restarted:
                # a faust worker that lost its broker mid-join may hang alive forever
                # (seen in the drills): the broker's child processes start afresh with it.
                # SIGKILL, not SIGTERM: a member leaving mid-join wedges a Tansu group
                for slot in self.slots:
                    if isinstance(slot.handle, subprocess.Popen) and slot.handle.poll() is None:
                        slot.handle.kill()
                        slot.handle.wait(10)
                        slot.paused, slot.due_at = True, 0.0
        now = time.monotonic()
        for slot in self.slots:
            if slot.alive():
                if now - slot.started_at > HEALTHY_AFTER_S:
                    slot.backoff = BACKOFF_FIRST_S
                continue
            if slot.due_at is None and not slot.paused:
                code = slot.handle.returncode if isinstance(slot.handle, subprocess.Popen) else None
                slot.due_at = now + slot.backoff
                self.log(f"[yellow]down[/yellow]     {slot.name} ({'exit code ' + str(code) if code is not None else 'ended'})"
                         f"; restart in {slot.backoff:.0f}s")
                slot.backoff = min(slot.backoff * 2, BACKOFF_MAX_S)
                continue
            if now < cast(float, slot.due_at):  # a paused slot always has a due time
                continue
            try:
                slot.start()
            except (OSError, ServiceError) as exc:
                slot.due_at = now + slot.backoff
                self.log(f"restart of {slot.name} failed: {exc}")
                continue
            slot.restarts += 1
            PROCESS_RESTARTS.labels(slot.kind).inc()
            restarted.append(slot.name)
        if restarted:
            self.log(f"[yellow]restarted[/yellow] {', '.join(restarted)} (restarts so far: "
                     f"{', '.join(f'{k} {v}' for k, v in self.restarts().items() if v)})")
            self._write_state()
        return restarted

    def pause(self, name: str, seconds: float) -> None:
        """Take one component down for ``seconds`` (fault drills, ``kibotos bench
        faults``): a process is SIGKILLed, a thread is stopped and its consumer closed
        without a goodbye commit beyond what it had done; the supervisor starts it again
        when the time is up."""
        slot = next((s for s in self.slots if s.name == name), None)
        if slot is None:
            raise ServiceError(f"no component {name!r}; known: {', '.join(s.name for s in self.slots)}")
        if isinstance(slot.handle, subprocess.Popen):
            slot.handle.kill()
            slot.handle.wait(10)
        else:
            # Tansu wedges a consumer group for good when a member leaves before its first
            # join completed (the next member never gets an assignment; Kafka does not):
            # let the consumer finish joining before it goes. Its own thread records the
            # assignment: calling into a confluent consumer from this thread while that one
            # blocks in a watermark query hung here for good
            component = {"sink": self.sink, "novelty": self.novelty}.get(name)
            deadline = time.monotonic() + 30
            while component is not None and slot.alive() and time.monotonic() < deadline:
                if getattr(component, "assigned", True):
                    break
                time.sleep(0.2)
            slot.event.set()
            cast(threading.Thread, slot.handle).join(30)
            # its consumer leaves the group, so its partitions wait for the restart
            if name == "sink" and self.sink is not None:
                self.sink.close()
                self.sink = None
            if name == "novelty" and self.novelty is not None:
                self.novelty.close()
                self.novelty = None
        slot.paused, slot.due_at = True, time.monotonic() + seconds
        self.log(f"[yellow]paused[/yellow]   {name} for {seconds:.0f}s")

    def _answer_requests(self) -> None:
        """``kibotos admin reconcile`` (and fault drills) from another shell: it cannot
        open the locked chdb store, so it leaves a request file here and reads the answer
        next to it."""
        for request in self.settings.home.glob("pause-*.request"):
            try:
                body = json.loads(request.read_text())
                request.unlink()
                self.pause(str(body["name"]), float(body["seconds"]))
            except (OSError, ValueError, KeyError, ServiceError) as exc:
                self.log(f"pause request {request.name} refused: {exc}")
                request.unlink(missing_ok=True)
        for request in self.settings.home.glob("reconcile-*.request"):
            answer = request.with_suffix(".json")
            try:
                text = request.read_text()
                request.unlink()
                retry = json.loads(text).get("retry") if text.strip() else None
                body = {"ok": True, **self.reconcile_now([str(s) for s in retry or []])}
            except FileNotFoundError:
                continue
            except (ServiceError, ValueError, AttributeError) as exc:
                body = {"ok": False, "error": str(exc)}
            tmp = answer.with_suffix(".tmp")
            tmp.write_text(json.dumps(body))
            tmp.replace(answer)

    def restarts(self) -> dict[str, int]:
        """Restarts per component name since start (the broker's are in the metric)."""
        return {slot.name: slot.restarts for slot in self.slots}

    def check_workers(self) -> None:
        """Kept for callers of the former fail-fast check: supervise instead of raising."""
        self.supervise()

    def stop(self) -> None:
        self._stopping = True
        procs = [s.handle for s in self.slots if isinstance(s.handle, subprocess.Popen)]
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
        self._stop.set()
        for slot in self.slots:
            slot.event.set()
        for slot in self.slots:
            if isinstance(slot.handle, threading.Thread):
                slot.handle.join(30)
        self.slots.clear()
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        if self.novelty is not None:
            self.novelty.close()
            self.novelty = None
        if self._reconcile_producer is not None:
            self._reconcile_producer.flush(5)
            self._reconcile_producer = None
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


def request_reconcile(settings: Settings, timeout_s: float = 60.0, retry: list[str] | None = None) -> dict:
    """Ask the stack running under ``settings.home`` for one reconciliation pass (after
    resetting the attempts of ``retry``); its supervision loop answers within a second or two."""
    import uuid

    if running_stack(settings) is None:
        raise ServiceError(f"no stack is running under {settings.home}")
    nonce = uuid.uuid4().hex
    request = settings.home / f"reconcile-{nonce}.request"
    answer = request.with_suffix(".json")
    tmp = request.with_suffix(".tmp")
    tmp.write_text(json.dumps({"retry": list(retry or [])}))
    tmp.replace(request)  # whole or not at all: the stack may look at any moment
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answer.exists():
            body = json.loads(answer.read_text())
            answer.unlink()
            if not body.pop("ok"):
                raise ServiceError(body["error"])
            return body
        time.sleep(0.2)
    request.unlink(missing_ok=True)
    raise ServiceError(f"the stack under {settings.home} did not answer within {timeout_s:.0f}s")


def request_pause(settings: Settings, name: str, seconds: float) -> None:
    """Ask the stack running under ``settings.home`` to take ``name`` (``sink``,
    ``novelty``, ``worker-0``, ``gpu-0``, ...) down for ``seconds`` (``Stack.pause``)."""
    import uuid

    if running_stack(settings) is None:
        raise ServiceError(f"no stack is running under {settings.home}")
    tmp = settings.home / f"pause-{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps({"name": name, "seconds": seconds}))
    tmp.replace(tmp.with_suffix(".request"))


def _is_our_child(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(marker in cmdline for marker in CHILD_MARKERS)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass
