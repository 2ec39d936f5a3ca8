"""Stage logic of the stream application, free of any broker: ``handle(record) -> outputs``.

A stage decodes its input record, does its work, and returns the records to publish.
The faust agents in ``streams.app`` only move bytes between topics around these calls,
so the whole chain can be exercised in-process (``run_in_process``) with exactly the
code the workers run. Undecodable input becomes a dead letter, never an exception.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from kibotos.errors import KibotosError, SerializationError
from kibotos.gate_config import GateConfig
from kibotos.objectstore import LocalObjectStore
from kibotos.report import GateResult
from processors.base import Gate, gates
from processors.chain import build_report, gate_on_path
from streams.stage import Output, Record, Stage, contained, dead_letter, now_ms  # noqa: F401  (re-exported)
from topics.catalogue import Catalogue, TopicSpec

log = logging.getLogger("kibotos.streams")
LEDGER_NAMESPACE = uuid.UUID("6f1d3c52-7a0e-4b8e-9a57-0c1f9d8e2b41")


def _epoch_ms(value: Any) -> int | None:
    """Epoch milliseconds of an Avro ``timestamp-millis`` field (a datetime once decoded)."""
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return int(round(value.timestamp() * 1000))
    return int(value)


def ledger_entry_id(submission_id: str, kind: str) -> str:
    """Deterministic: the same submission and kind always give the same entry id."""
    return str(uuid.uuid5(LEDGER_NAMESPACE, f"{submission_id}:{kind}"))


def _result_record(res: GateResult) -> dict[str, Any]:
    return {
        "gate": res.gate,
        "passed": res.passed,
        "reason_code": res.reason_code,
        "metrics_json": json.dumps(res.metrics, default=str),
        "thresholds_json": json.dumps(res.thresholds, default=str),
        "flags": list(res.flags),
    }


def _gate_result(rec: dict[str, Any]) -> GateResult:
    return GateResult(gate=rec["gate"], passed=rec["passed"], reason_code=rec.get("reason_code"),
                      metrics=json.loads(rec["metrics_json"]), thresholds=json.loads(rec["thresholds_json"]),
                      flags=rec.get("flags") or [])


class GateStage:
    """Consume the previous gate's pass topic, run one gate, forward or reject."""

    def __init__(self, gate: Gate, catalogue: Catalogue, store: LocalObjectStore, config: GateConfig):
        self.gate = gate
        self.processor_id = gate.gate_id
        self.catalogue = catalogue
        self.store = store
        self.config = config
        order = [g.letter for g in gates()]
        i = order.index(gate.letter)
        self.input = catalogue.submissions_received if i == 0 else catalogue.gate_passed(order[i - 1])
        self.passed = catalogue.gate_passed(gate.letter)
        self.outputs = (self.passed, catalogue.verification_rejected, catalogue.dead_letters)

    @property
    def id(self) -> str:
        return self.processor_id

    @property
    def inputs(self) -> tuple[TopicSpec, ...]:
        return (self.input,)

    def handle(self, record: Record) -> list[Output]:
        event = decode_in_flight(self.input, record, self.catalogue, self.processor_id)
        if isinstance(event, Output):
            return [event]
        res = contained(self.gate.gate_id, lambda: gate_on_path(self.gate, self.store.local_path(event["bundle_uri"]),
                                                                self.config),
                        internal_code="gate_internal_error")
        event["config_version"] = self.config.config_version
        if "claimed_offset_ms" in res.metrics:
            event["sync"] = {k: res.metrics.get(k) for k in ("claimed_offset_ms", "estimated_offset_ms", "sync_confidence")}
        if res.gate == "gate_a_integrity" and res.passed:
            model, _, revision = str(res.metrics.get("robot_model", "")).partition("@")
            event["robot_model_id"], event["robot_model_revision"] = model or event.get("robot_model_id"), revision or None
        return advance(self.catalogue, event, res, self.passed)


