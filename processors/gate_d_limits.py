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


def limit_stats(q: np.ndarray, lower: np.ndarray, upper: np.ndarray, margin: np.ndarray,
                revolute: np.ndarray) -> tuple[float, np.ndarray, float, float]:
    """``(violation_fraction, excess, max_abs_revolute, min_margin)`` of (T, J) ``q``: the
    fraction of samples with some joint beyond a limit plus its margin, each joint's
    largest excess beyond its limit plus margin, the largest revolute angle and the
    smallest distance to a limit. Every one but the fraction is monotone in each sample
    (a rounded subtraction never reverses an order), so each joint's extremes give it
    exactly, and the extremes of stored float32 are those of its float64 copy; the
    fraction is counted sample by sample only when some extreme lies beyond a limit.
    Equal to ``limit_stats_direct`` (tested), which also serves a stream whose shape does
    not fit the joints (its errors are the ones reported)."""
    if q.ndim != 2 or q.shape[1] != lower.shape[0] or q.shape[0] == 0:
        return limit_stats_direct(q, lower, upper, margin, revolute)
    q_min, q_max = q.min(axis=0).astype(np.float64), q.max(axis=0).astype(np.float64)
    if np.any(q_min < lower - margin) or np.any(q_max > upper + margin) or \
            not (np.isfinite(q_min).all() and np.isfinite(q_max).all()):  # NaN hides a joint's extremes
        frac = float(_violations(q.astype(np.float64), lower, upper, margin).any(axis=1).mean())
    else:
        frac = 0.0  # no sample of any joint beyond its limit and margin
    excess = np.maximum(lower - margin - q_min, q_max - upper - margin)
    max_abs = float(np.maximum(np.abs(q_min), np.abs(q_max))[revolute].max()) if revolute.any() else 0.0
    return frac, excess, max_abs, float(np.min(np.minimum(q_min - lower, upper - q_max)))


def limit_stats_direct(q: np.ndarray, lower: np.ndarray, upper: np.ndarray, margin: np.ndarray,
                       revolute: np.ndarray) -> tuple[float, np.ndarray, float, float]:
    """``limit_stats`` sample by sample: the reference."""
    q = q.astype(np.float64)
    frac = float(_violations(q, lower, upper, margin).any(axis=1).mean())
    excess = np.maximum(lower - margin - q, q - upper - margin).max(axis=0)
    max_abs = float(np.abs(q[:, revolute]).max()) if revolute.any() else 0.0
    return frac, excess, max_abs, float(np.min(np.minimum(q - lower, upper - q)))


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
    q = view.read(JOINT_POS)
    frac, excess, max_abs, min_margin = limit_stats(q, lower, upper, margin, revolute)
    worst = int(np.argmax(excess))
    max_abs_revolute = round(max_abs, 4)
    metrics: dict[str, object] = {
        "violation_fraction": round(frac, 4),
        "worst_joint": m.joint_names[worst],
        "worst_excess": round(float(excess[worst]), 4),
        "min_margin_to_limit": round(min_margin, 4),
        "max_abs_revolute": max_abs_revolute,
    }
    if frac > cfg.max_violation_fraction:
        q = np.asarray(q, dtype=np.float64)
        as_radians = np.where(revolute, np.deg2rad(q), q)
        frac_if_degrees = float(_violations(as_radians, lower, upper, margin).any(axis=1).mean())
        metrics["violation_fraction_if_degrees"] = round(frac_if_degrees, 4)
        # no revolute joint turns beyond one revolution either way: larger values are degrees
        if frac_if_degrees <= cfg.max_violation_fraction and max_abs_revolute > 2 * np.pi:
            return result(GATE_ID, False, metrics, thresholds, "units_degrees_suspected")
        return result(GATE_ID, False, metrics, thresholds, "joint_limit_violation")
    return result(GATE_ID, True, metrics, thresholds)
