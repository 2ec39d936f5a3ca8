"""Gate A — data integrity and shapes (design §5.2 A; very cheap).

Required datasets exist with the contract's dtypes; shapes match ``(T, J)`` and
``len(joint_names)``; declared units are the required ones; no NaN/Inf in any float
array; the joint stream is not frozen (flatline); ```joint_vel`` agrees with
d(joint_pos)/dt when present (both smoothed by the same Savitzky-Golay window), and is flagged as computed when absent.
"""

from __future__ import annotations

import numpy as np

from kibotos.bundle.manifest import REQUIRED_UNITS, unit_mismatches
from kibotos.bundle.reader import JOINT_POS, JOINT_VEL, TIMESTAMPS, VIDEO_ENCODED, VIDEO_FRAMES, BundleView
from kibotos.gate_config import GateConfig
from kibotos.report import GateResult
from kibotos.robots import get_robot
from processors.base import register_gate, result
from processors.signals import savgol, window_samples

GATE_ID = "gate_a_integrity"
MIN_SAMPLES = 10


@register_gate(GATE_ID, letter="a", order=1, title="integrity, shapes, units, NaN/Inf, flatline")
def check(view: BundleView, config: GateConfig) -> GateResult:
    cfg = config.gate_a
    thresholds = cfg.model_dump() | {"required_units": REQUIRED_UNITS, "min_samples": MIN_SAMPLES}
    m = view.manifest
    get_robot(m.robot_model_id, m.robot_model_revision)  # unknown model => reason code
    metrics: dict = {"robot_model": f"{m.robot_model_id}@{m.robot_model_revision}"}

    def fail(reason: str, **extra) -> GateResult:
        return result(GATE_ID, False, metrics | extra, thresholds, reason)

    bad_units = unit_mismatches(m)
    if bad_units:
        return fail("unit_mismatch", declared_units=bad_units)

    problem, found = structure_problem(view, m)
    if problem is not None:
        return fail(problem, **found)
    metrics |= found
    T = found["T"]
    if T < MIN_SAMPLES:
        return fail("too_few_samples")

    # NaN/Inf in every float array of the bundle (optional streams included)
    nonfinite = {}
    for info in view.arrays():
        if np.dtype(info.dtype).kind == "f":
            data = view.read(info.path)
            bad = int(data.size - np.count_nonzero(np.isfinite(data)))
            if bad:
                nonfinite[info.path] = bad
    if nonfinite:
        return fail("non_finite_values", non_finite=nonfinite)

    ts = view.read(TIMESTAMPS).astype(np.int64)
    q = view.read(JOINT_POS).astype(np.float64)
    step = np.abs(np.diff(q, axis=0)).max(axis=1)
    frozen = float(np.mean(step < cfg.flatline_eps))
    metrics |= {"frozen_fraction": round(frozen, 4), "duration_ms": int(ts[-1] - ts[0])}
    if frozen > cfg.flatline_max_fraction:
        return fail("flatline_stream")

    flags = []
    if not view.has(JOINT_VEL):
        flags.append("joint_vel_computed")
        metrics["joint_vel"] = "computed from joint_pos"
    else:
        dts = np.diff(ts)
        if np.all(dts > 0):  # gate B judges timestamps; only compare when usable
            # both streams through the same Savitzky-Golay window: sensor noise on
            # joint_pos, differentiated raw, would swamp the comparison at high rates
            dt_ms = float(np.median(dts))
            window = window_samples(cfg.vel_consistency_window_ms, dt_ms)
            dq = savgol(q, dt_ms / 1000.0, window, deriv=1)
            v = savgol(view.read(JOINT_VEL).astype(np.float64), dt_ms / 1000.0, window, deriv=0)
            rms_diff = float(np.sqrt(np.mean((v - dq) ** 2)))
            rms_ref = float(np.sqrt(np.mean(dq**2)))
            nrmse = rms_diff / max(rms_ref, 1e-9)
            metrics |= {"joint_vel_rms_diff": round(rms_diff, 5), "joint_vel_nrmse": round(nrmse, 4)}
            if rms_diff > cfg.vel_consistency_abs_tol and nrmse > cfg.vel_consistency_max_nrmse:
                return fail("joint_vel_inconsistent")
    return result(GATE_ID, True, metrics, thresholds, flags=flags)


def structure_problem(view: BundleView, m) -> tuple[str | None, dict]:
    """Required datasets, dtypes and shapes, from array metadata alone (no data is read).

    Shared with the ingestion pre-checks (``kibotos.ingest.checks``). Returns
    ``(reason_code, details)`` for the first problem, else ``(None, {"T": T, "J": J})``.
    """
    missing = [p for p in (TIMESTAMPS, JOINT_POS) if not view.has(p)]
    if not (view.has(VIDEO_ENCODED) or view.has(VIDEO_FRAMES)):
        missing.append(f"{VIDEO_ENCODED}|{VIDEO_FRAMES}")
    if missing:
        return "missing_dataset", {"missing": missing}

    ts_info, pos_info = view.info(TIMESTAMPS), view.info(JOINT_POS)
    vel_info = view.info(JOINT_VEL) if view.has(JOINT_VEL) else None
    dtype_problems = {}
    if np.dtype(ts_info.dtype).kind not in "iu":
        dtype_problems[TIMESTAMPS] = ts_info.dtype
    for info in (pos_info, vel_info):
        if info is not None and info.dtype not in ("float32", "float64"):
            dtype_problems[info.path] = info.dtype
    if view.has(VIDEO_ENCODED) and view.info(VIDEO_ENCODED).dtype != "uint8":
        dtype_problems[VIDEO_ENCODED] = view.info(VIDEO_ENCODED).dtype
    if view.has(VIDEO_FRAMES) and view.info(VIDEO_FRAMES).dtype != "uint8":
        dtype_problems[VIDEO_FRAMES] = view.info(VIDEO_FRAMES).dtype
    if dtype_problems:
        return "wrong_dtype", {"dtypes": dtype_problems}

    J = len(m.joint_names)
    T = ts_info.shape[0] if len(ts_info.shape) == 1 else -1
    shape_problems = {}
    if len(ts_info.shape) != 1:
        shape_problems[TIMESTAMPS] = list(ts_info.shape)
    if pos_info.shape != (T, J):
        shape_problems[JOINT_POS] = list(pos_info.shape)
    if vel_info is not None and vel_info.shape != (T, J):
        shape_problems[JOINT_VEL] = list(vel_info.shape)
    if view.has(VIDEO_FRAMES):
        fr = view.info(VIDEO_FRAMES)
        if len(fr.shape) != 4 or fr.shape[3] not in (1, 3) or fr.shape[0] != m.video["primary"].frame_count:
            shape_problems[VIDEO_FRAMES] = list(fr.shape)
    if len(set(m.joint_names)) != J:
        shape_problems["manifest.joint_names"] = "duplicate names"
    if shape_problems:
        return "shape_mismatch", {"T": T, "J": J, "shapes": shape_problems, "expected": {"T": T, "J": J}}
    return None, {"T": T, "J": J}