def decode_in_flight(spec: TopicSpec, record: Record, catalogue: Catalogue, processor_id: str) -> dict | Output:
    """The event of a pass/job topic with defaults filled in, or a dead letter."""
    try:
        event = spec.deserialize(record.value or b"")
    except SerializationError as exc:
        return dead_letter(catalogue, record, processor_id, exc.reason_code, str(exc))
    event.setdefault("gate_results", [])
    event.setdefault("sync", None)
    event.setdefault("config_version", None)
    event.setdefault("robot_model_revision", None)
    event.pop("schema_version", None)
    return event


def advance(catalogue: Catalogue, event: dict, res: GateResult, pass_topic: TopicSpec) -> list[Output]:
    """Append ``res`` (one result per stage id, replays included) and route the event."""
    event["gate_results"] = [r for r in event["gate_results"] if r["gate"] != res.gate]
    event["gate_results"].append(_result_record(res))
    if res.passed:
        return [Output(pass_topic, event)]
    rejected = dict(event, failed_gate=res.gate, reason_code=res.reason_code or "rejected", rejected_at=now_ms())
    return [Output(catalogue.verification_rejected, rejected)]


def evidence_route(catalogue: Catalogue, evidence_jobs: tuple[str, ...]) -> dict[str, TopicSpec]:
    """Where each step of the evidence plan forwards: ``{"dispatch": jobs.<first>, <kind>:
    jobs.<next kind> | evidence.completed}``. Every process derives it from the same settings."""
    topics = [catalogue.job(kind) for kind in evidence_jobs] + [catalogue.evidence_completed]
    route = {"dispatch": topics[0]}
    for kind, nxt in zip(evidence_jobs, topics[1:]):
        route[kind] = nxt
    return route


class DispatchStage:
    """After gate E: send the submission to the first evidence job (or straight to
    ``evidence.completed`` when no evidence job is configured)."""

    processor_id = "evidence_dispatch"

    def __init__(self, catalogue: Catalogue, evidence_jobs: tuple[str, ...]):
        self.catalogue = catalogue
        self.input = catalogue.gate_passed(gates()[-1].letter)
        self.next = evidence_route(catalogue, evidence_jobs)["dispatch"]
        self.outputs = (self.next, catalogue.dead_letters)
        self.id = self.processor_id
        self.inputs = (self.input,)

    def handle(self, record: Record) -> list[Output]:
        event = decode_in_flight(self.input, record, self.catalogue, self.processor_id)
        if isinstance(event, Output):
            return [event]
        return [Output(self.next, event)]


class JobStage:
    """One evidence job (pose / IK / playback): ``handler(view, event) -> GateResult``.

    Runs inside a GPU consumer's Ray actor, which keeps ``handler`` (and its model or
    scene) warm. A hard failure rejects, like a gate; anything else forwards."""

    def __init__(self, kind: str, handler, catalogue: Catalogue, store: LocalObjectStore,
                 evidence_jobs: tuple[str, ...], limits=None):
        self.kind = kind
        self.processor_id = f"job_{kind}"
        self.handler = handler
        self.catalogue = catalogue
        self.store = store
        self.limits = limits
        self.input = catalogue.job(kind)
        self.next = evidence_route(catalogue, evidence_jobs)[kind]
        self.outputs = (self.next, catalogue.verification_rejected, catalogue.dead_letters)
        self.id = self.processor_id
        self.inputs = (self.input,)

    def handle(self, record: Record) -> list[Output]:
        from kibotos.bundle import open_bundle

        event = decode_in_flight(self.input, record, self.catalogue, self.processor_id)
        if isinstance(event, Output):
            return [event]

        def run() -> GateResult:
            with open_bundle(self.store.local_path(event["bundle_uri"]), self.limits) as view:
                return self.handler(view, event)

        # a model crash on hostile input must not kill the consumer; a ServiceError (the
        # validator's fault: renderer, model, store) is raised for a retry, never the miner's
        res = contained(self.processor_id, run, internal_code="job_internal_error")
        return advance(self.catalogue, event, res, self.next)


