"""Soft score components (design §7.1), each in [0, 1], read from evidence results.

``evidence`` maps a gate or stage id to its ``GateResult``. Each function returns a
``Component``: its ``value`` (None when ``missing``), the ``inputs`` it was computed from
(metric values, and a ``missing`` reason naming the absent evidence — never a silent
default), and whether it is missing. What to do with a missing component is the scoring
config's policy (``kibotos.scoring.reward.final_score``).

=============  ====================  ===============================================
component      evidence (gate id)    metrics read
=============  ====================  ===============================================
``pose``       ``gate_f_pose``       ``s_pose`` (confidence, reprojection, jitter; its
                                     calibration is gate F's), ``applicable``
``retarget``   ``ik_residual``       ``s_retarget`` (residual confidence),
                                     ``trajectory.jerk_ratio.p95``,
                                     ``trajectory.limit_margin_fraction.p5``
``align``      ``alignment``         ``s_align``
``task``       ``task_completion``   ``checklist_fraction``, ``phase_order_ok``,
                                     ``s_task_evidence``
``object``     ``task_completion``   ``object_state.{tracking_noise_m,
                                     unexplained_motion_fraction, hold_drift_m,
                                     max_step_speed_m_s}``
``novel``      ``novelty``           ``s_novel``
=============  ====================  ===============================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gpu_consumers.registry import EVIDENCE_GATES
from kibotos.reports.model import GateResult
from kibotos.scoring.config import COMPONENTS, ScoringConfig

POSE_GATE = EVIDENCE_GATES["pose"]
IK_GATE = EVIDENCE_GATES["ik"]
ALIGN_GATE = EVIDENCE_GATES["align"]
TASK_GATE = EVIDENCE_GATES["task"]
NOVELTY_GATE = "novelty"

Evidence = Mapping[str, GateResult]


class Component(BaseModel):
    """One soft score component: ``value`` in [0, 1], or None when ``missing``."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: float | None = Field(default=None, ge=0, le=1)
    inputs: dict[str, Any] = Field(default_factory=dict)
    missing: bool = False


def _missing(name: str, reason: str, **inputs: Any) -> Component:
    return Component(name=name, value=None, inputs={"missing": reason, **inputs}, missing=True)


def _dict(x: Any) -> dict:
    """``x`` when it is a dict, else an empty one (a missing or malformed section)."""
    return x if isinstance(x, dict) else {}


def _number(x: Any) -> float | None:
    """A finite float, or None (absent, null, NaN or not a number)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _unit(x: float) -> float:
    return round(min(1.0, max(0.0, x)), 6)


def _inverse_square(x: float, scale: float) -> float:
    return 1.0 / (1.0 + (x / scale) ** 2)


def _weighted_geometric_mean(terms: dict[str, tuple[float, float]]) -> float:
    """``terms[name] = (value, weight)``; zero-weight terms are left out."""
    used = {k: (v, w) for k, (v, w) in terms.items() if w > 0}
    total = sum(w for _, w in used.values())
    if total <= 0:
        return 0.0
    if any(v <= 0 for v, _ in used.values()):
        return 0.0
    return math.exp(sum(w * math.log(v) for v, w in used.values()) / total)


def _single_metric(name: str, gate: str, metric: str, evidence: Evidence) -> Component:
    res = evidence.get(gate)
    if res is None:
        return _missing(name, f"no {gate} result")
    value = _number(res.metrics.get(metric))
    if value is None:
        return _missing(name, f"{gate} reports no {metric}", **{metric: res.metrics.get(metric)})
    return Component(name=name, value=_unit(value), inputs={metric: value, "gate_passed": res.passed})


def s_pose(evidence: Evidence, cfg: ScoringConfig) -> Component:
    """S_pose: gate F's ``s_pose`` (missing when gate F did not apply, e.g. a robot video)."""
    res = evidence.get(POSE_GATE)
    if res is None:
        return _missing("pose", f"no {POSE_GATE} result")
    if res.metrics.get("applicable") is False:
        return _missing("pose", f"{POSE_GATE} not applicable: {res.metrics.get('reason', 'no reason given')}")
    comp = _single_metric("pose", POSE_GATE, "s_pose", evidence)
    if comp.missing:
        return comp
    keep = ("mean_keypoint_confidence", "mean_reprojection_px_720p", "jitter_px_720p", "confident_frame_fraction")
    return comp.model_copy(update={"inputs": comp.inputs | {k: res.metrics.get(k) for k in keep}})


