"""Pure conversion of decoded events into ClickHouse rows (no broker, no database).

Kept apart from the consumer loop in ``streams/sink.py`` so the mapping from events to
tables can be tested, and read, on its own. Every function returns plain dicts keyed by
column name; timestamps stay epoch milliseconds (clickhouse-connect writes an int into a
``DateTime64(3)`` column as milliseconds).
"""

from __future__ import annotations

import json
from typing import Any

from kibotos.errors import SerializationError

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "submissions": (
        "submission_id", "miner_id", "bundle_uri", "bundle_sha256", "bundle_size_bytes",
        "received_at", "robot_model_id", "task_id", "schema_version",
    ),
    "gate_results": (
        "submission_id", "miner_id", "gate", "gate_order", "passed", "reason_code", "metrics_json",
        "thresholds_json", "flags", "wall_ms", "config_version", "decided_at",
    ),
    "verification_reports": (
        "submission_id", "miner_id", "verdict", "reason_code", "failed_gate", "config_version",
        "robot_model_id", "robot_model_revision", "points", "bundle_uri", "claimed_offset_ms",
        "estimated_offset_ms", "sync_confidence", "report_json", "decided_at",
        "score", "s_pose", "s_retarget", "s_align", "s_task", "s_object", "s_novel", "reward",
        "scoring_config_version",
    ),
    "points_ledger": (
        "entry_id", "miner_id", "submission_id", "kind", "points", "config_version", "created_at",
        "score", "components_json", "weights_json",
    ),
    "upload_verdicts": (
        "submission_id", "upload_id", "miner_id", "verdict", "reason_code", "failed_gate", "config_version",
        "bundle_uri", "report_json", "decided_at",
    ),
    "dead_letters": (
        "source_topic", "source_partition", "source_offset", "processor_id", "key", "payload",
        "error_code", "error_message", "failed_at",
    ),
    # XGen (migration 0009): one row per event, columns named like the event's fields
    "xgen_requests": (
        "request_id", "uploader", "task_id", "task_version", "source_kind", "source_uri", "source_sha256",
        "source_size_bytes", "annotation_json", "upload_id", "requested_at",
    ),
    "xgen_stage_results": (
        "request_id", "uploader", "stage", "clip_index", "passed", "reason_code", "metrics_json", "artifact_uri",
        "wall_ms", "clip_count", "at",
    ),
    "xgen_clips": (
        "clip_id", "request_id", "uploader", "source_sha256", "task_id", "task_version", "clip_index",
        "variant_kind", "variant_json", "clip_uri", "metadata_uri", "preview_uri", "frames", "fps",
        "quality_score", "quality_verdict", "quality_reason_code", "quality_json", "verified", "config_version",
        "created_at",
    ),
}
# XGen topics and the table each one fills, column for field
XGEN_TABLES = {"xgen.requests": "xgen_requests", "xgen.progress": "xgen_stage_results", "xgen.clips": "xgen_clips"}


class InvalidReport(SerializationError):
    """A verdict decoded, but its ``report_json`` is not a usable report."""

    reason_code = "invalid_report"


def submission_row(event: dict[str, Any]) -> dict[str, Any]:
    return {column: event[column] for column in TABLE_COLUMNS["submissions"]}


def ledger_row(event: dict[str, Any]) -> dict[str, Any]:
    return {column: event.get(column) for column in TABLE_COLUMNS["points_ledger"]}


SCORE_COMPONENTS = ("pose", "retarget", "align", "task", "object", "novel")


