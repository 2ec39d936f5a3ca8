"""Gate C — video/kinematics overlap and sync sanity (design §5.2 C; cheap).

The validator estimates the A/V offset itself: per-frame motion energy of the video
(mean absolute luma difference of consecutive, downsized frames) is cross-correlated
with the image speed the kinematics predict (the robot's links projected through the declared
camera) on a common time grid; the lag with the highest Pearson
correlation is the estimate, refined to sub-grid precision with a parabola. Confidence
is high only when that peak is both strong and distinct from the best correlation at
any lag more than 150 ms away (periodic motion is ambiguous and gets low confidence).

Reject when the streams overlap by less than 90 % of either duration, or when the
claimed offset is more than 250 ms away from a high-confidence estimate. A video that
never changes (a frame held, a blank screen: at most ``static_max_changed_fraction`` of
the pixels change between any two frames) while the robot's links move in the declared
camera (p95 ``static_min_image_speed_px_s``) is rejected as ``video_kinematics_mismatch``:
such a video has no sync confidence, and low confidence must not wave it through.

Decode budget: declared durations that could never overlap enough are refused as
``insufficient_overlap`` before any frame is decoded, and a stream is decoded no further
than its declared frame count plus the tolerance (``video_frame_count_mismatch`` past it);
the decoder checks the time budgets on every packet and frame (``kibotos.media.video``), and the
gate's deadline is checked again between its steps.
"""

from __future__ import annotations

import numpy as np

from kibotos.bundle.limits import check_deadline
from kibotos.bundle.reader import JOINT_POS, TIMESTAMPS, VIDEO_ENCODED, VIDEO_FRAMES, BundleView
from kibotos.config.gates import GateCConfig, GateConfig
from kibotos.errors import BundleError
from kibotos.media.camera import project_points
from kibotos.media.video import decode_luma, luma_from_frames
from kibotos.reports.model import GateResult
from kibotos.robots import get_robot
from processors.base import register_gate, result
from processors.derivatives import local_derivatives, window_samples
from processors.link_kinematics import link_kinematics_for
from processors.signals import lag_correlation, zscore

GATE_ID = "gate_c_sync"
DISTINCT_MS = 150.0
SMOOTH_MS = 50.0
SPEED_WINDOW_MS = 400.0  # local quadratic fit over this span: the predicted image speed (motion comes in >= 1 s bursts)


CHANGE_LEVEL = 12  # luma steps; smaller differences are compression noise, not motion


