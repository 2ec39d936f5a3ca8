"""The stage contract: what every stream stage is, and the one error wrapper they share.

A stage is a broker-free object::

    id: str                          # stable processor id ("gate_a_integrity", "job_ik", "novelty", ...)
    inputs: tuple[TopicSpec, ...]    # the topics it consumes
    outputs: tuple[TopicSpec, ...]   # every topic it may publish to
    handle(record: Record) -> list[Output]

``handle`` decodes the input record, does the stage's work and returns the records to
publish. Runners (faust agents in ``streams.app``, ``streams.stage_consumer``, the GPU
consumer's Ray actors in ``gpu_consumers.consumer``, ``run_in_process`` for tests and
benches) only move bytes between topics around that call, so every stage plugs into every
runner. Input that cannot be decoded becomes a dead letter, never an exception.

``contained(stage_id, fn)`` is the one place where a stage's work meets errors: hostile
input (a ``KibotosError``) becomes a failed ``GateResult`` with its reason code, a
``MemoryError`` (the worker's memory ceiling) a ``resource_limit_exceeded`` result, an
unforeseen exception an ``<kind>_internal_error`` result, and the wall time is recorded.
A ``ServiceError`` (the store, the broker, a renderer: the validator's own fault) is
raised so the runner retries it. Gates (``processors.base.run_gate``), evidence jobs and
the novelty stage all run their work through it.

Validator faults. In a stream stage (``faults=True``) an internal error
(``gate_internal_error``, ``job_internal_error``: a bug or a crashed model, not the miner's
input) is raised as a ``ValidatorFault`` instead of becoming a failed result, so it never
rejects the miner. ``handle_with_retries`` tries the record again up to
``FaultPolicy.max_attempts`` times in all (versioned, ``kibotos/config/faults.yaml``) and
then parks it in ``dead.letters`` with the fault's reason code: the verdict stays pending,
operators see the record (replayable) and the ``kibotos_validator_faults_total`` counter.
``kibotos verify`` keeps the failed result (``faults=False``): it prints what happened.

A decode error after the first frame of a video (a damaged tail) keeps the frames decoded
so far, but is never silent: ``kibotos.errors.note_degraded`` records it and ``contained``
adds the flag (``video_decode_truncated``) and ``metrics["degraded"]`` to the stage's result.
"""

from __future__ import annotations

import functools
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from kibotos.bundle.limits import RESOURCE_LIMIT
from kibotos.errors import KibotosError, ServiceError, collect_degraded
from kibotos.reports.model import GateResult
from topics.catalogue import Catalogue, TopicSpec

log = logging.getLogger("kibotos.streams")
# reason codes that say the validator failed, not the miner's input
VALIDATOR_FAULTS = frozenset({"gate_internal_error", "job_internal_error", "novelty_internal_error",
                              "stage_internal_error"})
FAULTS_CONFIG = Path(__file__).resolve().parents[1] / "kibotos" / "config" / "faults.yaml"


class ValidatorFault(ServiceError):
    """A stage failed on a record through no fault of the miner (module docstring)."""

    def __init__(self, stage_id: str, reason_code: str, message: str):
        super().__init__(f"{stage_id}: {message}", reason_code=reason_code)
        self.stage_id = stage_id
        self.detail = message

    def __reduce__(self):
        # rebuilt with its reason code where it crosses a process (a Ray actor's error)
        return (type(self), (self.stage_id, self.reason_code, self.detail))


class FaultPolicy(BaseModel):
    """How validator faults are retried (``kibotos/config/faults.yaml``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config_version: str
    max_attempts: int = 3
    backoff_s: float = 0.5
    # wall time one GPU job may take before its actor is killed (gpu_consumers.consumer):
    # above a cold Genesis scene build, far below "forever"
    job_time_budget_s: float = 900.0
    # per job kind, instead of job_time_budget_s: a kind whose jobs run long by design
    # (``train``: a PPO run) gets its own budget
    job_time_budgets_s: dict[str, float] = {}

    def budget_s(self, kind: str) -> float:
        """The time budget of one job of ``kind``."""
        return self.job_time_budgets_s.get(kind, self.job_time_budget_s)


@functools.lru_cache(maxsize=8)
def load_fault_policy(path: Path | str | None = None) -> FaultPolicy:
    from kibotos.config.files import load_config

    policy = load_config(FaultPolicy, path or FAULTS_CONFIG, "faults")
    if (policy.max_attempts < 1 or policy.backoff_s < 0 or policy.job_time_budget_s <= 0
            or any(v <= 0 for v in policy.job_time_budgets_s.values())):
        from kibotos.errors import ConfigError

        raise ConfigError(f"invalid faults config: max_attempts >= 1, backoff_s >= 0 and job_time_budget_s > 0, got {policy}")
    return policy


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Record:
    """An input record as a stage sees it."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True)
class Output:
    """A record a stage asks its runner to publish: ``record`` encoded by ``topic``."""

    topic: TopicSpec
    record: dict[str, Any]

    def key(self) -> bytes | None:
        return self.topic.key(self.record)

    def value(self) -> bytes:
        return self.topic.serialize(self.record)


