"""Versioned scoring parameters (``kibotos/config/scoring.yaml``, design §7): component
weights, the missing-evidence policy, the reward curve and each component's own scales."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kibotos.config.files import load_config, validate

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "config" / "scoring.yaml"
COMPONENTS = ("pose", "retarget", "align", "task", "object", "novel")
"""Soft score components in report order (design §7.1 ``S_pose`` … ``S_novel``)."""

MissingPolicy = Literal["neutral", "renormalize"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _all_components(values: dict[str, Any], what: str) -> None:
    if set(values) != set(COMPONENTS):
        raise ValueError(f"{what} must name exactly {list(COMPONENTS)}, got {sorted(values)}")


class MissingConfig(_Frozen):
    neutral_value: float = Field(ge=0, le=1)
    policy: dict[str, MissingPolicy]

    @model_validator(mode="after")
    def _complete(self) -> "MissingConfig":
        _all_components(self.policy, "missing.policy")
        return self


class RewardConfig(_Frozen):
    r_base: float = Field(ge=0)
    r_scale: float = Field(ge=0)
    floor: float = Field(ge=0, le=1)
    knee: float = Field(ge=0, le=1)
    bonus: float = Field(ge=0)
    multi_angle_k: float = Field(ge=0)
    max_angle_quality_sum: float = Field(ge=0)
    rejected_earns_quality_reward: bool
    copy_match_lo: float = Field(ge=0, le=1)
    copy_match_hi: float = Field(ge=0, le=1)
    copy_min_factor: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "RewardConfig":
        if not self.floor < self.knee:
            raise ValueError(f"reward.floor {self.floor} must be below reward.knee {self.knee}")
        if not self.copy_match_lo < self.copy_match_hi:
            raise ValueError(f"reward.copy_match_lo {self.copy_match_lo} must be below copy_match_hi {self.copy_match_hi}")
        return self


class RetargetParams(_Frozen):
    residual_weight: float = Field(ge=0)
    smoothness_weight: float = Field(ge=0)
    limit_margin_weight: float = Field(ge=0)
    jerk_ratio_scale: float = Field(gt=0)
    limit_margin_scale: float = Field(gt=0)
    missing_residual_value: float = Field(ge=0, le=1)


class TaskParams(_Frozen):
    phase_order_penalty: float = Field(ge=0, le=1)
    vlm_weight: float = Field(ge=0, le=1)
    vlm_uncalibrated_weight: float = Field(ge=0, le=1)


class ObjectParams(_Frozen):
    tracking_noise_scale_m: float = Field(gt=0)
    hold_drift_scale_m: float = Field(gt=0)
    step_speed_scale_m_s: float = Field(gt=0)


class ComponentParams(_Frozen):
    retarget: RetargetParams
    task: TaskParams
    object: ObjectParams


class ScoringConfig(_Frozen):
    config_version: str = Field(min_length=1)
    weights: dict[str, float]
    missing: MissingConfig
    reward: RewardConfig
    components: ComponentParams

    @model_validator(mode="after")
    def _weights(self) -> "ScoringConfig":
        _all_components(self.weights, "weights")
        if any(not math.isfinite(w) or w < 0 for w in self.weights.values()):
            raise ValueError(f"weights must be finite and non-negative: {self.weights}")
        if abs(sum(self.weights.values()) - 1.0) > 1e-6:
            raise ValueError(f"weights sum to {sum(self.weights.values())}, not 1")
        return self


def parse_scoring_config(raw: dict[str, Any]) -> ScoringConfig:
    return validate(ScoringConfig, raw, "scoring")


@functools.lru_cache(maxsize=8)
def load_scoring_config(path: Path | None = None) -> ScoringConfig:
    """The scoring config at ``path`` (default: the packaged ``config/scoring.yaml``)."""
    return load_config(ScoringConfig, path or DEFAULT_PATH, "scoring")
