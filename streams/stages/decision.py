"""The decision: verdicts, scores and ledger entries at the end of the chain."""

from __future__ import annotations

import json
import logging
import uuid
from functools import partial

from kibotos.errors import SerializationError
from kibotos.reports.model import GateResult
from processors.chain import build_report
from streams.in_flight import InFlight, InvalidEvent
from streams.stage import Output, Record, dead_letter, now_ms
from topics.catalogue import Catalogue, TopicSpec

log = logging.getLogger("kibotos.streams")
LEDGER_NAMESPACE = uuid.UUID("6f1d3c52-7a0e-4b8e-9a57-0c1f9d8e2b41")


def ledger_entry_id(submission_id: str, kind: str) -> str:
    """Deterministic: the same submission and kind always give the same entry id."""
    return str(uuid.uuid5(LEDGER_NAMESPACE, f"{submission_id}:{kind}"))


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

    id = processor_id = "decision"

    def __init__(self, catalogue: Catalogue, scoring=None, accepted_input: TopicSpec | None = None):
        from kibotos.scoring import load_scoring_config

        self.catalogue = catalogue
        self.scoring = scoring or load_scoring_config()
        self.accepted_input = accepted_input or catalogue.evidence_completed
        self.rejected_input = catalogue.verification_rejected
        self.inputs = (self.accepted_input, self.rejected_input)
        self.outputs = (catalogue.verdicts, catalogue.ledger_entries, catalogue.dead_letters)

    def _judge(self, event: InFlight, results: list[GateResult]):
        from kibotos.scoring import score_submission

        config_version = event.config_version or "unknown"
        report = partial(build_report, event.submission_id, results, config_version, miner_id=event.miner_id,
                         robot_model_id=event.robot_model_id, robot_model_revision=event.robot_model_revision)
        verdict = report()
        breakdown = None
        if verdict.verdict == "accepted":
            evidence = {r.gate: r for r in results}
            breakdown = score_submission(evidence, self.scoring, passed=True,
                                         angle_quality_sum=_angle_quality_sum(results))
            verdict = report(points=breakdown.reward, scores=breakdown.model_dump(mode="json"))
        return verdict, breakdown

    def handle(self, record: Record) -> list[Output]:
        spec = self.accepted_input if record.topic == self.accepted_input.name else self.rejected_input
        try:
            event = InFlight.decode(spec, record.value)
            results = event.results()
            revision = _revision(results)
        except (SerializationError, InvalidEvent) as exc:
            return [dead_letter(self.catalogue, record, self.id, exc.reason_code, str(exc))]
        except (KeyError, ValueError, TypeError) as exc:  # a revision this code cannot read
            return [dead_letter(self.catalogue, record, self.id, InvalidEvent.code, str(exc))]
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

    def _verdict(self, event: InFlight, report, decided: int, event_type: str, revision: int) -> Output:
        return Output(self.catalogue.verdicts, {
            "submission_id": report.submission_id,
            "miner_id": event.miner_id,
            "verdict": report.verdict,
            "reason_code": report.reason_code,
            "failed_gate": report.failed_gate,
            "config_version": report.config_version,
            "decided_at": decided,
            "points": report.points,
            "report_json": report.model_dump_json(),
            "bundle_uri": event.bundle_uri,
            "event_id": verdict_event_id(report.submission_id, event_type, revision),
            "event_type": event_type,
            "revision": revision,
        })

    def _ledger(self, event: InFlight, breakdown, id_kind: str, points: float, decided: int,
                kind: str = "reward") -> Output:
        return Output(self.catalogue.ledger_entries, {
            "entry_id": ledger_entry_id(event.submission_id, id_kind),
            "miner_id": event.miner_id,
            "submission_id": event.submission_id,
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
    # a malformed revision raises InvalidEvent: the record becomes a dead letter
    """``(number, results as previously judged)`` when the novelty result is a revision
    (``kibotos.novelty.NoveltyChecker.revise_later_copy``), else None."""
    novelty = next((r for r in results if r.gate == "novelty"), None)
    revision = novelty.metrics.get("revision") if novelty is not None else None
    if novelty is None or not isinstance(revision, dict):
        return None
    prev = revision.get("previous")
    if not isinstance(prev, dict):
        raise InvalidEvent("novelty revision without its previous values")
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
