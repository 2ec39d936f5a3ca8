"""One dataset episode: an accepted submission (or a verified XGen clip) with what a
researcher needs to trust and credit it — its quality summary and its attribution.

An episode is one JSON line in a version's ``episodes.jsonl``::

    submission_id, miner_id, source ("verdicts" | "xgen.clips"), robot_model_id,
    robot_model_revision, task_id, decided_at (epoch ms), bundle_uri (the submission
    bundle; XGen: the clip.npz), metadata_uri (XGen: metadata.json),
    reward (the points its verdict paid), score (S), components ({name: value}),
    soft_flags (reason codes of the passed gates' flags, e.g. sync_low_confidence),
    evidence_uris (keyframe images and other stored evidence of its report),
    config_version, scoring_config_version, copy_factor (< 1: a copy of an earlier upload),
    attribution_points (what publication in this dataset paid for it; set by the store),
    verdict_revision (0: the decision; n: the verdict's n-th revision, e.g. by reconciliation)

``from_verdict`` and ``from_xgen_clip`` are the two sources (``SOURCES``); anything
that is not a final accepted decision gives ``None``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

from gpu_consumers.registry import EVIDENCE_GATES

XGEN_ROBOT = "unitree_g1"  # XGen retargets to the G1 only (kibotos.xgen.g1)
TASK_GATE = EVIDENCE_GATES["task"]


@dataclass(frozen=True)
class Episode:
    submission_id: str
    miner_id: str
    source: str
    robot_model_id: str | None
    robot_model_revision: str | None
    task_id: str | None
    decided_at: int
    bundle_uri: str
    reward: float
    score: float | None
    components: dict[str, float | None] = field(default_factory=dict)
    soft_flags: tuple[str, ...] = ()
    evidence_uris: tuple[str, ...] = ()
    config_version: str | None = None
    scoring_config_version: str | None = None
    metadata_uri: str | None = None
    copy_factor: float = 1.0  # < 1: novelty found it a copy of an earlier upload (its reward was cut)
    attribution_points: float = 0.0
    verdict_revision: int = 0  # the verdict's revision number: a higher one with other quality supersedes it

    def quality(self) -> tuple:
        """What a revised verdict may change: equal tuples mean nothing to revise."""
        return (self.score, self.reward, tuple(sorted(self.components.items(), key=lambda kv: kv[0])),
                self.copy_factor, self.soft_flags, self.scoring_config_version)

    def to_line(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal episodes give equal bytes."""
        d = asdict(self)
        d["soft_flags"] = list(self.soft_flags)
        d["evidence_uris"] = list(self.evidence_uris)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_line(cls, line: str) -> "Episode":
        d = json.loads(line)
        d["soft_flags"] = tuple(d.get("soft_flags") or ())
        d["evidence_uris"] = tuple(d.get("evidence_uris") or ())
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_attribution(self, points: float) -> "Episode":
        return replace(self, attribution_points=round(float(points), 6))


def epoch_ms(value: Any) -> int:
    """Epoch ms of an Avro timestamp-millis (a datetime once decoded) or an int."""
    if hasattr(value, "timestamp"):
        return int(round(value.timestamp() * 1000))
    return int(value)


