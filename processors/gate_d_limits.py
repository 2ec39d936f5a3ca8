"""Gate D — joint limits and unit validity (design §5.2 D; moderate).

Limits come from the robot registry for ``(robot_model_id, revision)``. Joint names must
be known to that model (a subset in any order is accepted). Angles sent in degrees while
declared as radians are caught: many samples outside the limits that would fall inside
them once read as degrees, with angles beyond one full turn. Otherwise, more than 1 % of samples beyond a limit plus the
tolerance margin is a rejection.
"""

from __future__ import annotations

import numpy as np

from kibotos.bundle.reader import JOINT_POS, BundleView
from kibotos.config.gates import GateConfig
from kibotos.reports.model import GateResult
from kibotos.robots import get_robot
from processors.base import register_gate, result

GATE_ID = "gate_d_limits"


def _violations(q: np.ndarray, lower: np.ndarray, upper: np.ndarray, margin: np.ndarray) -> np.ndarray:
    return (q < lower - margin) | (q > upper + margin)


@register_gate(GATE_ID, letter="d", order=4, title="joint limits and unit validity")
def check(view: BundleView, config: GateConfig) -> GateResult:
    m = view.manifest
    robot = get_robot(m.robot_model_id, m.robot_model_revision)
    cfg = config.for_robot(robot.model_id, robot.revision).gate_d
    thresholds = cfg.model_dump()
    unknown = [n for n in m.joint_names if n not in robot.joint_names]
    if unknown:
        return result(GATE_ID, False, {"unknown_joints": unknown[:20]}, thresholds, "unknown_joint_names")
    idx = np.array([robot.joint_names.index(n) for n in m.joint_names])
    lower, upper = robot.pos_lower[idx], robot.pos_upper[idx]
    revolute = np.array([robot.joint_types[i] != "prismatic" for i in idx])
    margin = np.where(revolute, cfg.limit_margin_rad, cfg.limit_margin_m)
    q = view.read(JOINT_POS).astype(np.float64)

    bad = _violations(q, lower, upper, margin)
    frac = float(bad.any(axis=1).mean())
    excess = np.maximum(lower - margin - q, q - upper - margin).max(axis=0)
    worst = int(np.argmax(excess))
    max_abs_revolute = round(float(np.abs(q[:, revolute]).max()) if revolute.any() else 0.0, 4)
    metrics: dict[str, object] = {
        "violation_fraction": round(frac, 4),
        "worst_joint": m.joint_names[worst],
        "worst_excess": round(float(excess[worst]), 4),
        "min_margin_to_limit": round(float(np.min(np.minimum(q - lower, upper - q))), 4),
        "max_abs_revolute": max_abs_revolute,
    }
    if frac > cfg.max_violation_fraction:
        as_radians = np.where(revolute, np.deg2rad(q), q)
        frac_if_degrees = float(_violations(as_radians, lower, upper, margin).any(axis=1).mean())
        metrics["violation_fraction_if_degrees"] = round(frac_if_degrees, 4)
        # no revolute joint turns beyond one revolution either way: larger values are degrees
        if frac_if_degrees <= cfg.max_violation_fraction and max_abs_revolute > 2 * np.pi:
            return result(GATE_ID, False, metrics, thresholds, "units_degrees_suspected")
        return result(GATE_ID, False, metrics, thresholds, "joint_limit_violation")
    return result(GATE_ID, True, metrics, thresholds)
