"""Reward curve, final score and missing-evidence policy, reward and multi-angle bonus:
at their boundaries, with the packaged config's numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kibotos.reports.model import GateResult
from kibotos.scoring import (
    COMPONENTS,
    Component,
    ScoringError,
    curve,
    final_score,
    load_scoring_config,
    reward,
    score_submission,
)

CFG = load_scoring_config()
BONUS = CFG.reward.bonus


def _with(**changes):
    """The packaged config with ``reward`` / ``missing`` fields replaced."""
    data = CFG.model_dump()
    for section, values in changes.items():
        data[section] |= values
    return type(CFG).model_validate(data)


def _components(missing: tuple[str, ...] = (), **values: float) -> list[Component]:
    out = []
    for name in COMPONENTS:
        if name in missing:
            out.append(Component(name=name, inputs={"missing": "test"}, missing=True))
        else:
            out.append(Component(name=name, value=values.get(name, 0.9)))
    return out


@pytest.mark.parametrize("s, expected", [
    (0.0, 0.0),
    (0.2999, 0.0),
    (0.30, 0.0),
    (0.3001, 0.0002),
    (0.55, 0.5),
    (0.7999, 0.9998),
    (0.80, 1.0),
    (0.8001, 1.0 + BONUS * 0.0001),
    (0.90, 1.0 + BONUS * 0.10),
    (1.0, 1.0 + BONUS * 0.20),
])
def test_curve_at_its_boundaries(s, expected):
    assert curve(s, CFG) == pytest.approx(expected, abs=1e-9)


def test_curve_is_continuous_and_non_decreasing():
    grid = np.linspace(0, 1, 2001)
    f = np.array([curve(float(s), CFG) for s in grid])
    assert np.all(np.diff(f) >= -1e-12)
    assert np.max(np.abs(np.diff(f))) < 0.01  # no jump at 0.30 or 0.80


def test_bonus_zero_flattens_the_top():
    flat = _with(reward={"bonus": 0.0})
    assert curve(0.95, flat) == 1.0 and curve(0.95, CFG) > 1.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, 1.5, "0.5", None, True])
def test_curve_refuses_what_is_not_a_score(bad):
    with pytest.raises(ScoringError) as info:
        curve(bad, CFG)
    assert info.value.reason_code == "scoring_invalid_input"


def test_final_score_is_the_weighted_sum():
    values = {"pose": 0.9, "retarget": 0.8, "align": 0.7, "task": 0.6, "object": 0.5, "novel": 0.4}
    s, weights, used = final_score(_components(**values), CFG)
    assert s == pytest.approx(sum(CFG.weights[k] * v for k, v in values.items()))
    assert weights == pytest.approx(CFG.weights) and used == values


def test_missing_object_stream_neutral_policy_scores_it_half():
    s, weights, used = final_score(_components(("object",), **dict.fromkeys(COMPONENTS, 1.0)), CFG)
    assert used["object"] == 0.5 and weights == pytest.approx(CFG.weights)
    assert s == pytest.approx(1.0 - 0.10 * 0.5)


def test_missing_object_stream_renormalize_policy_drops_its_weight():
    renorm = _with(missing={"policy": CFG.missing.policy | {"object": "renormalize"}})
    values = {"pose": 0.9, "retarget": 0.8, "align": 0.7, "task": 0.6, "novel": 0.4}
    s, weights, used = final_score(_components(("object",), **values), renorm)
    assert "object" not in weights and "object" not in used
    assert sum(weights.values()) == pytest.approx(1.0)
    for k in values:
        assert weights[k] == pytest.approx(CFG.weights[k] / 0.90)
    assert s == pytest.approx(sum(CFG.weights[k] * v for k, v in values.items()) / 0.90)
    # the two policies differ exactly as designed: a perfect tagless submission keeps 1.0
    perfect = _components(("object",), **dict.fromkeys(COMPONENTS, 1.0))
    assert final_score(perfect, renorm)[0] == pytest.approx(1.0)
    assert final_score(perfect, CFG)[0] == pytest.approx(0.95)


def test_renormalize_moves_a_score_across_the_knee():
    """S just below 0.80 with a neutral object reaches the bonus range once renormalized."""
    renorm = _with(missing={"policy": CFG.missing.policy | {"object": "renormalize"}})
    comps = _components(("object",), **dict.fromkeys(COMPONENTS, 0.83))
    s_neutral, s_renorm = final_score(comps, CFG)[0], final_score(comps, renorm)[0]
    assert s_neutral < 0.80 < s_renorm
    assert curve(s_neutral, CFG) < 1.0 < curve(s_renorm, CFG)


def test_everything_missing_and_renormalized_is_neutral():
    renorm = _with(missing={"policy": dict.fromkeys(COMPONENTS, "renormalize")})
    assert final_score(_components(COMPONENTS), renorm) == (0.5, {}, {})


def test_final_score_needs_one_of_each_component():
    with pytest.raises(ScoringError, match="expected one component each"):
        final_score(_components()[:-1], CFG)
    with pytest.raises(ScoringError, match="has no value"):
        final_score([*_components()[:-1], Component(name="novel", value=None)], CFG)


def test_reward_base_plus_scaled_curve():
    r = CFG.reward
    assert reward(True, 0.55, CFG) == pytest.approx(r.r_base + r.r_scale * 0.5)
    assert reward(True, 0.10, CFG) == pytest.approx(r.r_base)
    assert reward(True, 1.0, CFG) == pytest.approx(r.r_base + r.r_scale * (1 + BONUS * 0.2))


def test_a_rejected_submission_earns_nothing_unless_configured():
    assert reward(False, 0.95, CFG) == 0.0
    literal = _with(reward={"rejected_earns_quality_reward": True})
    assert reward(False, 0.55, literal) == pytest.approx(CFG.reward.r_scale * 0.5)
    assert reward(True, 0.55, literal) == pytest.approx(CFG.reward.r_base + CFG.reward.r_scale * 0.5)


def test_multi_angle_multiplier_and_no_penalty_for_mono():
    k, cap = CFG.reward.multi_angle_k, CFG.reward.max_angle_quality_sum
    mono = reward(True, 0.7, CFG)
    assert reward(True, 0.7, CFG, angle_quality_sum=0.0) == mono > 0
    assert reward(True, 0.7, CFG, angle_quality_sum=1.5) == pytest.approx(mono * (1 + k * 1.5))
    assert reward(True, 0.7, CFG, angle_quality_sum=cap) == pytest.approx(mono * (1 + k * cap))
    assert reward(True, 0.7, CFG, angle_quality_sum=cap + 10) == pytest.approx(mono * (1 + k * cap))
    assert reward(False, 0.7, CFG, angle_quality_sum=2.0) == 0.0
    for bad in (-0.1, float("nan"), "1"):
        with pytest.raises(ScoringError):
            reward(True, 0.7, CFG, angle_quality_sum=bad)


def test_score_submission_breakdown_is_complete_and_json_safe():
    evidence = {
        "ik_residual": GateResult(gate="ik_residual", passed=True, metrics={
            "applicable": True, "s_retarget": 0.98, "target_source": "object_grasp",
            "trajectory": {"jerk_ratio": {"p95": 0.3}, "limit_margin_fraction": {"p5": 0.2}}}),
        "alignment": GateResult(gate="alignment", passed=True, metrics={"s_align": 0.8}),
        "novelty": GateResult(gate="novelty", passed=True, metrics={"s_novel": 0.9}),
    }
    b = score_submission(evidence, CFG, passed=True, angle_quality_sum=1.0)
    assert b.config_version == CFG.config_version
    assert [c.name for c in b.components] == list(COMPONENTS)
    missing = {c.name: c.inputs["missing"] for c in b.components if c.missing}
    assert set(missing) == {"pose", "task", "object"}
    assert all("no " in reason for reason in missing.values())
    assert b.values_used["pose"] == 0.5 and b.values_used["align"] == 0.8
    assert b.score == pytest.approx(sum(b.weights_used[k] * b.values_used[k] for k in b.weights_used), abs=1e-5)
    assert b.curve == pytest.approx(curve(b.score, CFG), abs=1e-5)
    assert b.angle_multiplier == pytest.approx(1 + CFG.reward.multi_angle_k)
    assert b.reward == pytest.approx(reward(True, b.score, CFG, 1.0), abs=1e-4)
    again = json.loads(b.model_dump_json())
    assert again["reward"] == b.reward and math.isfinite(again["score"])


@pytest.mark.parametrize("bad", [-1.0, float("inf"), "2"])
def test_score_submission_refuses_a_bad_angle_quality_sum(bad):
    with pytest.raises(ScoringError, match="angle_quality_sum"):
        score_submission({}, CFG, passed=True, angle_quality_sum=bad)


def test_copy_factor_is_one_without_a_match_and_the_minimum_for_a_near_duplicate():
    from kibotos.scoring import copy_factor

    r = CFG.reward
    assert copy_factor(None, CFG) == 1.0 and copy_factor(0.0, CFG) == 1.0 and copy_factor(r.copy_match_lo, CFG) == 1.0
    assert copy_factor(r.copy_match_hi, CFG) == pytest.approx(r.copy_min_factor)
    assert copy_factor(1.0, CFG) == pytest.approx(r.copy_min_factor) and r.copy_min_factor <= 0.1
    ladder = [copy_factor(m, CFG) for m in np.linspace(0, 1, 41)]
    assert all(a >= b for a, b in zip(ladder, ladder[1:]))  # more similar never pays more
    mid = (r.copy_match_lo + r.copy_match_hi) / 2
    assert copy_factor(mid, CFG) == pytest.approx(1 - (1 - r.copy_min_factor) / 2)
    for bad in (float("nan"), True, "0.5"):
        with pytest.raises(ScoringError, match="copy_match"):
            copy_factor(bad, CFG)


@pytest.mark.parametrize("s_novel", [1.0, 0.5, 0.0])
def test_a_near_duplicate_earns_at_most_a_tenth_of_the_original_whatever_its_score(s_novel):
    """The copy factor multiplies R itself: S_novel (weight 0.1) alone barely moves it."""
    def evidence(novel, copy):
        return {"alignment": GateResult(gate="alignment", passed=True, metrics={"s_align": 0.95}),
                "novelty": GateResult(gate="novelty", passed=True, metrics={"s_novel": novel, "copy": copy})}

    original = score_submission(evidence(1.0, None), CFG, passed=True)
    copy = score_submission(evidence(s_novel, {"match": 1.0, "scope": "cross_miner"}), CFG, passed=True)
    assert original.copy_factor == 1.0 and original.copy_match is None
    assert copy.copy_match == 1.0 and copy.copy_factor == pytest.approx(CFG.reward.copy_min_factor)
    assert copy.reward <= 0.1 * original.reward
    # without the multiplier the same S would have paid most of the original's reward
    assert reward(True, copy.score, CFG) > 0.5 * original.reward