class NoveltyStage:
    """Novelty and duplication against the ClickHouse index (``kibotos.novelty``):
    ``evidence.completed`` → ``novelty.completed``, or rejected for a same-miner duplicate.

    Runs where a ClickHouse client is (``streams.stage_consumer``): in the embedded stack,
    the process that owns chdb; in production any number of processes with the DSN."""

    processor_id = "novelty"

    def __init__(self, catalogue: Catalogue, store: LocalObjectStore, checker, limits=None):
        self.catalogue = catalogue
        self.store = store
        self.checker = checker
        self.limits = limits
        self.input = catalogue.evidence_completed
        self.next = catalogue.novelty_completed
        self.outputs = (self.next, catalogue.verification_rejected, catalogue.dead_letters)
        self.id = self.processor_id
        self.inputs = (self.input,)

    def handle(self, record: Record) -> list[Output]:
        from kibotos.bundle import open_bundle

        event = decode_in_flight(self.input, record, self.catalogue, self.processor_id)
        if isinstance(event, Output):
            return [event]

        def run() -> GateResult:
            with open_bundle(self.store.local_path(event["bundle_uri"]), self.limits) as view:
                # the index is compared in the order of first checks (two racing copies
                # never both pass as new); between miners the upload time says which is
                # the original (kibotos.novelty.checker)
                return self.checker.check(view, event["submission_id"], event["miner_id"], now_ms(),
                                          received_at_ms=_epoch_ms(event.get("received_at")),
                                          event_payload=record.value)

        res = contained("novelty", run, internal_code=None)
        outputs = advance(self.catalogue, event, res, self.next)
        return outputs + self._revise_later_copy(event, res)

    def _revise_later_copy(self, event: dict, res: GateResult) -> list[Output]:
        """This submission is the original of another miner's copy that was checked (and
        maybe paid) first: send the copy on again with its revised novelty result, so the
        decision publishes a ``revised`` verdict and a compensating ledger entry. The same
        outputs on a redelivery (the revision is stored once)."""
        later = res.metrics.get("cross_miner_later_match")
        revise = getattr(self.checker, "revise_later_copy", None)
        if not isinstance(later, dict) or revise is None or not float(later.get("match") or 0.0) > 0:
            return []
        revised = revise(event["submission_id"], event["miner_id"], later, now_ms())
        if revised is None:
            return []
        result, payload = revised
        copy_event = decode_in_flight(self.input, Record(self.input.name, payload), self.catalogue, self.processor_id)
        if isinstance(copy_event, Output):  # a stored event this code can no longer read
            return [copy_event]
        return advance(self.catalogue, copy_event, result, self.next)


