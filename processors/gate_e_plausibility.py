"""Gate E — physical plausibility (design §5.2 E; moderate).

Derivatives come from a Savitzky-Golay fit over ``smoothing_window_ms`` so that sensor
noise does not masquerade as jerk. A frame "exceeds" a bound when any joint's speed,
acceleration or jerk is above the registry bound times the config factor; more than
``max_exceed_fraction`` of frames exceeding is a rejection (reason: the first of speed,
acceleration, jerk that trips). A teleport is a single-sample jump larger than both
``teleport_min_rad`` and ``teleport_vel_factor`` x the velocity limit x dt; one is enough.
"""

from __future__ import annotations

import numpy as np

from kibotos.bundle.reader import JOINT_POS, TIMESTAMPS, BundleView
from kibotos.gate_config import GateConfig
from kibotos.report import GateResult
from kibotos.robots import get_robot
from processors.base import register_gate, result
from processors.signals import savgol_derivatives, window_samples

GATE_ID = "gate_e_plausibility"


@register_gate(GATE_ID, letter="e", order=5, title="speed, acceleration, jerk, teleports")
def check(view: BundleView, config: GateConfig) -> GateResult:
    m = view.manifest
    robot = get_robot(m.robot_model_id, m.robot_model_revision)
    cfg = config.for_robot(robot.model_id, robot.revision).gate_e
    idx = np.array([robot.joint_names.index(n) for n in m.joint_names])
    vmax = robot.vel_limit[idx] * cfg.speed_factor
    amax = robot.acc_limit[idx] * cfg.acc_factor
    jmax = robot.jerk_limit[idx] * cfg.jerk_factor
    ts = view.read(TIMESTAMPS).astype(np.int64)
    q = view.read(JOINT_POS).astype(np.float64)
    dt_ms = float(np.median(np.diff(ts)))
    dt = dt_ms / 1000.0
    window = window_samples(cfg.smoothing_window_ms, dt_ms)
    thresholds = cfg.model_dump() | {"window_samples": window}

    step = np.abs(np.diff(q, axis=0))
    gap_dt = np.diff(ts).astype(np.float64)[:, None] / 1000.0
    teleport = (step > cfg.teleport_min_rad) & (step > cfg.teleport_vel_factor * vmax * gap_dt)
    metrics: dict = {"teleports": int(teleport.any(axis=1).sum()), "max_step": round(float(step.max()), 4)}
    if metrics["teleports"]:
        frame, joint = np.argwhere(teleport)[0]
        metrics |= {"first_teleport_frame": int(frame) + 1, "first_teleport_joint": m.joint_names[joint]}
        return result(GATE_ID, False, metrics, thresholds, "teleport_detected")

    vel, acc, jerk = savgol_derivatives(q, dt, window)
    if vel.shape[0] == 0:
        return result(GATE_ID, False, metrics | {"window_samples": window}, thresholds, "too_few_samples")
    checks = (("speed", vel, vmax), ("acceleration", acc, amax), ("jerk", jerk, jmax))
    reason = None
    for name, values, bound in checks:
        ratio = np.abs(values) / bound
        frac = float((ratio > 1.0).any(axis=1).mean())
        metrics[f"{name}_exceed_fraction"] = round(frac, 4)
        metrics[f"{name}_peak_ratio"] = round(float(ratio.max()), 3)
        metrics[f"{name}_p95_ratio"] = round(float(np.percentile(ratio.max(axis=1), 95)), 3)
        if reason is None and frac > cfg.max_exceed_fraction:
            reason = f"{name}_exceeded"
    if reason:
        return result(GATE_ID, False, metrics, thresholds, reason)
    return result(GATE_ID, True, metrics, thresholds)