def score_columns(report: dict[str, Any], points: float) -> dict[str, Any]:
    """The flattened score columns of a report. ``report["scores"]`` is the
    ``kibotos.scoring.ScoreBreakdown`` as JSON: ``{"score", "components": [{"name",
    "value", ...}], "reward", "config_version", ...}`` (``{"S", "components": {name:
    {"value"}}}`` is read too). Absent for rejected submissions and for reports decided
    before scoring existed: the columns are then NULL and ``reward`` is the points."""
    scores = report.get("scores") or {}
    comps = scores.get("components") or {}
    if isinstance(comps, list):
        comps = {c.get("name"): c for c in comps if isinstance(c, dict)}

    def comp(name: str):
        c = comps.get(name)
        v = c.get("value") if isinstance(c, dict) else c
        return None if v is None else float(v)

    score = scores.get("score", scores.get("S"))
    return {"score": None if score is None else float(score), **{f"s_{n}": comp(n) for n in SCORE_COMPONENTS},
            "reward": float(scores.get("reward", points) or 0.0),
            "scoring_config_version": scores.get("config_version")}


def dead_letter_row(event: dict[str, Any]) -> dict[str, Any]:
    return {column: event[column] for column in TABLE_COLUMNS["dead_letters"]}


def undecodable_row(
    *, topic: str, partition: int, offset: int, key: bytes | None, payload: bytes | None,
    error: Exception, processor_id: str, failed_at_ms: int,
) -> dict[str, Any]:
    """The dead-letter row for a record this processor could not decode or convert."""
    return {
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "processor_id": processor_id,
        "key": key,
        "payload": payload or b"",
        "error_code": getattr(error, "reason_code", "internal_error"),
        "error_message": str(error)[:2000],
        "failed_at": failed_at_ms,
    }


def _parse_report(event: dict[str, Any]) -> dict[str, Any]:
    try:
        report = json.loads(event["report_json"])
    except ValueError as exc:
        raise InvalidReport(f"verdict {event['submission_id']}: report_json is not JSON: {exc}") from exc
    if not isinstance(report, dict):
        raise InvalidReport(f"verdict {event['submission_id']}: report_json is not a JSON object")
    gates = report.get("gates", [])
    if not isinstance(gates, list) or not all(
        isinstance(g, dict) and isinstance(g.get("gate"), str) and isinstance(g.get("passed"), bool) for g in gates
    ):
        raise InvalidReport(f"verdict {event['submission_id']}: report gates must be objects with gate and passed")
    if not isinstance(report.get("sync") or {}, dict):
        raise InvalidReport(f"verdict {event['submission_id']}: report sync must be an object")
    return report