def s_retarget(evidence: Evidence, cfg: ScoringConfig) -> Component:
    """S_retarget: weighted geometric mean of the IK residual confidence (the config's
    ``missing_residual_value`` when the IK stage had no independent target), smoothness
    ``1 / (1 + (jerk p95 / jerk_ratio_scale)^2)`` and margins
    ``min(1, margin p5 / limit_margin_scale)``. The jerk ratio is the IK stage's raw jerk on
    the real timestamps, sensor noise included: the joint noise gate E tolerates (up to
    0.03 rad passes it) lowers this term instead, monotonically."""
    p = cfg.components.retarget
    res = evidence.get(IK_GATE)
    if res is None:
        return _missing("retarget", f"no {IK_GATE} result")
    m = res.metrics
    traj = _dict(m.get("trajectory"))
    jerk = _number((traj.get("jerk_ratio") or {}).get("p95"))
    margin = _number((traj.get("limit_margin_fraction") or {}).get("p5"))
    residual = _number(m.get("s_retarget")) if m.get("applicable") is not False else None
    inputs: dict[str, Any] = {"s_retarget": residual, "jerk_ratio_p95": jerk, "limit_margin_fraction_p5": margin,
                              "target_source": m.get("target_source"), "ik_flags": list(res.flags)}
    if residual is None and jerk is None and margin is None:
        return _missing("retarget", f"{IK_GATE} reports no residual, smoothness or margins", **inputs)
    terms: dict[str, tuple[float, float]] = {}
    if residual is None:
        inputs["residual_missing"] = m.get("reason", "no s_retarget")
        terms["residual"] = (p.missing_residual_value, p.residual_weight)
    else:
        terms["residual"] = (_unit(residual), p.residual_weight)
    if jerk is not None:
        terms["smoothness"] = (_inverse_square(max(jerk, 0.0), p.jerk_ratio_scale), p.smoothness_weight)
    else:
        inputs["smoothness_missing"] = "no trajectory.jerk_ratio"
    if margin is not None:
        terms["limit_margin"] = (_unit(margin / p.limit_margin_scale), p.limit_margin_weight)
    else:
        inputs["limit_margin_missing"] = "no trajectory.limit_margin_fraction"
    inputs["terms"] = {k: round(v, 6) for k, (v, _) in terms.items()}
    return Component(name="retarget", value=_unit(_weighted_geometric_mean(terms)), inputs=inputs)


def s_align(evidence: Evidence, cfg: ScoringConfig) -> Component:
    """S_align: the alignment stage's ``s_align``."""
    return _single_metric("align", ALIGN_GATE, "s_align", evidence)


def _vlm_task(evidence: Evidence, cfg: ScoringConfig) -> tuple[float | None, float, dict[str, Any]]:
    """The VLM's task verdict from the alignment stage: ``(v, w, inputs)`` with
    ``v = neutral + c * (success - neutral)`` (c: the confidence the stage used) and ``w``
    its blend weight (calibrated or not); ``v`` is None when the VLM gave no verdict (not
    configured, failed, or said the frames do not tell) — never an invented answer."""
    res = evidence.get(ALIGN_GATE)
    m = res.metrics if res is not None else {}
    vlm = _dict(m.get("vlm"))
    status = vlm.get("status")
    success, c = m.get("vlm_task_success"), _number(m.get("vlm_task_confidence"))
    if not isinstance(success, bool) or c is None:
        return None, 0.0, {"vlm": status or "no alignment result"}
    p = cfg.components.task
    calibrated = (vlm.get("calibration") or {}).get("status") == "calibrated"
    w = p.vlm_weight if calibrated else p.vlm_uncalibrated_weight
    neutral = cfg.missing.neutral_value
    v = neutral + _unit(c) * ((1.0 if success else 0.0) - neutral)
    return v, w, {"vlm": status, "vlm_task_success": success, "vlm_confidence": c, "vlm_calibrated": calibrated,
                  "vlm_weight": w, "vlm_term": round(v, 6)}


