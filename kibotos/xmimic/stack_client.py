"""``kibotos train --via-stack``: a training request onto ``training.requests`` and its
``training.progress`` followed until the run is done or failed (README "XMimic through
the stack"). The request is resolved here, where the dataset store is: the dataset
reference is pinned to a version (``name@vN``) and its clips to object-store URIs, the
config goes as YAML text and a teacher checkpoint file is uploaded, so a GPU node needs
only the broker and the object store."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from kibotos.errors import ServiceError
from kibotos.xmimic.clips import XMimicError

TERMINAL = ("done", "failed")


def new_run_id() -> str:
    return f"run-{uuid.uuid4().hex[:12]}"


def build_request(*, run_id: str, role: str, dataset: str, settings, store, config: Path | None = None,
                  teacher: str | None = None, task: str | None = None, iterations: int | None = None,
                  num_envs: int | None = None, device: str = "cpu", backend: str | None = None, seed: int = 0,
                  requested_by: str = "cli") -> dict:
    """The ``training.requests`` record of a run (raises ``XMimicError`` / ``ConfigError``)."""
    from gpu_consumers.training_jobs import ROLES, RUN_ID, policy_key
    from kibotos.xmimic.config import DEFAULT_PATH, load_xmimic_config
    from kibotos.xmimic.sources import resolve_dataset

    if not RUN_ID.match(run_id):
        raise XMimicError(f"bad run id {run_id!r}: [A-Za-z0-9_.-]{{1,100}}", reason_code="xmimic_arguments_invalid")
    if role not in ROLES:
        raise XMimicError(f"unknown role {role!r} (one of {ROLES})", reason_code="xmimic_role_invalid")
    if role != "teacher" and not teacher:
        raise XMimicError("a student needs --teacher", reason_code="xmimic_teacher_missing")
    cfg = load_xmimic_config(config)  # refused here rather than on the GPU node
    data = resolve_dataset(dataset, settings.home, store)
    teacher_id = teacher_uri = None
    if teacher:
        path = Path(teacher)
        if path.is_file():  # a checkpoint file: uploaded so that any node can read it
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            teacher_uri = store.put_file(path, f"xmimic/teachers/{digest}.pt").uri
        else:  # a policy id: trained through the stack (object store) or registered locally
            teacher_id = teacher
            if store.stat(policy_key(teacher)) is None:
                from kibotos.xmimic.registry import checkpoint_path

                local = checkpoint_path(settings.home, teacher)  # xmimic_policy_unknown when nowhere
                teacher_uri = store.put_file(local, policy_key(teacher)).uri
    return {"run_id": run_id, "role": role, "dataset": data.dataset, "dataset_versions": list(data.dataset_versions),
            "clips": [c.as_record() for c in data.clips], "teacher_policy_id": teacher_id,
            "teacher_checkpoint_uri": teacher_uri, "config_yaml": Path(config or DEFAULT_PATH).read_text(),
            "config_version": cfg.config_version, "task": task, "iterations": iterations, "num_envs": num_envs,
            "device": device, "backend": backend, "seed": seed, "requested_by": requested_by,
            "requested_at": int(time.time() * 1000)}


def submit(bootstrap: str, catalogue, request: dict) -> None:
    from kibotos.runtime.submit import producer

    spec = catalogue.get("training.requests")
    prod = producer(bootstrap)
    prod.produce(spec.name, key=spec.key(request), value=spec.serialize(request))
    if prod.flush(30):
        raise ServiceError("the training request was not acknowledged by the broker")


def follow(bootstrap: str, catalogue, run_id: str, on_event: Callable[[dict], None] | None = None,
           timeout_s: float | None = None, since_ms: int = 0) -> dict:
    """Read ``training.progress`` for ``run_id`` (every partition from the beginning: a
    finished run is answered at once) until a ``done`` / ``failed`` record; returns it.
    Records older than ``since_ms`` other than ``done`` (an earlier attempt's failure) are skipped.

    :raises ServiceError: nothing terminal within ``timeout_s``.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    spec = catalogue.get("training.progress")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"train-follow-{uuid.uuid4().hex[:12]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    consumer.assign([TopicPartition(spec.name, p, OFFSET_BEGINNING) for p in range(spec.partitions)])
    key = run_id.encode()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while deadline is None or time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=200, timeout=0.5):
                if msg.error() is not None or msg.key() != key or msg.value() is None:
                    continue
                try:
                    ev = spec.deserialize(msg.value())
                except Exception:  # noqa: BLE001 - the sink keeps undecodable records as dead letters
                    continue
                if ev["at"] < since_ms and ev["state"] != "done":
                    continue
                if on_event is not None:
                    on_event(ev)
                if ev["state"] in TERMINAL:
                    return ev
    finally:
        consumer.close()
    raise ServiceError(f"run {run_id}: no done/failed record within {timeout_s:.0f} s (it may still be training; "
                       f"follow it again with --via-stack --run-id {run_id})")