def video_motion_energy(luma: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(times_ms, energy) between consecutive frames: the fraction of pixels whose luma
    changed by more than ``CHANGE_LEVEL``, median-filtered over 3 frames so that the
    flicker of a codec's key frames does not look like motion."""
    diff = np.abs(np.diff(luma.astype(np.int16), axis=0)) > CHANGE_LEVEL
    energy = diff.mean(axis=(1, 2))
    if energy.size >= 3:
        padded = np.pad(energy, 1, mode="edge")
        energy = np.median(np.lib.stride_tricks.sliding_window_view(padded, 3), axis=1)
    t = (np.arange(1, luma.shape[0]) - 0.5) * 1000.0 / fps
    return t, energy


def image_speed(view: BundleView, ts_ms: np.ndarray, q: np.ndarray) -> np.ndarray:
    """What the camera should see move: ``pixel_speed`` log-compressed (relative to its
    median) because changed-pixel energy saturates for fast motion."""
    speed = pixel_speed(view, ts_ms, q)
    return np.log1p(speed / max(float(np.median(speed)), 1e-6))


def pixel_speed(view: BundleView, ts_ms: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The robot's keypoint links (forward kinematics of the submitted joints) projected
    through the declared camera: their summed pixel speed (px/s) at each sample."""
    m = view.manifest
    robot = get_robot(m.robot_model_id, m.robot_model_revision)
    full = np.tile(robot.home_qpos, (q.shape[0], 1))
    full[:, [robot.joint_names.index(n) for n in m.joint_names]] = q
    # NumPy forward kinematics of the keypoint links only: pytorch-kinematics' whole-tree
    # pass cost more than the decode (processors.link_kinematics)
    points = link_kinematics_for(robot.model_id, robot.revision).link_positions(full)
    cam = m.camera["primary"]
    pix = project_points(points, cam.intrinsics.model_dump(), np.asarray(cam.extrinsics, dtype=np.float64))
    # differentiated by the local fit on the real timestamps (processors.derivatives): a
    # raw gradient of 0.01 rad joint noise drowns the motion the video is matched against
    # (sync confidence 0.9 -> 0.03), which would let noise hide a false sync claim
    flat = pix.reshape(pix.shape[0], -1)
    d = local_derivatives(ts_ms, flat, window_samples(SPEED_WINDOW_MS, float(np.median(np.diff(ts_ms)))), order=2)
    if d.vel.shape[0] == 0:  # shorter than one window: the plain gradient
        vel = np.gradient(flat, (ts_ms - ts_ms[0]).astype(np.float64) / 1000.0, axis=0)
    else:  # the ends take the nearest full window's value
        vel = d.vel[np.clip(np.arange(flat.shape[0]) - d.centre[0], 0, d.vel.shape[0] - 1)]
    return np.linalg.norm(vel.reshape(pix.shape), axis=-1).sum(axis=1)


def _smooth(x: np.ndarray, n: int) -> np.ndarray:
    if n <= 1:
        return x
    kernel = np.ones(n) / n
    return np.convolve(np.nan_to_num(x), kernel, mode="same")


def estimate_offset(
    kin_t_ms: np.ndarray, kin_speed: np.ndarray, vid_t_ms: np.ndarray, vid_energy: np.ndarray, cfg: GateCConfig
) -> tuple[float, float, dict]:
    """Estimate ``offset`` with ``t_video = t_kin + offset``. Returns (offset_ms, confidence, details)."""
    g = cfg.grid_ms
    ks = np.arange(0.0, kin_t_ms[-1] + 1e-9, g)
    vs = np.arange(0.0, vid_t_ms[-1] + 1e-9, g)
    s = _smooth(zscore(np.interp(ks, kin_t_ms, kin_speed)), max(1, int(SMOOTH_MS / g)))
    e = _smooth(zscore(np.interp(vs, vid_t_ms, vid_energy, left=vid_energy[0], right=vid_energy[-1])), max(1, int(SMOOTH_MS / g)))
    steps = np.arange(-int(cfg.max_lag_ms / g), int(cfg.max_lag_ms / g) + 1)
    corr, n = lag_correlation(s, e, steps)  # FFT + cumulative sums (processors.signals)
    corr[n < 0.5 * ks.size] = np.nan
    if not np.isfinite(corr).any():
        return 0.0, 0.0, {"peak_corr": None}
    best = int(np.nanargmax(corr))
    r1 = float(corr[best])
    frac = 0.0
    if 0 < best < corr.size - 1 and np.isfinite(corr[best - 1]) and np.isfinite(corr[best + 1]):
        a, b, c = corr[best - 1], corr[best], corr[best + 1]
        denom = a - 2 * b + c
        frac = float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5)) if denom < 0 else 0.0
    offset = (steps[best] + frac) * g
    # the main lobe: from the peak down to the nearest local minimum on each side
    c = np.nan_to_num(corr, nan=-1.0)
    lo = best
    while lo > 0 and c[lo - 1] <= c[lo]:
        lo -= 1
    hi = best
    while hi < c.size - 1 and c[hi + 1] <= c[hi]:
        hi += 1
    outside = np.ones(c.size, bool)
    outside[lo : hi + 1] = False
    outside &= np.abs(steps - steps[best]) * g > DISTINCT_MS
    r2 = float(c[outside].max()) if outside.any() else -1.0
    confidence = float(np.clip(r1, 0, 1) * np.clip((r1 - r2) / 0.3, 0, 1))
    return float(offset), confidence, {"peak_corr": round(r1, 4), "second_corr": round(r2, 4)}


def _video_luma(view: BundleView, cfg: GateCConfig, max_frames: int, fast: bool = False) -> np.ndarray:
    """Downsized luma of the primary video; an encoded stream is decoded up to
    ``max_frames`` (``video_too_long`` past it); ``fast``: ``decode_luma(fast=True)``."""
    if view.has(VIDEO_ENCODED):
        return decode_luma(view.read(VIDEO_ENCODED).tobytes(), target_width=cfg.decode_width,
                           max_frames=max_frames, fast=fast).frames
    return luma_from_frames(view.read(VIDEO_FRAMES), target_width=cfg.decode_width)


def _frame_slack(frame_count: int, cfg: GateCConfig) -> float:
    """How far the decoded frame count may be from the declared one."""
    return max(2, cfg.frame_count_tolerance * frame_count)


@register_gate(GATE_ID, letter="c", order=3, title="video/kinematics overlap and sync sanity")
def check(view: BundleView, config: GateConfig) -> GateResult:
    return check_sync(view, config)


def check_sync(view: BundleView, config: GateConfig, *, fast_decode: bool = False) -> GateResult:
    """Gate C; ``fast_decode``: ``decode_luma(fast=True)`` (``kibotos bench pipeline``
    measures what that changes: not the gate's default)."""
    cfg = config.gate_c
    m = view.manifest
    fps, frame_count = m.video["primary"].fps, m.video["primary"].frame_count
    claimed = float(m.sync.sync_offset_ms_claimed)
    thresholds = cfg.model_dump()
    ts = view.read(TIMESTAMPS).astype(np.int64)
    kin_t = (ts - ts[0]).astype(np.float64)
    kin_duration = float(kin_t[-1])
    video_duration = frame_count / fps * 1000.0
    metrics: dict = {"claimed_offset_ms": claimed, "frame_count_declared": frame_count}
    # Budget before decoding: whatever the offset, the overlap is at most the shorter of
    # the two declared durations, so durations further apart than the overlap bound
    # allows fail here, before a single frame is decoded (a long video behind a short
    # episode costs nothing), with the same reason the decoded check would give.
    bound = min(kin_duration, video_duration) / max(kin_duration, video_duration, 1e-9)
    if bound < cfg.min_overlap_fraction:
        metrics |= {"video_duration_ms": round(video_duration, 1), "kin_duration_ms": kin_duration,
                    "overlap_fraction_bound": round(bound, 4), "decoded": False}
        return result(GATE_ID, False, metrics, thresholds, "insufficient_overlap")
    # and no further than the declared frame count allows: a stream longer than it
    # declares is a mismatch once it passes the tolerance, not a longer decode
    max_frames = frame_count + int(_frame_slack(frame_count, cfg)) + 1
    try:
        luma = _video_luma(view, cfg, max_frames, fast=fast_decode)
    except BundleError as exc:
        if exc.reason_code != "video_too_long":
            raise
        metrics |= {"frame_count_decoded": max_frames, "decode_stopped_at_frames": max_frames}
        return result(GATE_ID, False, metrics, thresholds, "video_frame_count_mismatch")
    decoded = int(luma.shape[0])
    metrics["frame_count_decoded"] = decoded
    if abs(decoded - frame_count) > _frame_slack(frame_count, cfg):
        return result(GATE_ID, False, metrics, thresholds, "video_frame_count_mismatch")
    if decoded < 3:
        return result(GATE_ID, False, metrics, thresholds, "video_too_short")

    check_deadline("gate C after decoding")
    vt, energy = video_motion_energy(luma, fps)
    speed = pixel_speed(view, ts, view.read(JOINT_POS).astype(np.float64))
    check_deadline("gate C after the projected image speed")
    # a still (one frame held) or blank video against a moving robot shows nothing of it;
    # its sync estimate has no confidence, so nothing below would catch it
    metrics["video_max_changed_fraction"] = round(float(energy.max()), 6)
    metrics["image_speed_p95_px_s"] = round(float(np.percentile(speed, 95)), 3)
    still = (metrics["video_max_changed_fraction"] <= cfg.static_max_changed_fraction
             and metrics["image_speed_p95_px_s"] >= cfg.static_min_image_speed_px_s)
    estimated, confidence, details = estimate_offset(
        kin_t, np.log1p(speed / max(float(np.median(speed)), 1e-6)), vt, energy, cfg)
    high = confidence >= cfg.high_confidence
    used = estimated if high else claimed
    overlap = max(0.0, min(kin_duration, video_duration - used) - max(0.0, -used))
    metrics |= details | {
        "estimated_offset_ms": round(estimated, 1),
        "sync_confidence": round(confidence, 4),
        "offset_used_ms": round(used, 1),
        "video_duration_ms": round(video_duration, 1),
        "kin_duration_ms": kin_duration,
        "overlap_ms": round(overlap, 1),
        "overlap_fraction_kin": round(overlap / max(kin_duration, 1e-9), 4),
        "overlap_fraction_video": round(overlap / max(video_duration, 1e-9), 4),
        "sync_disagreement_ms": round(abs(claimed - estimated), 1),
    }
    if still:
        metrics["mismatch"] = ["video_static"]
        return result(GATE_ID, False, metrics, thresholds, "video_kinematics_mismatch")
    if min(metrics["overlap_fraction_kin"], metrics["overlap_fraction_video"]) < cfg.min_overlap_fraction:
        return result(GATE_ID, False, metrics, thresholds, "insufficient_overlap")
    if high and abs(claimed - estimated) > cfg.max_sync_disagreement_ms:
        return result(GATE_ID, False, metrics, thresholds, "sync_offset_mismatch")
    flags = [] if high else ["sync_low_confidence"]
    return result(GATE_ID, True, metrics, thresholds, flags=flags)
