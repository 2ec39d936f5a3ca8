"""The typed in-flight event: a submission between ``submissions.received`` and its verdict.

``InFlight`` mirrors ``schemas_avro/submission_in_flight.avsc`` field by field (a test
checks they agree). Stages decode a record into it or get ``InvalidEvent`` /
``SerializationError`` (``in_flight_outputs`` turns either into that stage's dead
letter), read earlier results with ``event.result(gate)`` and the offset keyframes are
aligned with via ``event.sync_offset()``, and append their own result with
``with_result`` (one result per stage id: a replayed record replaces, never duplicates).

Gate results are kept as the records the schema carries (metrics and thresholds as JSON
strings), so an event is re-encoded byte for byte as it was decoded; ``result`` parses
one on demand.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from kibotos.errors import KibotosError, SerializationError
from kibotos.reports.model import GateResult
from streams.stage import Output, Record, dead_letter
from topics.catalogue import Catalogue, TopicSpec


class InvalidEvent(KibotosError):
    """A record that decoded but lacks what an in-flight event must carry."""

    code = "invalid_event"

    def __init__(self, message: str):
        super().__init__(message, reason_code=self.code)


def result_record(res: GateResult) -> dict[str, Any]:
    """``res`` as one ``GateResultRecord`` of the schema."""
    return {
        "gate": res.gate,
        "passed": res.passed,
        "reason_code": res.reason_code,
        "metrics_json": json.dumps(res.metrics, default=str),
        "thresholds_json": json.dumps(res.thresholds, default=str),
        "flags": list(res.flags),
    }


def parse_result(rec: Mapping[str, Any]) -> GateResult:
    """A ``GateResultRecord`` (or a ``GateResult`` dump with ``metrics``/``thresholds``)."""
    metrics = rec["metrics"] if "metrics" in rec else json.loads(rec["metrics_json"])
    thresholds = rec["thresholds"] if "thresholds" in rec else json.loads(rec.get("thresholds_json") or "{}")
    return GateResult(gate=rec["gate"], passed=bool(rec["passed"]), reason_code=rec.get("reason_code"),
                      metrics=metrics, thresholds=thresholds, flags=rec.get("flags") or [])


def sync_offset(sync: Mapping[str, Any] | None, trusted: float | None = None) -> float:
    """The offset keyframes are aligned with, from a ``SyncRecord``: gate C's estimate
    when its confidence reaches ``trusted``, else the claim (0 when neither is known).

    ``trusted`` is gate C's own ``high_confidence`` (the versioned gate config the caller
    judges with; default: the packaged one), so the cut-off is spelled in one place."""
    if trusted is None:
        from kibotos.config.gates import load_config

        trusted = load_config().gate_c.high_confidence
    sync = sync or {}
    est, conf = sync.get("estimated_offset_ms"), sync.get("sync_confidence")
    if est is not None and conf is not None and conf >= trusted:
        return float(est)
    return float(sync.get("claimed_offset_ms") or 0.0)


@dataclass(frozen=True)
class InFlight:
    submission_id: str
    miner_id: str
    bundle_uri: str
    bundle_sha256: str
    bundle_size_bytes: int
    received_at: Any  # timestamp-millis: a datetime once decoded, epoch ms when built here
    robot_model_id: str | None = None
    task_id: str | None = None
    config_version: str | None = None
    gate_results: tuple[dict[str, Any], ...] = ()
    sync: dict[str, Any] | None = None
    robot_model_revision: str | None = None

    # --- decoding -------------------------------------------------------------------
    @classmethod
    def decode(cls, spec: TopicSpec, data: bytes | None) -> InFlight:
        """The event of a record of ``spec`` (received, pass, job or rejected topic).
        Raises ``SerializationError`` or ``InvalidEvent``."""
        return cls.from_record(spec.deserialize(data or b""))

    @classmethod
    def from_record(cls, rec: InFlight | Mapping[str, Any]) -> InFlight:
        """From a decoded record; fields the model does not carry (``schema_version``, a
        rejection's ``failed_gate``) are left out, missing optional ones take defaults."""
        if isinstance(rec, InFlight):
            return rec
        try:
            values = {f.name: rec[f.name] for f in fields(cls) if f.name in rec}
            values["gate_results"] = tuple(dict(r) for r in (rec.get("gate_results") or ()))
            event = cls(**values)
        except (TypeError, ValueError, KeyError) as exc:
            raise InvalidEvent(f"not an in-flight event: {exc}") from exc
        for rec_ in event.gate_results:
            if not isinstance(rec_.get("gate"), str) or "passed" not in rec_:
                raise InvalidEvent(f"gate result without gate/passed: {sorted(rec_)}")
        return event

    def to_record(self) -> dict[str, Any]:
        """The record the ``submission_in_flight`` serializer encodes."""
        rec = {f.name: getattr(self, f.name) for f in fields(self)}
        rec["gate_results"] = [dict(r) for r in self.gate_results]
        return rec

    # --- reading ----------------------------------------------------------------------
    def result(self, gate: str) -> GateResult | None:
        """The result of an earlier stage ``gate``; None when it has not run or its
        record cannot be read."""
        for rec in reversed(self.gate_results):
            if rec.get("gate") != gate:
                continue
            try:
                return parse_result(rec)
            except (KeyError, TypeError, ValueError):
                return None
        return None

    def results(self) -> list[GateResult]:
        """Every result, in order. Raises ``InvalidEvent`` for one that cannot be read."""
        try:
            return [parse_result(r) for r in self.gate_results]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidEvent(f"unreadable gate result: {exc}") from exc

    def sync_offset(self, trusted: float | None = None) -> float:
        """The offset keyframes are aligned with (``sync_offset``)."""
        return sync_offset(self.sync, trusted)

    # --- writing ----------------------------------------------------------------------
    def with_result(self, res: GateResult) -> InFlight:
        """This event with ``res`` appended (replacing an earlier result of that stage)."""
        kept = tuple(r for r in self.gate_results if r.get("gate") != res.gate)
        return replace(self, gate_results=kept + (result_record(res),))

    def replace(self, **changes: Any) -> InFlight:
        return replace(self, **changes)

    def __getitem__(self, name: str) -> Any:
        """``event["submission_id"]``: handlers written against the record read the same."""
        if name not in _FIELDS:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default) if name in _FIELDS else default


_FIELDS = frozenset(f.name for f in fields(InFlight))


def in_flight_outputs(spec: TopicSpec, record: Record, catalogue: Catalogue, processor_id: str,
                      fn: Callable[[InFlight], list[Output]]) -> list[Output]:
    """Decode ``record`` and return ``fn(event)``; a record that does not decode as an
    in-flight event becomes this stage's dead letter (never an exception)."""
    try:
        event = InFlight.decode(spec, record.value)
    except (SerializationError, InvalidEvent) as exc:
        return [dead_letter(catalogue, record, processor_id, exc.reason_code, str(exc))]
    return fn(event)


def advance(catalogue: Catalogue, event: InFlight, res: GateResult, pass_topic: TopicSpec) -> list[Output]:
    """Append ``res`` (one result per stage id, replays included) and route the event:
    on to ``pass_topic``, or to ``verification.rejected``."""
    from streams.stage import now_ms

    event = InFlight.from_record(event).with_result(res)
    if res.passed:
        return [Output(pass_topic, event.to_record())]
    rejected = dict(event.to_record(), failed_gate=res.gate, reason_code=res.reason_code or "rejected",
                    rejected_at=now_ms())
    return [Output(catalogue.verification_rejected, rejected)]
