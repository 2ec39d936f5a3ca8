"""``kibotos bench faults``: fault drills through the real embedded stack.

Each scenario starts ``kibotos up`` (a process of its own, default durable broker) in a
fresh home, submits half of its episodes, injects one fault, submits the other half and
waits until every submission has a final verdict. Then it counts, from the warehouse (the
stack's read API) and the ``verdicts`` topic:

* ``verdicts``: submissions with a final report; ``lost``: submitted, no report;
* ``duplicates``: verdict events published more than once (same event id: validators
  drop them by it; the warehouse keeps one report per submission); ``revisions``:
  further decisions of a submission (a copy revised once its original was checked);
* ``paid_twice``: submissions with more than one reward entry; ``ledger_mismatch``: the
  ledger's sum for a submission differs from its report's points; ``unpaid``: accepted
  ones with points and no entry;
* ``recovery_s``: from the fault until the last verdict arrived.

Faults: SIGKILL of a gate worker, a GPU consumer (``--evidence``: needs Ray), one Ray
actor process of the GPU consumer while it runs a job (``ray_actor``: the consumer
process lives on, its Ray raises for the job, the consumer retries it on a fresh
actor), the broker, SeaweedFS under it, ``kibotos up`` itself (SIGKILL, or SIGTERM in
``up_term``: a clean stop with submissions in flight; started again at once);
the sink and the novelty thread stopped (``pause``: a thread cannot be SIGKILLed) for a
moment or for ``--sink-down`` seconds. ``hostile_delay`` is not a fault: it measures how
long other miners' verdicts wait behind hostile bundles (``benchmarks.hostile_delay``).
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from infra.tansu import die_with_parent
from kibotos.errors import ServiceError

SCENARIOS = ("gate_worker", "broker", "broker_store", "up", "up_term", "sink", "sink_down", "novelty",
             "gpu_consumer", "ray_actor", "hostile_delay")
# a Ray worker process sets its title to ``ray::<actor class>`` and, while it runs a method,
# ``ray::<actor class>.<method>`` (gpu_consumers.consumer.JobActorImpl.handle)
RAY_ACTOR_TITLE = b"ray::JobActorImpl"


def _kibotos() -> list[str]:
    return [sys.executable, "-m", "kibotos.cli.main"]


class UpProcess:
    """``kibotos up`` as a user runs it, in its own home."""

    def __init__(self, home: Path, env: dict[str, str], workers: int):
        self.home, self.env, self.workers = home, env, workers
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 240.0) -> dict:
        state = self.home / "stack.json"
        log = open(self.home / "up.log", "ab")
        self.proc = subprocess.Popen([*_kibotos(), "up", "--workers", str(self.workers), "--reconcile-every", "10",
                                      "--stuck-after", "90"], env=self.env, cwd=self.home, stdout=log,
                                     stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"kibotos up exited with {self.proc.returncode}: see {self.home / 'up.log'}")
            try:
                body = json.loads(state.read_text())
                if body.get("pid") == self.proc.pid:
                    return body
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        raise ServiceError(f"kibotos up not ready within {timeout_s:.0f}s")

    def state(self) -> dict:
        return json.loads((self.home / "stack.json").read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _episodes(root: Path, count: int, first_seed: int = 100, miner: str = "miner-fault") -> list[Path]:
    from kibotos.robots import get_robot, list_robots
    from kibotos.synthetic.samples import make_episode

    robot = get_robot("ur5", dict(list_robots())["ur5"])
    return [make_episode(robot, "genuine", seed=first_seed + i, miner_id=f"{miner}-{i % 3}", duration_ms=3000)
            .write(root / f"ep{first_seed + i}.zarr.zip") for i in range(count)]


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def ray_actor_pids(root_pid: int, busy: bool = False) -> list[int]:
    """The job actor processes of the Ray that ``root_pid`` started (its descendants
    only: other Rays on the machine are not ours); ``busy``: only those running a job."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        if not title.startswith(RAY_ACTOR_TITLE) or (busy and not title.endswith(b".handle")):
            continue
        pid, hops = int(entry.name), 0
        while pid and pid > 1 and pid != root_pid and hops < 16:
            pid, hops = _parent(pid), hops + 1
        if pid == root_pid:
            out.append(int(entry.name))
    return sorted(out)