def _uris(value: Any, out: list[str]) -> None:
    """Every string stored under a key ending in ``_uri`` (evidence the report points at)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str) and k.endswith("_uri") and v:
                out.append(v)
            else:
                _uris(v, out)
    elif isinstance(value, list):
        for v in value:
            _uris(v, out)


def _components(scores: dict[str, Any]) -> dict[str, float | None]:
    comps = scores.get("components") or {}
    if isinstance(comps, list):
        comps = {c.get("name"): c for c in comps if isinstance(c, dict)}
    out = {}
    for name, c in comps.items():
        v = c.get("value") if isinstance(c, dict) else c
        out[str(name)] = None if v is None else round(float(v), 6)
    return dict(sorted(out.items()))


def summary_from_report(report: dict[str, Any]) -> dict[str, Any]:
    """The quality summary of a verification report: S, components, soft flags, evidence
    URIs, task id (from the task gate's metrics), robot."""
    gates = [g for g in report.get("gates") or [] if isinstance(g, dict)]
    scores = cast(dict[str, Any], report.get("scores") if isinstance(report.get("scores"), dict) else {})
    score = scores.get("score", scores.get("S"))
    flags = sorted({str(f) for g in gates if g.get("passed") for f in g.get("flags") or []})
    uris: list[str] = []
    _uris([g.get("metrics") or {} for g in gates], uris)
    task = next((((g.get("metrics") or {}).get("task_id")) for g in gates if g.get("gate") == TASK_GATE), None)
    return {"score": None if score is None else round(float(score), 6), "components": _components(scores),
            "soft_flags": tuple(flags), "evidence_uris": tuple(dict.fromkeys(uris)),
            "task_id": task or report.get("task_id"), "robot_model_id": report.get("robot_model_id"),
            "robot_model_revision": report.get("robot_model_revision"),
            "scoring_config_version": scores.get("config_version"),
            "copy_factor": round(float(scores.get("copy_factor", 1.0) if scores.get("copy_factor") is not None else 1.0), 6)}


def from_verdict(event: dict[str, Any]) -> Episode | None:
    """The episode of an accepted final verdict; ``None`` for a rejection or an upload
    attempt's verdict. A malformed report raises ``ValueError`` (the caller dead-letters)."""
    if event.get("verdict") != "accepted" or event.get("upload_id"):
        return None
    report = json.loads(event["report_json"])
    if not isinstance(report, dict):
        raise ValueError("report_json is not a JSON object")
    s = summary_from_report(report)
    return Episode(
        submission_id=event["submission_id"], miner_id=event["miner_id"], source="verdicts",
        robot_model_id=s["robot_model_id"], robot_model_revision=s["robot_model_revision"], task_id=s["task_id"],
        decided_at=epoch_ms(event["decided_at"]), bundle_uri=event["bundle_uri"],
        reward=round(float(event.get("points") or 0.0), 6), score=s["score"], components=s["components"],
        soft_flags=s["soft_flags"], evidence_uris=s["evidence_uris"], config_version=event.get("config_version"),
        scoring_config_version=s["scoring_config_version"], copy_factor=s["copy_factor"],
        verdict_revision=int(event.get("revision") or 0) if event.get("event_type") == "revised" else 0)


def is_retraction(event: dict[str, Any]) -> bool:
    """A revised final verdict that rejects: the submission leaves every dataset."""
    return event.get("verdict") == "rejected" and not event.get("upload_id") and \
        event.get("event_type", "decision") == "revised"


def from_xgen_clip(event: dict[str, Any]) -> Episode | None:
    """The episode of a verified XGen clip (``xgen.clips``); ``None`` when not verified."""
    if not event.get("verified"):
        return None
    try:
        quality = json.loads(event.get("quality_json") or "{}")
    except ValueError:
        quality = {}
    s = summary_from_report(quality if isinstance(quality, dict) else {})
    score = event.get("quality_score")
    return Episode(
        submission_id=event["clip_id"], miner_id=event["uploader"], source="xgen.clips",
        robot_model_id=s["robot_model_id"] or XGEN_ROBOT, robot_model_revision=s["robot_model_revision"],
        task_id=event.get("task_id"), decided_at=epoch_ms(event["created_at"]), bundle_uri=event["clip_uri"],
        reward=0.0, score=None if score is None else round(float(score), 6), components=s["components"],
        soft_flags=s["soft_flags"], evidence_uris=tuple(u for u in (event.get("preview_uri"),) if u) + s["evidence_uris"],
        config_version=event.get("config_version"), scoring_config_version=s["scoring_config_version"],
        metadata_uri=event.get("metadata_uri"))
