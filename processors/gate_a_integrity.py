"""Gate A — data integrity and shapes (design §5.2 A; very cheap).

Required datasets exist with the contract's dtypes; shapes match ``(T, J)`` and
``len(joint_names)``; declared units are the required ones; no NaN/Inf in any float
array; the joint stream is not frozen (flatline); ``joint_vel`` agrees with
d(joint_pos)/dt when present (both through the same local fit on the real timestamps,
beyond what the streams' white noise explains: ``_vel_consistency``), and is flagged as
computed when absent.

Secondary cameras (``video/secondary_<name>``) are optional and never a reason to reject:
each one's stream is checked against its manifest entries (present, uint8, decodable, the
declared frame count within gate C's tolerance) and reported in
``metrics["secondary_videos"]``; a problem is a flag. The align job measures their quality.
"""

from __future__ import annotations

import numpy as np

from kibotos.bundle.limits import RESOURCE_LIMIT, ResourceLimitExceeded
from kibotos.bundle.limits import check as check_limit
from kibotos.bundle.manifest import REQUIRED_UNITS, unit_mismatches
from kibotos.bundle.reader import (
    JOINT_POS,
    JOINT_VEL,
    SECONDARY_PREFIX,
    TIMESTAMPS,
    VIDEO_ENCODED,
    VIDEO_FRAMES,
    BundleView,
    video_paths,
)
from kibotos.config.gates import GateConfig
from kibotos.errors import BundleError
from kibotos.media.video import check_video_dims, decode_luma, probe_video
from kibotos.reports.model import GateResult
from kibotos.robots import get_robot
from processors.base import register_gate, result
from processors.derivatives import joint_and_velocity, window_samples

GATE_ID = "gate_a_integrity"
MIN_SAMPLES = 10
MAX_SECONDARY_CAMERAS = 8  # decoded at most (a cheap gate); the others are flagged unchecked


@register_gate(GATE_ID, letter="a", order=1, title="integrity, shapes, units, NaN/Inf, flatline")
def check(view: BundleView, config: GateConfig) -> GateResult:
    cfg = config.gate_a
    thresholds = cfg.model_dump() | {"required_units": REQUIRED_UNITS, "min_samples": MIN_SAMPLES,
                                     "max_secondary_cameras": MAX_SECONDARY_CAMERAS,
                                     "secondary_frame_count_tolerance": config.gate_c.frame_count_tolerance}
    m = view.manifest
    robot = get_robot(m.robot_model_id, m.robot_model_revision)  # unknown model => reason code
    metrics: dict = {"robot_model": f"{m.robot_model_id}@{m.robot_model_revision}"}

    def fail(reason: str, **extra) -> GateResult:
        return result(GATE_ID, False, metrics | extra, thresholds, reason)

    # every later gate indexes the model by these names: refuse any it does not have here
    unknown = [n for n in m.joint_names if n not in robot.joint_names]
    if unknown:
        return fail("unknown_joint_names", unknown_joints=[ascii(n)[1:-1][:64] for n in unknown[:20]])

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
    try:
        check_limit("max_kinematic_samples", T, view.limits.max_kinematic_samples, "kinematic samples")
        metrics["primary_video"] = primary_video_budget(view, m)
        for info in view.arrays():  # metadata only: sizes, codecs, fill-value bytes
            view.check_readable(info)
    except BundleError as exc:
        return fail(exc.reason_code, error=str(exc)[:300], **getattr(exc, "metrics", {}))

    # NaN/Inf in every float array of the bundle (optional streams included)
    nonfinite = {}
    for info in view.arrays():
        if np.dtype(info.dtype).kind == "f":
            data = view.read(info.path)
            # a finite sum means every value is finite (one NaN or inf makes it NaN or inf);
            # a sum that overflows is counted value by value
            bad = 0 if np.isfinite(data.sum()) else int(data.size - np.count_nonzero(np.isfinite(data)))
            if bad:
                nonfinite[info.path] = bad
    if nonfinite:
        return fail("non_finite_values", non_finite=nonfinite)

    ts = view.read(TIMESTAMPS).astype(np.int64)
    span_s = float(ts[-1] - ts[0]) / 1000.0 if ts.size else 0.0
    limits = view.limits
    if span_s > limits.max_episode_seconds:
        return fail(RESOURCE_LIMIT, limit="max_episode_seconds", limit_value=limits.max_episode_seconds,
                    observed=round(span_s, 3))
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
            rms_diff, rms_excess, nrmse, noise_rms = _vel_consistency(ts, q, view.read(JOINT_VEL), cfg, view)
            metrics |= {"joint_vel_rms_diff": round(rms_diff, 5), "joint_vel_noise_rms": round(noise_rms, 5),
                        "joint_vel_rms_excess": round(rms_excess, 5), "joint_vel_nrmse": round(nrmse, 4)}
            if rms_excess > cfg.vel_consistency_abs_tol and nrmse > cfg.vel_consistency_max_nrmse:
                return fail("joint_vel_inconsistent")
    secondary = secondary_videos(view, m, config.gate_c.frame_count_tolerance)
    if secondary:
        metrics["secondary_videos"] = secondary
        flags += sorted({s["problem"] for s in secondary.values() if s["problem"]})
    return result(GATE_ID, True, metrics, thresholds, flags=flags)