def kill_busy_ray_actor(root_pid: int, timeout_s: float = 240.0) -> int:
    """SIGKILL one job actor of ``root_pid``'s Ray as soon as one is running a job (mid-job);
    returns its pid."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = ray_actor_pids(root_pid, busy=True)
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            return busy[0]
        time.sleep(0.05)
    raise ServiceError(f"no Ray job actor of process {root_pid} ran a job within {timeout_s:.0f}s")


def _fault(name: str, up: UpProcess, settings, sink_down_s: float) -> None:
    from kibotos.runtime.stack import request_pause

    children = up.state().get("children", {})
    if name == "ray_actor":
        kill_busy_ray_actor(int(children["gpu-0"]))
    elif name in ("gate_worker", "gpu_consumer", "broker", "broker_store"):
        child = {"gate_worker": "worker-0", "gpu_consumer": "gpu-0", "broker": "broker",
                 "broker_store": "broker-s3"}[name]
        os.kill(int(children[child]), signal.SIGKILL)
    elif name in ("up", "up_term"):  # SIGKILL, or the SIGTERM of a user's Ctrl-C / service stop
        up.proc.send_signal(signal.SIGKILL if name == "up" else signal.SIGTERM)
        up.proc.wait(120)
        up.start()
    elif name in ("sink", "novelty"):
        request_pause(settings, name, 1.0)
    elif name == "sink_down":
        request_pause(settings, "sink", sink_down_s)
    else:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")


def _verdict_events(bootstrap: str, spec, expect: int) -> dict[str, dict[str, int]]:
    """``{submission_id: {event id: publications}}`` from the verdicts topic (the event id
    is the same on every publication of one decision; a record without one counts by its
    decision type)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    consumer.subscribe([spec.name])
    counts: dict[str, dict[str, int]] = {}
    total = 0
    deadline, quiet_until = time.monotonic() + 60, None
    try:
        while time.monotonic() < deadline:
            msgs = [m for m in consumer.consume(200, 1.0) if not m.error()]
            for m in msgs:
                event = spec.deserialize(m.value())
                ids = counts.setdefault(event["submission_id"], {})
                eid = event.get("event_id") or f"{event.get('event_type', 'decision')}:{event.get('revision', 0)}"
                ids[eid] = ids.get(eid, 0) + 1
                total += 1
            if total >= expect:
                quiet_until = quiet_until or time.monotonic() + 3  # a few seconds more for duplicates
                if time.monotonic() > quiet_until:
                    break
    finally:
        consumer.close()
    return counts