class DecisionStage:
    """Turn the end of the chain into a verdict, a score and a ledger entry.

    Consumes the last accepted topic (``novelty.completed`` when the novelty stage runs,
    else ``evidence.completed``: every gate and evidence job passed) and
    ``verification.rejected``. An accepted submission is scored (``kibotos.scoring``:
    soft components from the evidence results, S, the reward curve, the copy factor) and
    earns ``reward`` points in one ledger entry whose id is derived from the submission,
    so a redelivered record never pays twice. A rejected one earns nothing.

    A novelty result carrying ``metrics["revision"]`` (a copy revised once its original
    was checked, ``NoveltyStage``) is judged twice from the same event: as it was paid
    (the previous novelty values) and as revised. The outputs are a ``revised`` verdict
    (``event_type``, ``revision``), the reward entry as paid (the same id and points as the
    first decision's) and a compensating ``clawback`` entry of the difference, with ids
    derived from the submission and the revision number: replays never double them, and
    a balance is the sum of its entries.
    """

    processor_id = "decision"

    def __init__(self, catalogue: Catalogue, scoring=None, accepted_input: TopicSpec | None = None):
        from kibotos.scoring import load_scoring_config

        self.catalogue = catalogue
        self.scoring = scoring or load_scoring_config()
        self.accepted_input = accepted_input or catalogue.evidence_completed
        self.rejected_input = catalogue.verification_rejected
        self.outputs = (catalogue.verdicts, catalogue.ledger_entries, catalogue.dead_letters)
        self.id = self.processor_id
        self.inputs = (self.accepted_input, self.rejected_input)

    def _judge(self, event: dict, results: list[GateResult]):
        from kibotos.scoring import score_submission

        common = dict(miner_id=event["miner_id"], robot_model_id=event.get("robot_model_id"),
                      robot_model_revision=event.get("robot_model_revision"))
        config_version = event.get("config_version") or "unknown"
        report = build_report(event["submission_id"], results, config_version, **common)
        breakdown = None
        if report.verdict == "accepted":
            evidence = {r.gate: r for r in results}
            breakdown = score_submission(evidence, self.scoring, passed=True,
                                         angle_quality_sum=_angle_quality_sum(results))
            report = build_report(event["submission_id"], results, config_version, **common,
                                  points=breakdown.reward, scores=breakdown.model_dump(mode="json"))
        return report, breakdown

    def handle(self, record: Record) -> list[Output]:
        spec = self.accepted_input if record.topic == self.accepted_input.name else self.rejected_input
        try:
            event = spec.deserialize(record.value or b"")
            results = [_gate_result(r) for r in event["gate_results"]]
            revision = _revision(results)
        except (SerializationError, KeyError, ValueError, TypeError) as exc:
            code = exc.reason_code if isinstance(exc, KibotosError) else "invalid_event"
            return [dead_letter(self.catalogue, record, self.processor_id, code, str(exc))]
        report, breakdown = self._judge(event, results)
        decided = now_ms()
        sid = report.submission_id
        if revision is None:
            outputs = [self._verdict(event, report, decided, "decision", 0)]
            if breakdown is not None:
                outputs.append(self._ledger(event, breakdown, "reward", breakdown.reward, decided))
            return outputs
        number, previous = revision
        _, paid = self._judge(event, previous)
        outputs = [self._verdict(event, report, decided, "revised", number)]
        if paid is not None:
            outputs.append(self._ledger(event, paid, "reward", paid.reward, decided))
        delta = round((breakdown.reward if breakdown else 0.0) - (paid.reward if paid else 0.0), 6)
        if delta != 0:
            outputs.append(self._ledger(event, breakdown or paid, f"clawback:{number}", delta, decided,
                                        kind="clawback"))
        log.info("verdict revised", extra={"submission_id": sid, "revision": number, "points_delta": delta})
        return outputs

    def _verdict(self, event: dict, report, decided: int, event_type: str, revision: int) -> Output:
        return Output(self.catalogue.verdicts, {
            "submission_id": report.submission_id,
            "miner_id": event["miner_id"],
            "verdict": report.verdict,
            "reason_code": report.reason_code,
            "failed_gate": report.failed_gate,
            "config_version": report.config_version,
            "decided_at": decided,
            "points": report.points,
            "report_json": report.model_dump_json(),
            "bundle_uri": event["bundle_uri"],
            "event_id": verdict_event_id(report.submission_id, event_type, revision),
            "event_type": event_type,
            "revision": revision,
        })

    def _ledger(self, event: dict, breakdown, id_kind: str, points: float, decided: int,
                kind: str = "reward") -> Output:
        return Output(self.catalogue.ledger_entries, {
            "entry_id": ledger_entry_id(event["submission_id"], id_kind),
            "miner_id": event["miner_id"],
            "submission_id": event["submission_id"],
            "kind": kind,
            "points": points,
            "config_version": breakdown.config_version,
            "created_at": decided,
            "score": breakdown.score,
            "components_json": json.dumps([c.model_dump(mode="json") for c in breakdown.components], sort_keys=True),
            "weights_json": json.dumps(breakdown.weights_used, sort_keys=True),
        })


def verdict_event_id(submission_id: str, event_type: str = "decision", revision: int = 0) -> str:
    """Deterministic: every publication of the same decision (or revision) of a submission
    carries the same id, so a validator deduplicates redelivered verdicts by it."""
    return str(uuid.uuid5(LEDGER_NAMESPACE, f"{submission_id}:verdict:{event_type}:{revision}"))