def s_task(evidence: Evidence, cfg: ScoringConfig) -> Component:
    """S_task from the kinematic checklist and, when a VLM judged the task, its verdict.

    Kinematic: ``k = neutral + c * (checklist * order - neutral)`` with ``order`` 1, or
    ``phase_order_penalty`` when the phases are out of order, and ``c = s_task_evidence``.
    VLM (the alignment stage's ``vlm_task_success``, see :func:`_vlm_task`): ``S_task =
    (1 - w) * k + w * v``, or ``v`` alone when the checklist has no evidence. No task
    declared: missing (the VLM is told to answer null then). A declared task that cannot
    be judged (unknown, or not for this robot) earns 0: declaring one must not dodge it;
    neither does a hard task failure, whatever the VLM says."""
    res = evidence.get(TASK_GATE)
    if res is None:
        return _missing("task", f"no {TASK_GATE} result")
    m = res.metrics
    if m.get("applicable") is False:
        reason = m.get("reason", "not applicable")
        if {"task_unknown", "task_robot_mismatch"} & set(res.flags):
            return Component(name="task", value=0.0, inputs={"declared_but_unjudgeable": reason,
                                                             "flags": list(res.flags)})
        return _missing("task", f"{TASK_GATE} not applicable: {reason}")
    checklist = _number(m.get("checklist_fraction"))
    confidence = _number(m.get("s_task_evidence"))
    inputs = {"task": f"{m.get('task_id')} v{m.get('task_version')}", "checklist_fraction": checklist,
              "phase_order_ok": m.get("phase_order_ok"), "s_task_evidence": confidence,
              "failed_checks": m.get("failed_checks"), "gate_passed": res.passed}
    if not res.passed:  # the only hard reject: the task unambiguously failed
        return Component(name="task", value=0.0, inputs=inputs | {"reason_code": res.reason_code})
    v, w, vlm_inputs = _vlm_task(evidence, cfg)
    inputs |= vlm_inputs
    if checklist is None or confidence is None:
        if v is not None:
            return Component(name="task", value=_unit(v), inputs=inputs | {"basis": ["vlm"]})
        return _missing("task", m.get("reason", "no checklist evidence"), **inputs)
    order = 1.0 if m.get("phase_order_ok") is True else cfg.components.task.phase_order_penalty
    neutral = cfg.missing.neutral_value
    raw = checklist * order
    k = neutral + _unit(confidence) * (raw - neutral)
    value = k if v is None else (1.0 - w) * k + w * v
    return Component(name="task", value=_unit(value),
                     inputs=inputs | {"raw": round(raw, 6), "kinematic": round(k, 6),
                                      "basis": ["kinematic"] + (["vlm"] if v is not None else [])})


def s_object(evidence: Evidence, cfg: ScoringConfig) -> Component:
    """S_object: object-state consistency — geometric mean of ``1 / (1 + (x / scale)^2)``
    over tracking noise, hold drift and step speed, and ``1 - unexplained_motion_fraction``.
    Missing when no object stream was judged (the missing-stream policy applies)."""
    p = cfg.components.object
    res = evidence.get(TASK_GATE)
    if res is None:
        return _missing("object", f"no {TASK_GATE} result (object streams are judged there)")
    state = res.metrics.get("object_state")
    if not isinstance(state, dict):
        return _missing("object", "no object stream judged" + (f" ({res.metrics['reason']})"
                                                              if res.metrics.get("reason") else ""))
    noise = _number(state.get("tracking_noise_m"))
    drift = _number(state.get("hold_drift_m"))
    speed = _number(state.get("max_step_speed_m_s"))
    unexplained = _number(state.get("unexplained_motion_fraction"))
    inputs: dict[str, Any] = {"tracking_noise_m": noise, "hold_drift_m": drift, "max_step_speed_m_s": speed,
                              "unexplained_motion_fraction": unexplained}
    terms = {}
    if noise is not None:
        terms["tracking_noise"] = (_inverse_square(noise, p.tracking_noise_scale_m), 1.0)
    if drift is not None:
        terms["hold_drift"] = (_inverse_square(drift, p.hold_drift_scale_m), 1.0)
    if speed is not None:
        terms["step_speed"] = (_inverse_square(speed, p.step_speed_scale_m_s), 1.0)
    if unexplained is not None:
        terms["explained_motion"] = (_unit(1.0 - unexplained), 1.0)
    if not terms:
        return _missing("object", "object_state holds no usable fact", **inputs)
    inputs["terms"] = {k: round(v, 6) for k, (v, _) in terms.items()}
    return Component(name="object", value=_unit(_weighted_geometric_mean(terms)), inputs=inputs)


def s_novel(evidence: Evidence, cfg: ScoringConfig) -> Component:
    """S_novel: the novelty stage's ``s_novel``."""
    return _single_metric("novel", NOVELTY_GATE, "s_novel", evidence)


COMPONENT_FUNCTIONS: dict[str, Callable[[Evidence, ScoringConfig], Component]] = {
    "pose": s_pose, "retarget": s_retarget, "align": s_align, "task": s_task, "object": s_object, "novel": s_novel,
}
assert tuple(COMPONENT_FUNCTIONS) == COMPONENTS


def compute_components(evidence: Evidence, cfg: ScoringConfig) -> list[Component]:
    """Every component, in ``COMPONENTS`` order."""
    return [fn(evidence, cfg) for fn in COMPONENT_FUNCTIONS.values()]
