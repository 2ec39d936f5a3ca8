"""Gate E — physical plausibility (design §5.2 E; moderate). Rejects extreme implausibility
only: sensor noise is a soft matter (it lowers S_retarget), never a reason by itself until
it swamps the signal.

**Derivatives on the real timestamps.** Speed, acceleration and jerk come from a local
cubic fit over ``smoothing_window_ms`` on each window's own sample times
(``processors.derivatives``): dropped samples and timestamp jitter change nothing.

**Noise is not motion.** Each joint's white-noise level ``sigma`` is estimated robustly
(fourth-order divided differences, median absolute value). White noise on the positions
puts noise of ``sigma * gain`` on a derivative (``gain`` known for every window), so a
frame "exceeds" a bound only when some joint's ``|derivative| - noise_z * sigma * gain`` is
above the registry bound times the config factor; more than ``max_exceed_fraction`` of
frames exceeding is a rejection (reason: the first of speed, acceleration, jerk that
trips). A sustained violation of the model's limits shows above the noise; a 0.03 rad
jitter on a motion within them does not. ``*_peak_ratio`` / ``*_p95_ratio`` report the raw
derivatives, noise included.

**Noise that swamps the signal** — a joint's ``sigma`` above ``max_noise_rad`` (revolute)
or ``max_noise_span_fraction`` of its range (prismatic) — is ``joint_noise_exceeded``.

**Teleports** (``_teleports``). A single-sample jump larger than both ``teleport_min_rad``
and ``teleport_vel_factor`` x the velocity limit x the sample gap, or one that departs from
the motion on either side of it by more than ``teleport_min_rad`` and
``teleport_acc_factor`` x the acceleration limit x gap^2 (a splice), each plus ``noise_z``
x its noise; one is enough.
"""

from __future__ import annotations

import numpy as np

from kibotos.bundle.reader import JOINT_POS, TIMESTAMPS, BundleView
from kibotos.config.gates import GateConfig
from kibotos.reports.model import GateResult
from kibotos.robots import get_robot
from processors.base import register_gate, result
from processors.derivatives import joint_derivatives, joint_noise_sigma, window_samples

GATE_ID = "gate_e_plausibility"


@register_gate(GATE_ID, letter="e", order=5, title="speed, acceleration, jerk, teleports, noise")
def check(view: BundleView, config: GateConfig) -> GateResult:
    m = view.manifest
    robot = get_robot(m.robot_model_id, m.robot_model_revision)
    cfg = config.for_robot(robot.model_id, robot.revision).gate_e
    idx = np.array([robot.joint_names.index(n) for n in m.joint_names])
    vmax = robot.vel_limit[idx] * cfg.speed_factor
    amax = robot.acc_limit[idx] * cfg.acc_factor
    jmax = robot.jerk_limit[idx] * cfg.jerk_factor
    prismatic = np.array([robot.joint_types[i] == "prismatic" for i in idx])
    span = robot.pos_upper[idx] - robot.pos_lower[idx]
    ts = view.read(TIMESTAMPS).astype(np.int64)
    q = view.read(JOINT_POS).astype(np.float64)
    dt_ms = float(np.median(np.diff(ts)))
    window = window_samples(cfg.smoothing_window_ms, dt_ms)
    thresholds = cfg.model_dump() | {"window_samples": window}

    sigma = joint_noise_sigma(view, ts, q)
    noise_ratio = sigma / np.where(prismatic, cfg.max_noise_span_fraction * span, cfg.max_noise_rad)
    noisiest = int(np.argmax(noise_ratio))
    metrics: dict = {"noise_max": round(float(sigma[noisiest]), 5), "noise_joint": m.joint_names[noisiest],
                     "noise_ratio": round(float(noise_ratio[noisiest]), 4),
                     "noise_median_rad": round(float(np.median(sigma[~prismatic])), 5) if (~prismatic).any() else 0.0}
    if noise_ratio[noisiest] > 1.0:
        return result(GATE_ID, False, metrics, thresholds, "joint_noise_exceeded")

    teleport, jump, step = _teleports(ts, q, sigma, vmax, amax, cfg)
    metrics |= {"teleports": int(teleport.any(axis=1).sum()), "max_step": round(float(step.max()), 4),
                "max_jump_residual": round(float(jump.max()), 4) if jump.size else 0.0}
    if metrics["teleports"]:
        frame, joint = np.argwhere(teleport)[0]
        metrics |= {"first_teleport_frame": int(frame) + 1, "first_teleport_joint": m.joint_names[joint]}
        return result(GATE_ID, False, metrics, thresholds, "teleport_detected")

    d = joint_derivatives(view, ts, q, window)
    if d.vel.shape[0] == 0:
        return result(GATE_ID, False, metrics | {"window_samples": window}, thresholds, "too_few_samples")
    checks = (("speed", 1, vmax), ("acceleration", 2, amax), ("jerk", 3, jmax))
    reason = None
    # per frame, each check's largest ratio and noise allowance: the percentiles of all
    # three in one call each (column by column, as three calls would give them)
    peak = np.empty((d.vel.shape[0], len(checks)))
    allowance = np.empty_like(peak)
    fractions = []
    for k, (_, order, bound) in enumerate(checks):
        ratio = np.abs(d.of(order)) / bound
        ratio.max(axis=1, out=peak[:, k])
        noise = _noise_allowance(d, order, cfg.noise_z * sigma[None, :], bound)  # (N, J) in bound units
        noise.max(axis=1, out=allowance[:, k])
        if cfg.noise_z >= 0 and bool(np.all(bound > 0)) and float(peak[:, k].max()) <= 1.0:
            fractions.append(0.0)  # an allowance is never negative: no ratio less it exceeds 1
        else:
            fractions.append(float((ratio - noise > 1.0).any(axis=1).mean()))
    p95, p50 = np.percentile(peak, 95, axis=0), np.median(allowance, axis=0)
    for k, (name, _, _) in enumerate(checks):
        metrics[f"{name}_exceed_fraction"] = round(fractions[k], 4)
        metrics[f"{name}_peak_ratio"] = round(float(peak[:, k].max()), 3)
        metrics[f"{name}_p95_ratio"] = round(float(p95[k]), 3)
        metrics[f"{name}_noise_allowance_p50"] = round(float(p50[k]), 3)
        if reason is None and fractions[k] > cfg.max_exceed_fraction:
            reason = f"{name}_exceeded"
    if reason:
        return result(GATE_ID, False, metrics, thresholds, reason)
    return result(GATE_ID, True, metrics, thresholds)


