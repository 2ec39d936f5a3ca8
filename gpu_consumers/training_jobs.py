"""XMimic training as a job kind of the GPU consumer group (``train``).

    training.requests ─► train (kibotos.xmimic.train.train on a Ray actor) ─► training.progress
                                 │ checkpoints every N iterations: xmimic/<run_id>/model_<it>.pt
                                 └ done: policy xmimic/policies/<policy_id>/model.pt + xmimic/<run_id>/final.json

A request names the run (``run_id``), the role (teacher | nep | mocap), the dataset
(an XGen request id or a dataset version ``name@vN``, or the clips already resolved by the
requester), the teacher of a student, the config (YAML text) and the scale (iterations,
environments, device, backend, seed). The job publishes ``training.progress`` while it
trains — ``running`` at the start (``resumed_from``: the checkpoint it continues), then one
record per PPO iteration, at most one a ``progress_interval_s`` except the iterations that
stored a checkpoint (``checkpointed``, with its URI) — through its own producer, and
returns the last record (``done`` with the policy, or ``failed`` with a reason code),
which the consumer publishes like any job output.

**Resume.** Checkpoints go to the object store under a key derived from the run id. A
job whose actor dies (SIGKILL, OOM, the node) is retried by the consumer on a fresh actor
(``kibotos/config/faults.yaml`` ``max_attempts``); the retry downloads the run's last
checkpoint into its own run directory and ``train`` resumes from it, so a kill costs at
most the iterations since the last checkpoint.

**Budget.** Training outlives the common job time budget by design: the kind has its
own (``job_time_budgets_s.train``). The job stops a margin before it with a checkpoint
(``checkpointed``) and re-queues its request: the next slice resumes from that
checkpoint, so a run of any length never has its actor killed for overrunning.

**One trainer per run.** The job holds a lease on its run (``kibotos.xmimic.lease``:
``xmimic/<run_id>/lease/<generation>.json``, taken by a conditional create, renewed every
``checkpoint.lease_ttl_s / 4``); every checkpoint, policy and final-marker write checks it
first. A second request for a run another job is training (a redelivery while the first
still runs, a user sending it again) waits up to 1.25 × the lease TTL: when the holder's
lease goes stale (its actor died) or is released, it takes the run and resumes from the
last checkpoint; while the holder lives it answers with the holder's last progress record
and reason code ``xmimic_run_in_progress``, and trains nothing. A job that finds its run
taken over (it was taken for dead) stops writing at once and answers the same way.

**Idempotent.** A finished run leaves ``xmimic/<run_id>/final.json`` (its ``done``
record); a request for that run is answered with the same record again, never trained
twice. Policy ids are ``<role>-<run_id>-it<iterations>``; rows are replacing tables keyed
by run id / (run id, iteration) / policy id.

Refusals (``failed`` + reason code; the consumer lives on): the reason codes of
``kibotos.xmimic`` (``xmimic_dataset_unknown``, ``xmimic_clips_missing``,
``xmimic_clip_invalid``, ``xmimic_teacher_missing``, ``xmimic_teacher_invalid``,
``xmimic_role_invalid``, ``xmimic_unknown_task``, ``xmimic_checkpoint_invalid`` …),
``xmimic_request_invalid`` (bad run id, role), ``config_invalid`` (config YAML) and
``xmimic_internal_error`` (a bug). An object-store failure (``ServiceError``) is the
validator's fault: retried on a fresh actor, then dead-lettered.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from gpu_consumers.registry import JobSpec, register_job
from kibotos.errors import KibotosError, SerializationError, ServiceError
from kibotos.xmimic.lease import FencedStore, LeaseLost, RunLease
from streams.stage import Output, Record, dead_letter, load_fault_policy, now_ms
from topics.catalogue import Catalogue

if TYPE_CHECKING:
    from confluent_kafka import Producer

log = logging.getLogger("kibotos.xmimic")

KIND = "train"
RUNS = Counter("kibotos_training_runs", "XMimic training jobs finished: done, or the failure reason code",
               ["role", "outcome"])
RUN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
ROLES = ("teacher", "nep", "mocap")
STATES = ("queued", "running", "checkpointed", "done", "failed")
_CKPT = re.compile(r"model_(\d+)\.pt$")


def run_prefix(run_id: str) -> str:
    """Object-store prefix of a run's checkpoints and final marker."""
    return f"xmimic/{run_id}"


