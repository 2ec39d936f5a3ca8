"""Soft score components: read from evidence results, explicit about missing evidence,
and moving the right way on real evidence (the IK residual stage, task completion)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gpu_consumers.ik import IKSolver, check_ik
from kibotos.bundle import open_bundle
from kibotos.config.gates import load_config
from kibotos.reports.model import GateResult
from kibotos.robots import get_robot
from kibotos.scoring import (
    COMPONENTS,
    compute_components,
    load_scoring_config,
    s_align,
    s_novel,
    s_object,
    s_pose,
    s_retarget,
    s_task,
    score_submission,
)
from kibotos.tasks import evaluate_task
from tests.fixtures.episodes import PANDA

CFG = load_scoring_config()
GATES = load_config()


def _res(gate: str, passed: bool = True, flags: tuple[str, ...] = (), reason_code: str | None = None, **metrics):
    return GateResult(gate=gate, passed=passed, metrics=metrics, flags=list(flags), reason_code=reason_code)


def test_no_evidence_at_all_makes_every_component_missing_with_a_reason():
    comps = compute_components({}, CFG)
    assert [c.name for c in comps] == list(COMPONENTS)
    for c in comps:
        assert c.missing and c.value is None and c.inputs["missing"].startswith("no ")


def test_pose_reads_gate_f_and_is_missing_when_it_did_not_apply():
    c = s_pose({"gate_f_pose": _res("gate_f_pose", applicable=True, s_pose=0.83, jitter_px_720p=2.0)}, CFG)
    assert (c.value, c.missing, c.inputs["s_pose"], c.inputs["jitter_px_720p"]) == (0.83, False, 0.83, 2.0)
    c = s_pose({"gate_f_pose": _res("gate_f_pose", applicable=False, reason="video subject is robot")}, CFG)
    assert c.missing and "video subject is robot" in c.inputs["missing"]


@pytest.mark.parametrize("fn, gate, metric", [(s_align, "alignment", "s_align"), (s_novel, "novelty", "s_novel")])
def test_align_and_novel_read_their_stage_metric(fn, gate, metric):
    assert fn({gate: _res(gate, **{metric: 0.42})}, CFG).value == 0.42
    assert fn({gate: _res(gate, **{metric: 1.7})}, CFG).value == 1.0  # clipped into [0, 1]
    for bad in (None, float("nan"), "high"):
        c = fn({gate: _res(gate, **{metric: bad})}, CFG)
        assert c.missing and metric in c.inputs["missing"]
    c = fn({}, CFG)
    assert c.missing and gate in c.inputs["missing"]


def _ik(s_ret=0.98, jerk=0.3, margin=0.2, applicable=True):
    return {"ik_residual": _res("ik_residual", applicable=applicable, s_retarget=s_ret if applicable else None,
                                reason=None if applicable else "no object grasp or task waypoints",
                                trajectory={"jerk_ratio": {"p95": jerk}, "limit_margin_fraction": {"p5": margin}})}


def test_retarget_terms_and_their_directions():
    base = s_retarget(_ik(), CFG).value
    assert 0.9 < base < 1.0
    assert s_retarget(_ik(s_ret=0.5), CFG).value < base
    assert s_retarget(_ik(jerk=1.0), CFG).value < base
    assert s_retarget(_ik(margin=0.005), CFG).value < base
    assert s_retarget(_ik(margin=-0.01), CFG).value == 0.0  # riding beyond a limit
    no_target = s_retarget(_ik(applicable=False), CFG)
    assert not no_target.missing and no_target.inputs["residual_missing"]
    assert no_target.inputs["terms"]["residual"] == CFG.components.retarget.missing_residual_value
    assert no_target.value < base


def test_task_component_cases():
    ev = lambda **kw: {"task_completion": _res("task_completion", **kw)}  # noqa: E731
    done = s_task(ev(applicable=True, checklist_fraction=1.0, phase_order_ok=True, s_task_evidence=1.0), CFG)
    assert done.value == 1.0
    unsure = s_task(ev(applicable=True, checklist_fraction=1.0, phase_order_ok=True, s_task_evidence=0.4), CFG)
    assert unsure.value == pytest.approx(0.5 + 0.4 * 0.5)  # shrunk towards neutral
    shuffled = s_task(ev(applicable=True, checklist_fraction=1.0, phase_order_ok=False, s_task_evidence=1.0), CFG)
    assert shuffled.value == pytest.approx(CFG.components.task.phase_order_penalty)
    half = s_task(ev(applicable=True, checklist_fraction=0.5, phase_order_ok=True, s_task_evidence=1.0), CFG)
    assert half.value == pytest.approx(0.5)
    failed = s_task({"task_completion": _res("task_completion", passed=False, reason_code="task_object_not_moved",
                                             applicable=True, checklist_fraction=0.2, s_task_evidence=1.0)}, CFG)
    assert failed.value == 0.0 and failed.inputs["reason_code"] == "task_object_not_moved"
    none = s_task({"task_completion": _res("task_completion", flags=("task_not_declared",), applicable=False,
                                           reason="no task declared in the manifest")}, CFG)
    assert none.missing and "no task declared" in none.inputs["missing"]
    for flag in ("task_unknown", "task_robot_mismatch"):
        dodge = s_task({"task_completion": _res("task_completion", flags=(flag,), applicable=False, reason="x")}, CFG)
        assert dodge.value == 0.0 and not dodge.missing
    blind = s_task(ev(applicable=True, checklist_fraction=None, s_task_evidence=0.0, reason="no usable object"), CFG)
    assert blind.missing and "no usable object" in blind.inputs["missing"]


def _vlm(success, confidence=0.8, status="calibrated"):
    return _res("alignment", applicable=True, s_align=0.9, vlm_task_success=success, vlm_task_confidence=confidence,
                vlm={"status": "ok", "calibration": {"status": status}})


def test_task_component_blends_the_vlm_verdict_only_when_there_is_one():
    p, neutral = CFG.components.task, CFG.missing.neutral_value
    kin = _res("task_completion", applicable=True, checklist_fraction=1.0, phase_order_ok=True, s_task_evidence=1.0)
    alone = s_task({"task_completion": kin}, CFG)
    assert alone.value == 1.0 and alone.inputs["basis"] == ["kinematic"]
    # no VLM configured: the alignment stage says so and S_task is the kinematic value
    quiet = s_task({"task_completion": kin, "alignment": _res("alignment", applicable=True, s_align=0.9,
                                                              vlm={"status": "not_configured"},
                                                              vlm_task_success=None, vlm_task_confidence=None)}, CFG)
    assert quiet.value == 1.0 and quiet.inputs["vlm"] == "not_configured" and "vlm_weight" not in quiet.inputs
    # a calibrated VLM that says the task failed pulls the score down by its weight
    doubt = s_task({"task_completion": kin, "alignment": _vlm(False)}, CFG)
    v = neutral + 0.8 * (0.0 - neutral)
    assert doubt.value == pytest.approx((1 - p.vlm_weight) * 1.0 + p.vlm_weight * v, abs=1e-6)
    assert doubt.inputs["basis"] == ["kinematic", "vlm"] and doubt.inputs["vlm_task_success"] is False
    # an uncalibrated one counts less
    weak = s_task({"task_completion": kin, "alignment": _vlm(False, status="uncalibrated")}, CFG)
    assert doubt.value < weak.value < 1.0
    assert weak.inputs["vlm_weight"] == p.vlm_uncalibrated_weight
    # "the frames do not tell" (null) is no verdict
    unsure = s_task({"task_completion": kin, "alignment": _vlm(None)}, CFG)
    assert unsure.value == 1.0 and unsure.inputs["basis"] == ["kinematic"]
    # no checklist evidence: the VLM alone decides instead of neutral
    blind = _res("task_completion", applicable=True, checklist_fraction=None, s_task_evidence=0.0, reason="no object")
    assert s_task({"task_completion": blind}, CFG).missing
    seen = s_task({"task_completion": blind, "alignment": _vlm(True)}, CFG)
    assert seen.value == pytest.approx(neutral + 0.8 * (1 - neutral)) and seen.inputs["basis"] == ["vlm"]
    # a hard task failure stays 0 whatever the VLM says; no task declared stays missing
    failed = _res("task_completion", passed=False, reason_code="task_object_not_moved", applicable=True,
                  checklist_fraction=0.2, s_task_evidence=1.0)
    assert s_task({"task_completion": failed, "alignment": _vlm(True)}, CFG).value == 0.0
    none = _res("task_completion", flags=("task_not_declared",), applicable=False, reason="no task declared")
    assert s_task({"task_completion": none, "alignment": _vlm(True)}, CFG).missing


def _object(**state):
    good = {"tracking_noise_m": 0.002, "unexplained_motion_fraction": 0.0, "hold_drift_m": 0.004,
            "max_step_speed_m_s": 0.3}
    return {"task_completion": _res("task_completion", applicable=True, object_state=good | state)}


def test_object_component_directions_and_missing_stream():
    base = s_object(_object(), CFG).value
    assert base > 0.9
    for change in ({"tracking_noise_m": 0.02}, {"unexplained_motion_fraction": 0.5}, {"hold_drift_m": 0.05},
                   {"max_step_speed_m_s": 6.0}):
        assert s_object(_object(**change), CFG).value < base - 0.05, change
    assert s_object(_object(hold_drift_m=None), CFG).inputs["hold_drift_m"] is None
    c = s_object({"task_completion": _res("task_completion", applicable=True, object_state=None,
                                          reason="no usable object evidence")}, CFG)
    assert c.missing and "no object stream" in c.inputs["missing"]


# --- on real evidence ------------------------------------------------------------------

def _tremor(ep, robot, level: float, noise_rad: float, seed: int = 1):
    """The episode with a 4 Hz tremor of ``level`` x the jerk bound and white noise added
    to its joints (the object stream untouched: the evidence stays what it was)."""
    rng = np.random.default_rng(seed)
    t = ep.timestamps_ms[:, None] / 1000.0
    w = 2 * np.pi * 4.0
    q = ep.joint_pos + level * robot.jerk_limit / w**3 * np.sin(w * t + rng.uniform(0, 2 * np.pi, robot.dof))
    q = q + rng.normal(0.0, noise_rad, q.shape)
    return replace(ep, joint_pos=q.astype(np.float32), joint_vel=None)


def test_jerk_and_noise_lower_s_retarget_on_the_real_ik_stage(samples, tmp_path):
    robot = get_robot(*PANDA)
    solver = IKSolver(robot)
    genuine = samples.episode(PANDA)
    scores = []
    for i, (level, noise) in enumerate([(0.0, 0.0), (0.5, 0.0), (1.0, 0.0), (1.0, 0.004)]):
        path = _tremor(genuine, robot, level, noise).write(tmp_path / f"tremor-{i}.zarr.zip")
        with open_bundle(path) as view:
            res = check_ik(view, GATES, solver)
        assert res.passed and res.metrics["applicable"], res.metrics
        scores.append(s_retarget({"ik_residual": res}, CFG).value)
    assert all(b < a for a, b in zip(scores, scores[1:])), scores
    assert scores[0] > 0.95 and scores[-1] < scores[0] - 0.1, scores


def test_genuine_and_task_failed_scores_from_real_evidence(samples):
    solver = IKSolver(get_robot(*PANDA))
    out = {}
    for variant in ("genuine", "task_failed"):
        with open_bundle(samples.path(PANDA, variant)) as view:
            evidence = {"ik_residual": check_ik(view, GATES, solver), "task_completion": evaluate_task(view)}
        out[variant] = score_submission(evidence, CFG, passed=all(r.passed for r in evidence.values()))
    good, bad = out["genuine"], out["task_failed"]
    values = {c.name: c.value for c in good.components}
    assert values["task"] == 1.0 and values["object"] > 0.9 and values["retarget"] > 0.95
    assert good.passed_hard_gates and good.reward > CFG.reward.r_base
    assert {c.name: c.value for c in bad.components}["task"] == 0.0
    assert not bad.passed_hard_gates and bad.reward == 0.0 and bad.score < good.score