def _noise_allowance(d, order: int, z_sigma: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """(N, J) ``z_sigma * gain / bound`` of derivative ``order``, each row as computed on
    its own: the rows fitted with the typical window share one gain, so their row is
    computed once and repeated (a read-only broadcast when every row is typical)."""
    gain = d.gain[:, order, None]
    if d.irregular is None or d.vel.shape[0] == 0:
        return z_sigma * gain / bound
    n = d.vel.shape[0]
    typical = np.ones(n, dtype=bool)
    typical[d.irregular] = False
    first = np.flatnonzero(typical)[:1]
    if first.size == 0:
        return z_sigma * gain / bound
    row = z_sigma * gain[first] / bound  # (1, J)
    if d.irregular.size == 0:
        return np.broadcast_to(row, (n, row.shape[1]))
    noise = np.empty((n, row.shape[1]))
    noise[:] = row
    noise[d.irregular] = z_sigma * gain[d.irregular] / bound
    return noise


def _teleports(ts: np.ndarray, q: np.ndarray, sigma: np.ndarray, vmax: np.ndarray, amax: np.ndarray,
               cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(teleport, |jump|, |step|)``: (T-1, J) steps judged teleports, each step's
    departure from the motion on either side of it (its residual against the mean speed of
    the neighbouring steps; 0 at the ends), and each step's size.

    A step is a teleport when it is larger than ``teleport_min_rad`` and than
    ``teleport_vel_factor`` x the velocity limit x its gap — faster than the joint can move —
    or when its residual is larger than ``teleport_min_rad`` and than
    ``teleport_acc_factor`` x the acceleration limit x gap^2 — a change of speed no
    acceleration within reach explains (a splice of two recordings on a joint whose velocity
    limit allows the jump). Both take ``noise_z`` x the noise of the quantity on top
    (``sqrt(2) sigma`` for a step, ``sqrt(5) sigma`` for a residual). A residual counts once,
    at its peak (a jump leaves half of itself on each neighbour)."""
    step = np.diff(q, axis=0)  # (T-1, J)
    size = np.abs(step)
    gap = np.diff(ts).astype(np.float64)[:, None] / 1000.0
    z = cfg.noise_z * sigma[None, :]
    jump = np.zeros_like(step)
    if step.shape[0] >= 3:
        speed = step / gap
        jump[1:-1] = step[1:-1] - gap[1:-1] * 0.5 * (speed[:-2] + speed[2:])
    a = np.abs(jump)
    # both tests need the step (residual) above teleport_min_rad plus its noise: when no
    # joint's largest one is (NaN is not), no step is a teleport
    min_step = cfg.teleport_min_rad + np.sqrt(2.0) * z
    min_jump = cfg.teleport_min_rad + np.sqrt(5.0) * z
    if step.size and bool(np.all(size.max(axis=0) <= min_step[0])) and bool(np.all(a.max(axis=0) <= min_jump[0])):
        return np.zeros(step.shape, dtype=bool), a, size
    by_speed = (size > min_step) & (size > cfg.teleport_vel_factor * vmax * gap + np.sqrt(2.0) * z)
    peak = np.ones_like(a, dtype=bool)
    peak[1:] &= a[1:] >= a[:-1]
    peak[:-1] &= a[:-1] >= a[1:]
    by_acc = peak & (a > min_jump) & (a > cfg.teleport_acc_factor * amax * gap**2 + np.sqrt(5.0) * z)
    return by_speed | by_acc, a, size