def _wall_ms(metrics: Any) -> float | None:
    value = metrics.get("wall_ms") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def verdict_rows(event: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A verdict → its ``verification_reports`` row and one ``gate_results`` row per gate.

    The verdict event is authoritative for the decision (verdict, reason, points, time);
    the report adds what only it carries (robot model, sync estimate, per-gate detail).

    :raises InvalidReport: ``report_json`` is not a report.
    """
    report = _parse_report(event)
    sync = report.get("sync") or {}
    report_row = {
        "submission_id": event["submission_id"],
        "miner_id": event["miner_id"],
        "verdict": event["verdict"],
        "reason_code": event["reason_code"],
        "failed_gate": event["failed_gate"],
        "config_version": event["config_version"],
        "robot_model_id": report.get("robot_model_id"),
        "robot_model_revision": report.get("robot_model_revision"),
        "points": event["points"],
        "bundle_uri": event["bundle_uri"],
        "claimed_offset_ms": sync.get("claimed_offset_ms"),
        "estimated_offset_ms": sync.get("estimated_offset_ms"),
        "sync_confidence": sync.get("sync_confidence"),
        "report_json": event["report_json"],
        "decided_at": event["decided_at"],
        **score_columns(report, event["points"]),
    }
    gate_rows = [
        {
            "submission_id": event["submission_id"],
            "miner_id": event["miner_id"],
            "gate": gate["gate"],
            "gate_order": order,
            "passed": gate["passed"],
            "reason_code": gate.get("reason_code"),
            "metrics_json": json.dumps(gate.get("metrics") or {}, sort_keys=True),
            "thresholds_json": json.dumps(gate.get("thresholds") or {}, sort_keys=True),
            "flags": [str(flag) for flag in gate.get("flags") or []],
            "wall_ms": _wall_ms(gate.get("metrics")),
            "config_version": event["config_version"],
            "decided_at": event["decided_at"],
        }
        for order, gate in enumerate(report.get("gates", []))
    ]
    return report_row, gate_rows


# A rejection by the ingest checks judges one upload attempt, not the submission (anyone
# can upload bytes under any submission_id): same value as kibotos.ingest.checks.INGEST_GATE,
# which is not imported to keep the sink free of the bundle reader.
ATTEMPT_GATE = "ingest_integrity"


def is_attempt_verdict(event: dict[str, Any]) -> bool:
    """True for a verdict on one upload attempt (never the submission's final verdict)."""
    return event.get("failed_gate") == ATTEMPT_GATE


def upload_verdict_row(event: dict[str, Any]) -> dict[str, Any]:
    """An ingest rejection → its ``upload_verdicts`` row, keyed by (submission_id, upload_id).

    Records written before verdict v2 carry no ``upload_id``; their upload id is the stem
    of the object key the ingest API stored them under (``.../<upload_id>.zarr.zip``)."""
    _parse_report(event)
    upload_id = event.get("upload_id") or event["bundle_uri"].rsplit("/", 1)[-1].split(".", 1)[0]
    return {**{column: event.get(column) for column in TABLE_COLUMNS["upload_verdicts"]}, "upload_id": upload_id}


# Datasets (migration 0010, kibotos.datasets.events): a version also updates its dataset's row
DATASET_TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "datasets": ("dataset", "spec_json", "spec_hash", "latest_version", "episodes", "content_hash", "updated_at"),
    "dataset_versions": (
        "dataset", "version", "content_hash", "parent_hash", "episodes", "added", "removed", "spec_hash",
        "rule_version", "attribution_points", "card_json", "created_at",
    ),
    "dataset_episodes": (
        "dataset", "submission_id", "miner_id", "source", "robot_model_id", "task_id", "score", "reward",
        "attribution_points", "components_json", "soft_flags", "evidence_uris", "bundle_uri", "decided_at",
        "added_in_version", "removed_in_version", "changed_in_version",
    ),
    "attributions": (
        "entry_id", "dataset", "version", "policy_id", "miner_id", "kind", "episodes", "score_sum", "share",
        "points", "rule_version", "created_at",
    ),
}
TABLE_COLUMNS.update(DATASET_TABLE_COLUMNS)
DATASET_TOPICS = {"datasets.versions": "dataset_versions", "datasets.episodes": "dataset_episodes",
                  "datasets.attributions": "attributions"}


# XMimic evaluations (migration 0011, kibotos.xmimic.evals): one row per (eval, split, clip)
TABLE_COLUMNS["policy_evals"] = (
    "eval_id", "policy_id", "dataset", "split", "clip_id", "episodes", "successes", "success_rate",
    "baseline_success_rate", "tracking_error_m", "final_height_error_m", "config_version", "created_at",
)


def dataset_rows(topic_id: str, event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    table = DATASET_TOPICS[topic_id]
    rows = [(table, {column: event.get(column) for column in TABLE_COLUMNS[table]})]
    if topic_id == "datasets.versions":
        rows.append(("datasets", {"dataset": event["dataset"], "spec_json": event["spec_json"],
                                  "spec_hash": event["spec_hash"], "latest_version": event["version"],
                                  "episodes": event["episodes"], "content_hash": event["content_hash"],
                                  "updated_at": event["created_at"]}))
    return rows


# XMimic training (migration 0011, gpu_consumers/training_jobs.py): a request is the run's
# "queued" row; every progress record carries the whole run and replaces its row (newest
# updated_at wins), adds the iteration's row, and a "done" record adds the policy.
TRAINING_TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "training_runs": (
        "run_id", "role", "task", "dataset", "dataset_versions", "teacher_policy_id", "config_version", "backend",
        "device", "num_envs", "state", "iteration", "iterations", "env_steps", "success_rate", "reward_terms_json",
        "losses_json", "checkpoint_uri", "policy_id", "reason_code", "requested_by", "updated_at",
    ),
    "training_progress": (
        "run_id", "iteration", "iterations", "state", "env_steps", "success_rate", "reward_terms_json", "losses_json",
        "at",
    ),
    "policies": (
        "policy_id", "run_id", "role", "task", "dataset_versions", "checkpoint_uri", "config_version", "iterations",
        "env_steps", "created_at",
    ),
}
TABLE_COLUMNS.update(TRAINING_TABLE_COLUMNS)
TRAINING_TOPICS = ("training.requests", "training.progress")


def training_rows(topic_id: str, event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if topic_id == "training.requests":
        return [("training_runs", {
            "run_id": event["run_id"], "role": event["role"], "task": event.get("task") or "",
            "dataset": event["dataset"], "dataset_versions": list(event.get("dataset_versions") or []),
            "teacher_policy_id": event.get("teacher_policy_id"), "config_version": event["config_version"],
            "backend": event.get("backend") or "", "device": event.get("device") or "cpu",
            "num_envs": int(event.get("num_envs") or 0), "state": "queued", "iteration": 0,
            "iterations": int(event.get("iterations") or 0), "env_steps": 0, "success_rate": None,
            "reward_terms_json": "{}", "losses_json": "{}", "checkpoint_uri": None, "policy_id": None,
            "reason_code": None, "requested_by": event["requested_by"], "updated_at": event["requested_at"]})]
    terms = json.dumps(event.get("reward_terms") or {}, sort_keys=True)
    losses = json.dumps(event.get("losses") or {}, sort_keys=True)
    run = {column: event.get(column) for column in TABLE_COLUMNS["training_runs"]
           if column not in ("reward_terms_json", "losses_json", "updated_at")}
    rows = [("training_runs", {**run, "reward_terms_json": terms, "losses_json": losses, "updated_at": event["at"]})]
    state, iteration = event["state"], event["iteration"]
    if state in ("running", "checkpointed", "done") and iteration > (event.get("resumed_from") or 0):
        rows.append(("training_progress", {
            "run_id": event["run_id"], "iteration": iteration, "iterations": event["iterations"], "state": state,
            "env_steps": event["env_steps"], "success_rate": event.get("success_rate"),
            "reward_terms_json": terms, "losses_json": losses, "at": event["at"]}))
    if state == "done" and event.get("policy_id"):
        rows.append(("policies", {
            "policy_id": event["policy_id"], "run_id": event["run_id"], "role": event["role"], "task": event["task"],
            "dataset_versions": list(event.get("dataset_versions") or []),
            "checkpoint_uri": event.get("checkpoint_uri") or "", "config_version": event["config_version"],
            "iterations": iteration, "env_steps": event["env_steps"], "created_at": event["at"]}))
    return rows


def rows_for(topic_id: str, event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``[(table, row), ...]`` for a decoded event from topic ``topic_id``."""
    if topic_id == "submissions.received":
        return [("submissions", submission_row(event))]
    if topic_id == "verdicts":
        if is_attempt_verdict(event):  # kept per attempt: never replaces or pre-empts a submission's verdict
            return [("upload_verdicts", upload_verdict_row(event))]
        report_row, gate_rows = verdict_rows(event)
        return [("verification_reports", report_row), *(("gate_results", row) for row in gate_rows)]
    if topic_id == "ledger.entries":
        return [("points_ledger", ledger_row(event))]
    if topic_id == "dead.letters":
        return [("dead_letters", dead_letter_row(event))]
    if topic_id in XGEN_TABLES:
        table = XGEN_TABLES[topic_id]
        return [(table, {column: event.get(column) for column in TABLE_COLUMNS[table]})]
    if topic_id in DATASET_TOPICS:
        return dataset_rows(topic_id, event)
    if topic_id == "policy.evals":
        return [("policy_evals", {column: event[column] for column in TABLE_COLUMNS["policy_evals"]})]
    if topic_id in TRAINING_TOPICS:
        return training_rows(topic_id, event)
    raise ValueError(f"the sink does not store topic {topic_id!r}")