def policy_key(policy_id: str) -> str:
    """Object-store key of a policy's checkpoint (``kibotos.xmimic.registry`` uses the same)."""
    return f"xmimic/policies/{policy_id}/model.pt"


def policy_id_for(role: str, run_id: str, iterations: int) -> str:
    return f"{role}-{run_id}-it{iterations}"


class RequestRefused(KibotosError):
    reason_code = "xmimic_request_invalid"


class TrainingStage:
    """The ``train`` job: one training run per request (module docstring).

    :param publish: ``publish(outputs)`` for the records published while training runs;
        default: a Kafka producer on ``settings.bootstrap_servers`` (built on first use).
    :param work_dir: where runs, clips and checkpoints live on this actor (default: a
        fresh temporary directory, so a resumed run has only the object store to go on).
    :param budget_s: the job's time budget (default: ``job_time_budgets_s.train`` of
        the faults config); the job stops a margin before it and re-queues the rest.
    """

    def __init__(self, settings, catalogue: Catalogue, store, *, publish: Callable[[list[Output]], None] | None = None,
                 work_dir: Path | None = None, budget_s: float | None = None, progress_interval_s: float = 1.0):
        self.settings = settings
        self.catalogue = catalogue
        self.store = store
        self.id = self.processor_id = f"job_{KIND}"
        self.input = catalogue.get("training.requests")
        self.progress = catalogue.get("training.progress")
        self.inputs = (self.input,)
        self.outputs = (self.progress, self.input, catalogue.dead_letters)
        self._work_dir = Path(work_dir) if work_dir else None
        self._publish = publish
        self._producer: Producer | None = None
        self.budget_s = budget_s or load_fault_policy(settings.fault_config_path).budget_s(KIND)
        self.progress_interval_s = progress_interval_s

    @property
    def work_dir(self) -> Path:
        """Created on the first job: an actor that never trains leaves nothing behind."""
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="kibotos-train-"))
        return self._work_dir

    # --- the record loop ---------------------------------------------------------------
    def handle(self, record: Record) -> list[Output]:
        try:
            req = self.input.deserialize(record.value or b"")
        except SerializationError as exc:
            return [dead_letter(self.catalogue, record, self.processor_id, exc.reason_code, str(exc))]
        req.pop("schema_version", None)
        base = self._base(req)
        try:
            self._check(req)
            final = self._final(req["run_id"])
            if final is not None:  # finished before: the same answer again, no training
                log.info("%s: run %s is finished (%s), not training again", self.processor_id, req["run_id"],
                         final.get("policy_id"))
                return [Output(self.progress, final)]
            return self._leased(req, base)
        except ServiceError:
            raise  # the validator's fault: the consumer retries on a fresh actor
        except KibotosError as exc:
            return self._failed(base, exc.reason_code, str(exc))
        except Exception as exc:  # a bug must not kill the consumer
            log.exception("%s: internal error on run %s", self.processor_id, req.get("run_id"))
            return self._failed(base, "xmimic_internal_error", f"{type(exc).__name__}: {exc}")

    def _leased(self, req: dict, base: dict) -> list[Output]:
        """Train under the run's lease (module docstring, "One trainer per run")."""
        run_id = req["run_id"]
        cfg = self._config(req, self.work_dir / run_id)
        lease = RunLease(self.store, run_prefix(run_id), ttl_s=cfg.checkpoint.lease_ttl_s)
        if not lease.acquire():
            return self._busy(base, lease.holder.record if lease.holder else None)
        try:
            final = self._final(run_id)  # the holder waited for may have finished the run
            if final is not None:
                return [Output(self.progress, final)]
            lease.start()
            try:
                outs = self._train(req, base, lease)
            except LeaseLost as exc:
                log.warning("%s: %s; stopping without writing", self.processor_id, exc)
                cur = lease.current()
                return self._busy(base, cur.record if cur else None)
            if outs[0].record["state"] == "done":  # everything is in the object store now
                shutil.rmtree(self.work_dir / run_id, ignore_errors=True)
            return outs
        finally:
            lease.release()

    def _busy(self, base: dict, holder_record: dict | None) -> list[Output]:
        """The answer to a request for a run another job trains: the holder's last progress
        record (it replaces the run's row with what the row already says), marked."""
        log.info("%s: run %s is being trained by another job; not training it here", self.processor_id,
                 base["run_id"])
        RUNS.labels(base["role"], "xmimic_run_in_progress").inc()
        rec = dict(holder_record) if holder_record else dict(base, state="running")
        return [Output(self.progress, dict(rec, reason_code="xmimic_run_in_progress", at=now_ms()))]

    def _base(self, req: dict) -> dict[str, Any]:
        """The run fields every progress record carries (each record replaces the run's row)."""
        return {"run_id": req["run_id"], "role": req["role"], "task": req.get("task") or "",
                "dataset": req["dataset"], "dataset_versions": list(req.get("dataset_versions") or []),
                "teacher_policy_id": req.get("teacher_policy_id"), "config_version": req["config_version"],
                "backend": req.get("backend") or "", "device": req.get("device") or "cpu",
                "num_envs": int(req.get("num_envs") or 0), "state": "queued", "iteration": 0,
                "iterations": int(req.get("iterations") or 0), "env_steps": 0, "reward_terms": {}, "losses": {},
                "success_rate": None, "checkpoint_uri": None, "policy_id": None, "reason_code": None,
                "requested_by": req.get("requested_by") or "", "resumed_from": 0, "at": now_ms()}

    def _check(self, req: dict) -> None:
        if not RUN_ID.match(req["run_id"]):
            raise RequestRefused(f"bad run id {req['run_id']!r}: [A-Za-z0-9_.-]{{1,100}}")
        if req["role"] not in ROLES:
            raise RequestRefused(f"unknown role {req['role']!r} (one of {', '.join(ROLES)})",
                                 reason_code="xmimic_role_invalid")
        if req["role"] != "teacher" and not (req.get("teacher_policy_id") or req.get("teacher_checkpoint_uri")):
            raise RequestRefused("a student needs a teacher policy", reason_code="xmimic_teacher_missing")

    def _failed(self, base: dict, reason: str, message: str) -> list[Output]:
        log.info("%s: run %s failed: [%s] %s", self.processor_id, base["run_id"], reason, message[:300])
        RUNS.labels(base["role"], reason).inc()
        return [Output(self.progress, dict(base, state="failed", reason_code=reason, at=now_ms()))]

    # --- training ----------------------------------------------------------------------
    def _train(self, req: dict, base: dict, lease: RunLease) -> list[Output]:
        from kibotos.xmimic.clips import load_clips
        from kibotos.xmimic.train import checkpoint_infos, latest_checkpoint, train

        run_id = req["run_id"]
        run_dir = self.work_dir / run_id
        cfg = self._config(req, run_dir)
        clips_dir, base = self._clips(req, base, run_dir)
        clips = load_clips(clips_dir)
        teacher = self._teacher(req, run_dir)
        self._restore(run_id, run_dir)
        last = latest_checkpoint(run_dir)
        start = int(last.stem.split("_")[1]) if last is not None else 0
        total = int(req.get("iterations") or (cfg.teacher.iterations if req["role"] == "teacher"
                                               else cfg.student.iterations))
        steps_per_env = cfg.teacher.num_steps_per_env
        base = dict(base, task=base["task"] or cfg.task, iterations=total, resumed_from=start, iteration=start)
        if last is not None:
            # the checkpoint's own record again (idempotent: a row per run and iteration): a
            # process killed after storing checkpoint N but before publishing N's record left a gap
            try:
                infos = checkpoint_infos(last)
            except Exception:  # noqa: BLE001 - unreadable: train() refuses it with its reason code
                infos = {}
            if isinstance(infos.get("event"), dict):
                self._emit([Output(self.progress, self._event(base, infos, infos["event"], steps_per_env, True))])
        lease.record = dict(base, state="running", at=now_ms())
        self._emit([Output(self.progress, lease.record)])
        state: dict[str, Any] = {"at": 0.0, "run": None}

        def on_progress(ev: dict) -> None:
            lease.check()  # taken over: stop training (LeaseLost ends train())
            if state["run"] is None:  # what the environment resolved (task, backend, envs)
                state["run"] = json.loads((run_dir / "run.json").read_text())
            it = int(ev["iteration"])
            saved = (run_dir / "checkpoints" / f"model_{it}.pt").is_file()
            now = time.monotonic()
            if not saved and it != total and now - state["at"] < self.progress_interval_s:
                return
            state["at"] = now
            lease.record = self._event(base, state["run"], ev, steps_per_env, saved)
            self._emit([Output(self.progress, lease.record)])

        margin = min(60.0, 0.1 * self.budget_s)
        result = train(clips, cfg, run_dir, role=req["role"], teacher=teacher, task=req.get("task"),
                       num_envs=req.get("num_envs"), iterations=total, device=req.get("device") or "cpu",
                       backend=req.get("backend"), seed=int(req.get("seed") or 0), progress=on_progress,
                       store=FencedStore(self.store, lease), run_id=run_id, time_budget_s=max(self.budget_s - margin, 1.0),
                       extra_meta={"dataset": base["dataset"], "dataset_versions": base["dataset_versions"],
                                   "teacher_policy_id": base["teacher_policy_id"]})
        run = state["run"] or json.loads((run_dir / "run.json").read_text())
        base = dict(base, task=run.get("task") or base["task"], backend=run.get("backend") or base["backend"],
                    num_envs=int(run.get("num_envs") or base["num_envs"]))
        env_steps = result.iterations * base["num_envs"] * steps_per_env
        ckpt_uri = self.store.uri_for(f"{run_prefix(run_id)}/{result.checkpoint.name}")
        last_ev = (result.history or [{}])[-1]
        common = dict(base, iteration=result.iterations, env_steps=env_steps, checkpoint_uri=ckpt_uri,
                      reward_terms=_floats(last_ev.get("reward_terms")), losses=_floats(last_ev.get("losses")),
                      success_rate=last_ev.get("success_rate"))
        if result.iterations < total:  # out of budget: checkpointed; the rest is a new slice of the same run
            log.info("%s: run %s stopped at %d/%d iterations (budget %.0f s); re-queued", self.processor_id, run_id,
                     result.iterations, total, self.budget_s)
            return [Output(self.progress, dict(common, state="checkpointed", at=now_ms())),
                    Output(self.input, dict(req, requested_at=now_ms()))]
        policy_id = policy_id_for(req["role"], run_id, result.iterations)
        lease.check(strict=True)
        policy_uri = self._register(policy_id, result.checkpoint, base)
        done = dict(common, state="done", policy_id=policy_id, checkpoint_uri=policy_uri, at=now_ms())
        lease.check(strict=True)
        self.store.put_bytes(json.dumps(done, sort_keys=True).encode(), f"{run_prefix(run_id)}/final.json")
        RUNS.labels(req["role"], "done").inc()
        return [Output(self.progress, done)]

    def _event(self, base: dict, run: dict, ev: dict, steps_per_env: int, saved: bool) -> dict:
        it = int(ev["iteration"])
        envs = int(run.get("num_envs") or base["num_envs"])
        return dict(base, task=run.get("task") or base["task"], backend=run.get("backend") or base["backend"],
                    num_envs=envs, state="checkpointed" if saved else "running", iteration=it,
                    env_steps=it * envs * steps_per_env, reward_terms=_floats(ev.get("reward_terms")),
                    losses=_floats(ev.get("losses")), success_rate=ev.get("success_rate"),
                    checkpoint_uri=self.store.uri_for(f"{run_prefix(base['run_id'])}/model_{it}.pt") if saved else None,
                    at=now_ms())

    def _config(self, req: dict, run_dir: Path):
        from kibotos.xmimic.config import load_xmimic_config

        text = req.get("config_yaml")
        if not text:
            return load_xmimic_config()
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "xmimic.yaml"
        path.write_text(text)
        return load_xmimic_config(path)

    def _clips(self, req: dict, base: dict, run_dir: Path) -> tuple[Path, dict]:
        from kibotos.xmimic.sources import download_clips, resolve_dataset

        refs = list(req.get("clips") or [])
        if not refs:  # the requester left the resolution to the job
            data = resolve_dataset(req["dataset"], self.settings.home, self.store)
            refs = [c.as_record() for c in data.clips]
            base = dict(base, dataset=data.dataset, dataset_versions=list(data.dataset_versions))
        dest = run_dir / "clips"
        shutil.rmtree(dest, ignore_errors=True)
        return download_clips(refs, self.store, dest), base

    def _teacher(self, req: dict, run_dir: Path) -> Path | None:
        from kibotos.xmimic.clips import XMimicError

        if req["role"] == "teacher":
            return None
        uri = req.get("teacher_checkpoint_uri")
        pid = req.get("teacher_policy_id")
        if not uri and pid:
            key = policy_key(pid)
            if self.store.stat(key) is not None:
                uri = self.store.uri_for(key)
            else:  # a policy trained in-process on this machine: the local registry
                from kibotos.xmimic.registry import checkpoint_path

                return checkpoint_path(self.settings.home, pid)
        path = run_dir / "teacher.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.write_bytes(self.store.read_bytes(uri, 1 << 30))
        except ServiceError:
            raise
        except KibotosError as exc:
            raise XMimicError(f"teacher {pid or uri}: {exc}", reason_code="xmimic_teacher_missing") from exc
        return path

    def _restore(self, run_id: str, run_dir: Path) -> None:
        """The run's last checkpoint in the object store into ``run_dir`` (when newer than
        what the directory has): a retry on a fresh actor resumes where the dead one stopped."""
        from kibotos.xmimic.train import latest_checkpoint

        stored = []
        for info in self.store.list(f"{run_prefix(run_id)}/"):
            m = _CKPT.search(info.key)
            if m and info.key == f"{run_prefix(run_id)}/model_{m.group(1)}.pt":
                stored.append((int(m.group(1)), info.key))
        if not stored:
            return
        it, key = max(stored)
        local = latest_checkpoint(run_dir)
        if local is not None and int(local.stem.split("_")[1]) >= it:
            return
        dest = run_dir / "checkpoints" / f"model_{it}.pt"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".pt.part")
        tmp.write_bytes(self.store.read_bytes(self.store.uri_for(key), 4 << 30))
        tmp.replace(dest)
        log.info("%s: run %s resumes from stored checkpoint %s", self.processor_id, run_id, key)

    def _register(self, policy_id: str, checkpoint: Path, base: dict) -> str:
        """The final checkpoint as a policy: in the object store (``policy_key``) and in the
        local registry of this machine (``kibotos policies``)."""
        stored = self.store.put_file(checkpoint, policy_key(policy_id))
        try:
            from kibotos.xmimic.registry import register

            register(self.settings.home, checkpoint, policy_id=policy_id,
                     extra={"dataset": base["dataset"], "dataset_versions": base["dataset_versions"],
                            "uri": stored.uri})
        except OSError as exc:  # the object store has it; a read-only home does not fail the run
            log.warning("%s: local registry: %s", self.processor_id, exc)
        return stored.uri

    def _final(self, run_id: str) -> dict | None:
        key = f"{run_prefix(run_id)}/final.json"
        if self.store.stat(key) is None:
            return None
        try:
            return json.loads(self.store.read_bytes(self.store.uri_for(key), 1 << 20))
        except ValueError:
            return None  # damaged marker: train again (resumes from the last checkpoint)

    # --- publishing while the job runs -------------------------------------------------
    def _emit(self, outputs: list[Output]) -> None:
        if self._publish is not None:
            self._publish(outputs)
            return
        if self._producer is None:
            if not self.settings.bootstrap_servers:
                return  # no broker known (a bare stage): only the final record is published
            from confluent_kafka import Producer

            from topics.clients import producer_config

            self._producer = Producer(producer_config(self.settings.bootstrap_servers))
        for out in outputs:
            self._producer.produce(out.topic.name, key=out.key(), value=out.value())
        if self._producer.flush(10):
            log.warning("%s: progress records not acknowledged in 10 s", self.processor_id)


def _floats(values: dict | None) -> dict[str, float]:
    out = {}
    for k, v in (values or {}).items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if f == f:  # NaN cannot be a useful progress figure
            out[str(k)] = f
    return out


def build_training_stage(settings, catalogue: Catalogue, store) -> TrainingStage:
    """``build_stage`` of the job registry."""
    return TrainingStage(settings, catalogue, store)


register_job(JobSpec(kind=KIND, input_topic="training.requests", family="xmimic", build_stage=build_training_stage))
