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
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from kibotos.bundle.limits import RESOURCE_LIMIT
from kibotos.errors import KibotosError, ServiceError
from kibotos.report import GateResult
from topics.catalogue import Catalogue, TopicSpec


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

    id: str
    inputs: tuple[TopicSpec, ...]
    outputs: tuple[TopicSpec, ...]

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
              internal_code: str | None = "stage_internal_error") -> GateResult:
    """``fn()`` with every error a stage may meet turned into a result (module docstring).

    :param stage_id: the ``gate`` of a result made from an error.
    :param internal_code: reason code of an unforeseen exception (``gate_internal_error``,
        ``job_internal_error``); ``None`` lets it propagate (the runner crashes and redoes
        the record).
    """
    t0 = time.perf_counter()
    try:
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
        res = GateResult(gate=stage_id, passed=False, reason_code=internal_code,
                         metrics={"error": f"{type(exc).__name__}: {exc}"[:500],
                                  "trace": traceback.format_exc(limit=3)[-800:]})
    metrics = dict(res.metrics)
    metrics.setdefault("wall_ms", round((time.perf_counter() - t0) * 1000.0, 3))
    return res.model_copy(update={"metrics": metrics})