def _revision(results: list[GateResult]) -> tuple[int, list[GateResult]] | None:
    """``(number, results as previously judged)`` when the novelty result is a revision
    (``kibotos.novelty.NoveltyChecker.revise_later_copy``), else None."""
    novelty = next((r for r in results if r.gate == "novelty"), None)
    revision = novelty.metrics.get("revision") if novelty is not None else None
    if not isinstance(revision, dict):
        return None
    prev = revision.get("previous")
    if not isinstance(prev, dict):
        raise ValueError("novelty revision without its previous values")
    metrics = {k: v for k, v in novelty.metrics.items() if k != "revision"}
    metrics.update(s_novel=prev.get("s_novel"), copy=prev.get("copy"))
    before = GateResult(gate=novelty.gate, passed=bool(prev.get("passed")), reason_code=prev.get("reason_code"),
                        metrics=metrics, thresholds=novelty.thresholds, flags=list(prev.get("flags") or []))
    return int(revision.get("number") or 1), [before if r is novelty else r for r in results]


def _angle_quality_sum(results: list[GateResult]) -> float:
    """The multi-angle quality the reward multiplier reads: the sum, over secondary
    cameras, of their quality in [0, 1] as the align job measured it
    (``gpu_consumers.alignment``, ``metrics["secondary_cameras"]``; 0 with a single camera)."""
    total = 0.0
    for res in results:
        for cam in (res.metrics.get("secondary_cameras") or {}).values() if isinstance(
                res.metrics.get("secondary_cameras"), dict) else ():
            q = cam.get("quality") if isinstance(cam, dict) else None
            if isinstance(q, (int, float)):
                total += min(max(float(q), 0.0), 1.0)
    return total


def handle_observed(stage, record: Record, catalogue: Catalogue) -> list[Output]:
    """``stage.handle(record)`` with the record's submission id on every log line and its
    Prometheus accounting (records in/out, rejections by reason, dead letters, seconds)."""
    from kibotos.logs import submission_context
    from kibotos.metrics import observe_stage

    with submission_context(record.key):
        t0 = time.perf_counter()
        outputs = stage.handle(record)
        seconds = time.perf_counter() - t0
        try:
            topic_id = catalogue.by_name(record.topic).id
        except KibotosError:
            topic_id = record.topic
        observe_stage(stage.processor_id, topic_id, outputs, seconds)
        log.info("handled", extra={"processor": stage.processor_id, "topic": topic_id, "partition": record.partition,
                                   "offset": record.offset, "outputs": [o.topic.id for o in outputs],
                                   "ms": round(seconds * 1000.0, 3)})
    return outputs


def build_stages(catalogue: Catalogue, store: LocalObjectStore, config: GateConfig, scoring=None,
                 evidence_jobs: tuple[str, ...] = (), novelty: bool = False):
    """The broker-free stages of the gate workers, in order: one per gate, the evidence
    dispatch, the decision. The evidence jobs run in ``gpu_consumers``; the novelty stage
    (``NoveltyStage``, when ``novelty``) runs where a ClickHouse client is, and the
    decision then waits for its output."""
    stages: list = [GateStage(g, catalogue, store, config) for g in gates()]
    stages.append(DispatchStage(catalogue, tuple(evidence_jobs)))
    accepted = catalogue.novelty_completed if novelty else catalogue.evidence_completed
    stages.append(DecisionStage(catalogue, scoring, accepted_input=accepted))
    return stages


def stage_inputs(stage) -> list[TopicSpec]:
    """The topics ``stage`` consumes (``Stage.inputs``; a bare ``input`` for old callers)."""
    inputs = getattr(stage, "inputs", None)
    return list(inputs) if inputs is not None else [stage.input]


def run_in_process(stages, first: list[Record], max_steps: int = 100_000) -> list[Output]:
    """Push records through the stages without a broker (tests, ``bench``): breadth-first,
    every output is routed to the stage(s) consuming its topic. Returns terminal outputs."""
    by_topic: dict[str, list] = {}
    for st in stages:
        for spec in stage_inputs(st):
            by_topic.setdefault(spec.name, []).append(st)
    queue, terminal = list(first), []
    steps = 0
    while queue and steps < max_steps:
        rec = queue.pop(0)
        steps += 1
        for st in by_topic.get(rec.topic, []):
            for out in st.handle(rec):
                nxt = Record(out.topic.name, out.value(), out.key())
                if out.topic.name in by_topic:
                    queue.append(nxt)
                else:
                    terminal.append(out)
    return terminal