def primary_video_budget(view: BundleView, m) -> dict:
    """The primary video's declared size against the video budgets, before gate C decodes
    it: an encoded stream's container is probed (nothing decoded), raw frames are sized
    from their array shape and the manifest's fps. Raises ``ResourceLimitExceeded``."""
    fps = m.video["primary"].fps
    if view.has(VIDEO_ENCODED):
        try:
            probe = probe_video(view.read(VIDEO_ENCODED).tobytes(), view.limits)
        except ResourceLimitExceeded:
            raise
        except BundleError as exc:  # unreadable: gate C reports it with its own reason
            return {"probe": exc.reason_code}
        return {"width": probe.width, "height": probe.height, "fps": round(probe.fps, 3),
                "frames": probe.frames, "codec": probe.codec}
    n, h, w = view.info(VIDEO_FRAMES).shape[:3]
    check_video_dims(w, h, fps, n, view.limits, "raw frames")
    return {"width": w, "height": h, "fps": fps, "frames": n, "codec": "raw"}


def _vel_consistency(ts: np.ndarray, q: np.ndarray, v: np.ndarray, cfg,
                     view: BundleView | None = None) -> tuple[float, float, float, float]:
    """``(rms_diff, rms_excess, nrmse, noise_rms)`` of the recorded velocity against
    d(joint_pos)/dt, both through the same local cubic fit on the real timestamps
    (``processors.derivatives``: dropped samples and jitter change nothing). White noise on
    either stream adds a known amount to the mean squared difference (each joint's noise
    level times the fit's gain): ``rms_excess`` is what remains once that is taken out, the
    disagreement noise cannot explain; ``nrmse`` is it over the RMS speed without the noise.
    ``view``: the bundle ``q`` is the joint positions of (the fit and noise of ``q`` are
    shared with gate E through it)."""
    window = window_samples(cfg.vel_consistency_window_ms, float(np.median(np.diff(ts))))
    dq, vs, sigma_q, sigma_v = joint_and_velocity(view, ts, q, v, window)
    if dq.vel.shape[0] == 0:
        return 0.0, 0.0, 0.0, 0.0
    sq = np.mean((vs.smooth - dq.vel) ** 2)
    # mean noise variance of the (N, J) differences: each joint's noise level times each
    # window's gain, squared, averaged -- a product of two means (no (N, J) array)
    q_noise = float(np.mean(dq.gain[:, 1] ** 2)) * float(np.mean(sigma_q**2))
    v_noise = float(np.mean(vs.gain[:, 0] ** 2)) * float(np.mean(sigma_v**2))
    noise_var = q_noise + v_noise
    excess = float(np.sqrt(max(0.0, sq - noise_var)))
    signal = float(np.sqrt(max(float(np.mean(dq.vel**2)) - q_noise, 0.0)))
    return float(np.sqrt(sq)), excess, excess / max(signal, 1e-9), float(np.sqrt(noise_var))


def secondary_videos(view: BundleView, m, tolerance: float) -> dict[str, dict]:
    """``{name: {"frame_count_declared", "frame_count_decoded", "problem"}}`` for each
    secondary camera ``secondary_<name>`` (``{}`` for a mono bundle). ``problem``: None or
    ``secondary_manifest_missing`` (no ``video`` / ``camera`` entry), ``secondary_video_missing``
    (no stream), ``secondary_video_malformed`` (dtype or shape), ``secondary_video_unreadable``,
    ``secondary_frame_count_mismatch`` (off by more than ``tolerance`` of the declared
    count, and more than 2 frames) or ``secondary_video_unchecked`` (past ``MAX_SECONDARY_CAMERAS``)."""
    out: dict[str, dict] = {}
    for k, camera in enumerate(view.secondary_cameras()):
        video = m.video.get(camera)
        declared = None if video is None else video.frame_count
        decoded, problem = None, None
        if k >= MAX_SECONDARY_CAMERAS:
            problem = "secondary_video_unchecked"
        elif video is None or camera not in m.camera:
            problem = "secondary_manifest_missing"
        else:
            decoded, problem = _decodable_frames(view, camera)
            if problem is None and decoded is not None and abs(decoded - video.frame_count) > max(
                    2, tolerance * video.frame_count):
                problem = "secondary_frame_count_mismatch"
        out[camera[len(SECONDARY_PREFIX):]] = {"frame_count_declared": declared, "frame_count_decoded": decoded,
                                               "problem": problem}
    return out


def _decodable_frames(view: BundleView, camera: str) -> tuple[int | None, str | None]:
    """``(frames, None)`` for a secondary camera's stream, or ``(None, problem)``."""
    encoded, frames = video_paths(camera)
    path = encoded if view.has(encoded) else frames if view.has(frames) else None
    if path is None:
        return None, "secondary_video_missing"
    try:
        info = view.info(path)
        shape_ok = len(info.shape) == 1 if path == encoded else len(info.shape) == 4 and info.shape[3] in (1, 3)
        if info.dtype != "uint8" or not shape_ok:
            return None, "secondary_video_malformed"
        if path == frames:
            return info.shape[0], None
        return decode_luma(view.read(path).tobytes(), target_width=16).frames.shape[0], None
    except BundleError:  # unreadable node, too large, undecodable: the camera is optional
        return None, "secondary_video_unreadable"


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
    shape_problems: dict[str, list[int] | str] = {}
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
