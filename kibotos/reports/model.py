"""Gate results and the verification report: the explainable output of verification."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class GateResult(BaseModel):
    """One gate's verdict: ``{gate, passed, metrics, thresholds, reason_code}``.

    ``metrics`` and ``thresholds`` are JSON-safe dicts; ``reason_code`` is ``None`` when
    the gate passed. ``metrics['wall_ms']`` is the gate's own wall time.
    """

    model_config = ConfigDict(frozen=True)

    gate: str
    passed: bool
    metrics: dict[str, Any] = Field(default_factory=dict)
    thresholds: dict[str, Any] = Field(default_factory=dict)
    reason_code: str | None = None
    flags: list[str] = Field(default_factory=list)


class SyncInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    claimed_offset_ms: float | None = None
    estimated_offset_ms: float | None = None
    sync_confidence: float | None = None


class VerificationReport(BaseModel):
    """The per-submission report stored in ClickHouse and served by ``kibotos report``."""

    submission_id: str
    miner_id: str | None = None
    verdict: Literal["accepted", "rejected"]
    reason_code: str | None = None
    failed_gate: str | None = None
    gates: list[GateResult]
    sync: SyncInfo = Field(default_factory=SyncInfo)
    config_version: str
    robot_model_id: str | None = None
    robot_model_revision: str | None = None
    points: float = 0.0
    # the score breakdown of an accepted submission (``kibotos.scoring.ScoreBreakdown``
    # as JSON: components with their inputs, weights used, S, f(S), reward); None when
    # rejected, or decided without scoring
    scores: dict[str, Any] | None = None
