"""Final score, reward curve and reward (design §7.2–7.4).

* ``final_score``: ``S = Σ w_i S_i`` after the missing-evidence policy — a missing
  component is scored ``missing.neutral_value`` ("neutral") or dropped with its weight
  shared out over the present ones in proportion ("renormalize"; with nothing present
  S is the neutral value).
* ``curve``: ``f(S) = 0`` below ``floor``, linear 0 → 1 from ``floor`` to ``knee``,
  ``1 + bonus (S - knee)`` above.
* ``reward``: ``R = r_base I(pass) + r_scale f(S)``, then
  ``R *= 1 + k min(angle_quality_sum, max_angle_quality_sum)`` for secondary cameras
  (mono: ``angle_quality_sum = 0``, no penalty). A submission that failed a hard gate
  earns 0 unless ``rejected_earns_quality_reward`` (the formula as written).
* ``copy_factor``: ``R *= 1 - (1 - copy_min_factor) ramp(copy_match)``, ``copy_match``
  the novelty stage's best match with an earlier upload (``metrics["copy"]["match"]``):
  1 for new data, ``copy_min_factor`` for a near-duplicate, whatever ``S`` is. ``S_novel``
  alone (weight 0.1 in ``S``) cannot make a copy unprofitable; this multiplier does.
* ``score_submission``: all of it as a ``ScoreBreakdown`` for reports and ledger entries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from kibotos.errors import KibotosError
from kibotos.reports.model import GateResult
from kibotos.scoring.components import Component, compute_components
from kibotos.scoring.config import COMPONENTS, ScoringConfig


class ScoringError(KibotosError):
    reason_code = "scoring_invalid_input"


class ScoreBreakdown(BaseModel):
    """What a report and a ledger entry record about one submission's score."""

    model_config = ConfigDict(frozen=True)

    config_version: str
    components: list[Component]
    weights_used: dict[str, float]  # after the missing policy: dropped components absent
    values_used: dict[str, float]  # the value each weighted component contributed
    score: float  # S
    curve: float  # f(S)
    passed_hard_gates: bool
    angle_quality_sum: float
    angle_multiplier: float
    reward: float
    copy_match: float | None = None  # novelty's best match with an earlier upload (None: none)
    copy_factor: float = 1.0


def _unit_score(s: float) -> float:
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not -1e-9 <= s <= 1 + 1e-9:
        raise ScoringError(f"score must be a finite number in [0, 1], got {s!r}")
    return min(1.0, max(0.0, float(s)))


def curve(s: float, cfg: ScoringConfig) -> float:
    """The reward shaping ``f(S)`` (see the module docstring)."""
    s = _unit_score(s)
    r = cfg.reward
    if s < r.floor:
        return 0.0
    if s <= r.knee:
        return (s - r.floor) / (r.knee - r.floor)
    return 1.0 + r.bonus * (s - r.knee)


def final_score(components: list[Component], cfg: ScoringConfig) -> tuple[float, dict[str, float], dict[str, float]]:
    """``(S, weights_used, values_used)`` over ``components`` (one per ``COMPONENTS`` name)."""
    names = [c.name for c in components]
    if sorted(names) != sorted(COMPONENTS):
        raise ScoringError(f"expected one component each of {list(COMPONENTS)}, got {names}")
    weights, values = {}, {}
    for c in components:
        if not c.missing:
            if c.value is None:
                raise ScoringError(f"component {c.name} is present but has no value")
            weights[c.name], values[c.name] = cfg.weights[c.name], c.value
        elif cfg.missing.policy[c.name] == "neutral":
            weights[c.name], values[c.name] = cfg.weights[c.name], cfg.missing.neutral_value
    total = sum(weights.values())
    if total <= 0:
        return cfg.missing.neutral_value, {}, {}
    weights = {k: w / total for k, w in weights.items()}
    s = sum(weights[k] * values[k] for k in weights)
    return min(1.0, max(0.0, s)), weights, values


def angle_multiplier(angle_quality_sum: float, cfg: ScoringConfig) -> float:
    """``1 + k min(angle_quality_sum, max_angle_quality_sum)``; 1 for mono submissions."""
    if isinstance(angle_quality_sum, bool) or not isinstance(angle_quality_sum, (int, float)) \
            or not math.isfinite(angle_quality_sum) or angle_quality_sum < 0:
        raise ScoringError(f"angle_quality_sum must be a finite number >= 0, got {angle_quality_sum!r}")
    r = cfg.reward
    return 1.0 + r.multi_angle_k * min(float(angle_quality_sum), r.max_angle_quality_sum)


def copy_factor(copy_match: float | None, cfg: ScoringConfig) -> float:
    """``1 - (1 - copy_min_factor) ramp(copy_match)``; 1 without a match."""
    if copy_match is None:
        return 1.0
    if isinstance(copy_match, bool) or not isinstance(copy_match, (int, float)) or not math.isfinite(copy_match):
        raise ScoringError(f"copy_match must be a finite number, got {copy_match!r}")
    r = cfg.reward
    ramp = min(1.0, max(0.0, (float(copy_match) - r.copy_match_lo) / (r.copy_match_hi - r.copy_match_lo)))
    return 1.0 - (1.0 - r.copy_min_factor) * ramp


def copy_match_of(evidence: Mapping[str, GateResult]) -> float | None:
    """The novelty stage's ``copy.match`` in ``evidence`` (None: no novelty result, or no match)."""
    res = evidence.get("novelty")
    copy = res.metrics.get("copy") if res is not None else None
    value = copy.get("match") if isinstance(copy, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def reward(passed_all_hard_gates: bool, s: float, cfg: ScoringConfig, angle_quality_sum: float = 0.0,
           copy_match: float | None = None) -> float:
    """``R`` for final score ``s`` (see the module docstring)."""
    f = curve(s, cfg)
    multiplier = angle_multiplier(angle_quality_sum, cfg) * copy_factor(copy_match, cfg)
    r = cfg.reward
    if not passed_all_hard_gates and not r.rejected_earns_quality_reward:
        return 0.0
    return (r.r_base * float(bool(passed_all_hard_gates)) + r.r_scale * f) * multiplier


def score_submission(evidence: Mapping[str, GateResult], cfg: ScoringConfig, passed: bool,
                     angle_quality_sum: float = 0.0) -> ScoreBreakdown:
    """Components from ``evidence`` (gate id -> result), S, f(S), the copy factor (from the
    novelty result) and the reward."""
    multiplier = angle_multiplier(angle_quality_sum, cfg)  # refuses a bad sum first
    copy_match = copy_match_of(evidence)
    factor = copy_factor(copy_match, cfg)
    components = compute_components(evidence, cfg)
    s, weights, values = final_score(components, cfg)
    return ScoreBreakdown(
        config_version=cfg.config_version,
        components=components,
        weights_used={k: round(v, 6) for k, v in weights.items()},
        values_used={k: round(v, 6) for k, v in values.items()},
        score=round(s, 6),
        curve=round(curve(s, cfg), 6),
        passed_hard_gates=bool(passed),
        angle_quality_sum=float(angle_quality_sum),
        angle_multiplier=round(multiplier, 6),
        reward=round(reward(passed, s, cfg, angle_quality_sum, copy_match), 6),
        copy_match=None if copy_match is None else round(copy_match, 6),
        copy_factor=round(factor, 6),
    )