def run_scenario(name: str, episodes: list[Path], root: Path, *, workers: int = 2, sink_down_s: float = 60.0,
                 timeout_s: float = 600.0, evidence: bool = False, progress=lambda m: None) -> dict:
    from kibotos.config.settings import Settings
    from kibotos.objectstore import store_from_settings
    from kibotos.reports import reads
    from kibotos.runtime.submit import submit_paths
    from topics.catalogue import Catalogue

    home = root / name
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIBOTOS_")}
    jobs = ["ik"] if evidence or name in ("gpu_consumer", "ray_actor") else []
    # the novelty stage only where it is the fault: elsewhere its copy verdicts between
    # the generated episodes (revisions, clawbacks) would blur what the fault did
    novelty = name == "novelty"
    env.update({"KIBOTOS_HOME": str(home), "KIBOTOS_EVIDENCE_JOBS": json.dumps(jobs), "KIBOTOS_LOG_LEVEL": "WARNING",
                "KIBOTOS_NOVELTY": "true" if novelty else "false"})
    settings = Settings(home=home, evidence_jobs=tuple(jobs), novelty=novelty)
    catalogue = Catalogue.from_settings(settings)
    up = UpProcess(home, env, workers)
    t0 = time.monotonic()
    state = up.start()
    startup_s = time.monotonic() - t0
    progress(f"{name}: stack up in {startup_s:.1f}s")
    try:
        store = store_from_settings(settings)
        half = len(episodes) // 2
        subs = submit_paths(episodes[:half], bootstrap=state["bootstrap"], store=store, catalogue=catalogue)
        time.sleep(1.0)  # mid-stream: the first half is being worked on
        t_fault = time.monotonic()
        _fault(name, up, settings, sink_down_s)
        progress(f"{name}: fault injected")
        state = up.state()
        deadline = time.monotonic() + 60
        while True:  # the broker may be on its way back: submitting waits for it
            try:
                subs += submit_paths(episodes[half:], bootstrap=state["bootstrap"], store=store, catalogue=catalogue)
                break
            except ServiceError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        sids = [s.submission_id for s in subs]
        reports: dict[str, dict] = {}
        deadline = t_fault + timeout_s
        while len(reports) < len(sids) and time.monotonic() < deadline:
            for sid in sids:
                if sid not in reports:
                    try:
                        rep = reads.get_report(settings, sid)
                    except ServiceError:  # the read API is restarting with the stack
                        rep = None
                    if rep:
                        reports[sid] = rep
            time.sleep(1.0)
        recovery_s = time.monotonic() - t_fault
        time.sleep(3.0)  # late ledger rows land before they are counted
        entries = reads.ledger(settings, None) if hasattr(reads, "ledger") else []
        paid: dict[str, int] = {}  # reward entries per submission (clawbacks of revised copies apart)
        balance: dict[str, float] = {}
        for entry in entries:
            sid = entry["submission_id"]
            paid[sid] = paid.get(sid, 0) + (entry.get("kind", "reward") == "reward")
            balance[sid] = balance.get(sid, 0.0) + float(entry["points"])
        events = _verdict_events(up.state()["bootstrap"], catalogue.verdicts, len(sids))
        # what the reconciler had to emit again (it logs each pass that did) and what the
        # supervisor restarted, from the stack's own output
        log_text = (home / "up.log").read_text("utf-8", "replace")
        reemitted = sum(int(m) for m in re.findall(r"reconcile: emitted (\d+) stuck", log_text))
        reemitted += sum(int(m) for m in re.findall(r"(\d+) stuck ones emitted again", log_text))
        restarts = re.findall(r"restarted (.+?) \(restarts so far", log_text)
        # jobs a GPU consumer retried on a fresh actor (its actor died under it)
        job_retries = sum(len(re.findall(r"failed \(attempt \d+/\d+\)", p.read_text("utf-8", "replace")))
                          for p in home.glob("gpu-*.log"))
        accepted = [sid for sid, rep in reports.items() if rep["verdict"] == "accepted" and rep.get("points", 0) > 0]
        return {
            "scenario": name, "submitted": len(sids), "verdicts": len(reports), "lost": len(sids) - len(reports),
            "duplicates": sum(n - 1 for sid in sids for n in events.get(sid, {}).values()),
            "revisions": sum(max(0, len(events.get(sid, {})) - 1) for sid in sids),
            "verdict_events": sum(n for sid in sids for n in events.get(sid, {}).values()),
            "paid_twice": sum(1 for sid in sids if paid.get(sid, 0) > 1),
            # the ledger's sum for a submission is what its (latest) report says it earned
            "ledger_mismatch": sum(1 for sid, rep in reports.items()
                                   if abs(balance.get(sid, 0.0) - float(rep.get("points") or 0.0)) > 1e-6),
            "unpaid": sum(1 for sid in accepted if paid.get(sid, 0) == 0),
            "recovery_s": round(recovery_s, 1), "startup_s": round(startup_s, 1),
            "reemitted_by_reconciler": reemitted, "restarted": restarts, "job_retries": job_retries,
            "verdict_counts": {v: sum(1 for r in reports.values() if r["verdict"] == v)
                               for v in sorted({r["verdict"] for r in reports.values()})},
        }
    finally:
        up.stop()


def run_faults_bench(scenarios: list[str], submissions: int = 8, *, workers: int = 2, sink_down_s: float = 60.0,
                     timeout_s: float = 600.0, evidence: bool = False, progress=lambda m: None) -> dict:
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    with tempfile.TemporaryDirectory(prefix="kibotos-faults-") as tmp:
        root = Path(tmp)
        (root / "episodes").mkdir()
        episodes = _episodes(root / "episodes", submissions)
        results = []
        for name in scenarios:
            if name == "hostile_delay":
                from benchmarks.hostile_delay import run_hostile_delay

                results.append(run_hostile_delay(root, workers=workers, genuine=max(2, submissions // 2),
                                                 timeout_s=timeout_s, progress=progress))
                progress(json.dumps(results[-1]))
                continue
            results.append(run_scenario(name, episodes, root, workers=workers, sink_down_s=sink_down_s,
                                        timeout_s=timeout_s, evidence=evidence, progress=progress))
            progress(json.dumps(results[-1]))
    return {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "processor": platform.processor()},
            "submissions": submissions, "workers": workers, "sink_down_s": sink_down_s, "results": results}


def write_json(result: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path