@runtime_checkable
class Stage(Protocol):
    """Every stream stage (see the module docstring)."""

    # read-only for a runner: a stage may hold them as plain attributes of any tuple length
    @property
    def id(self) -> str: ...
    @property
    def inputs(self) -> tuple[TopicSpec, ...]: ...
    @property
    def outputs(self) -> tuple[TopicSpec, ...]: ...

    def handle(self, record: Record) -> list[Output]: ...


def dead_letter(catalogue: Catalogue, record: Record, processor_id: str, error_code: str, message: str) -> Output:
    """``record`` parked verbatim (replayable) in ``dead.letters`` with why and by whom."""
    return Output(catalogue.dead_letters, {
        "source_topic": record.topic,
        "source_partition": record.partition,
        "source_offset": record.offset,
        "key": record.key,
        "payload": record.value or b"",
        "error_code": error_code,
        "error_message": message[:2000],
        "processor_id": processor_id,
        "failed_at": now_ms(),
    })


def _limit_metrics(exc: Exception) -> dict:
    """What a resource error says about the limit it hit (``limit``, ``limit_value``, ...)."""
    found = getattr(exc, "metrics", None)
    return {k: v for k, v in found.items() if isinstance(v, (str, int, float, bool)) or v is None} \
        if isinstance(found, dict) else {}


def contained(stage_id: str, fn: Callable[[], GateResult], *,
              internal_code: str | None = "stage_internal_error", faults: bool = False) -> GateResult:
    """``fn()`` with every error a stage may meet turned into a result (module docstring).

    :param stage_id: the ``gate`` of a result made from an error.
    :param internal_code: reason code of an unforeseen exception (``gate_internal_error``,
        ``job_internal_error``); ``None`` lets it propagate (the runner crashes and redoes
        the record).
    :param faults: raise a ``ValidatorFault`` for an internal error (an unforeseen
        exception, or a result of ``fn`` carrying one of ``VALIDATOR_FAULTS``) instead of
        returning it: stream stages, where it must not become a verdict.
    """
    t0 = time.perf_counter()
    try:
        with collect_degraded() as degraded:
            res = fn()
    except ServiceError:  # the validator's fault (store, broker, renderer): the runner retries
        raise
    except KibotosError as exc:
        res = GateResult(gate=stage_id, passed=False, reason_code=exc.reason_code,
                         metrics={"error": str(exc)[:500], **_limit_metrics(exc)})
    except MemoryError:
        # the worker's memory ceiling (RLIMIT_AS, streams.worker) refused an allocation:
        # what the stage held is garbage now, the worker goes on
        res = GateResult(gate=stage_id, passed=False, reason_code=RESOURCE_LIMIT,
                         metrics={"limit": "worker_memory_bytes", "error": "memory ceiling reached"})
    except Exception as exc:  # a bug or an input we did not foresee: never crash the worker
        if internal_code is None:
            raise
        if faults:
            raise ValidatorFault(stage_id, internal_code, f"{type(exc).__name__}: {exc}"[:500]) from exc
        res = GateResult(gate=stage_id, passed=False, reason_code=internal_code,
                         metrics={"error": f"{type(exc).__name__}: {exc}"[:500],
                                  "trace": traceback.format_exc(limit=3)[-800:]})
    if faults and not res.passed and res.reason_code in VALIDATOR_FAULTS:  # made a result by a nested wrapper
        raise ValidatorFault(stage_id, res.reason_code, str(res.metrics.get("error", res.reason_code)))
    metrics = dict(res.metrics)
    metrics.setdefault("wall_ms", round((time.perf_counter() - t0) * 1000.0, 3))
    update: dict[str, Any] = {"metrics": metrics}
    if degraded:
        metrics["degraded"] = [{"flag": flag, "detail": detail[:300]} for flag, detail in degraded]
        update["flags"] = list(res.flags) + sorted({flag for flag, _ in degraded} - set(res.flags))
    return res.model_copy(update=update)


def handle_with_retries(stage: Stage, record: Record, catalogue: Catalogue,
                        policy: FaultPolicy | None = None, sleep: Callable[[float], None] = time.sleep) -> list[Output]:
    """``stage.handle(record)``; a ``ValidatorFault`` is retried up to ``policy.max_attempts``
    tries in all, then the record becomes a dead letter with the fault's reason code (the
    verdict stays pending: nothing is published for the submission)."""
    from kibotos.runtime.metrics import VALIDATOR_FAULTS_TOTAL

    policy = policy or load_fault_policy()
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return stage.handle(record)
        except ValidatorFault as fault:
            VALIDATOR_FAULTS_TOTAL.labels(stage.id, fault.reason_code).inc()
            log.warning("validator fault in %s (attempt %d/%d): %s", stage.id, attempt, policy.max_attempts, fault)
            last = fault
            if attempt < policy.max_attempts:
                sleep(min(policy.backoff_s * attempt, 10.0))
    return [dead_letter(catalogue, record, stage.id, last.reason_code,
                        f"validator fault after {policy.max_attempts} attempts, verdict pending: {last}")]
