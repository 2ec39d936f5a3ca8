"""Stage ``pose``: 3D body keypoints per frame from a video, through the project's pose
estimator registry (``gpu_consumers.pose``; MediaPipe world landmarks, tracking mode for
dense frames), then cleaned: low-confidence landmarks are gaps, gaps up to
``pose.max_gap_s`` are filled by linear interpolation, and the result is smoothed with a
Gaussian in time.

Reason codes: ``xgen_video_unreadable``, ``xgen_no_person`` (a person in fewer than
``pose.min_detection_rate`` of the frames), ``xgen_pose_gaps`` (a landmark missing longer
than ``pose.max_gap_s``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kibotos.errors import KibotosError
from kibotos.xgen.config import PoseConfig, XGenConfig
from kibotos.xgen.result import StageResult, XGenError, run_stage
from kibotos.xgen.skeleton import HumanMotion, validate_motion


def _fill(x: np.ndarray, ok: np.ndarray, max_gap: int) -> tuple[np.ndarray, int]:
    """x (T,) with the samples where ``ok`` is False interpolated; the longest gap."""
    idx = np.nonzero(ok)[0]
    longest, run = 0, 0
    for v in ok:
        run = 0 if v else run + 1
        longest = max(longest, run)
    if len(idx) == 0:
        return x, len(x)
    out = np.interp(np.arange(len(x)), idx, x[idx])
    return out, longest


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return x
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x, [(r, r)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, pad)


def clean(motion: HumanMotion, cfg: PoseConfig) -> tuple[HumanMotion, dict]:
    """Gap filling and temporal smoothing (module docstring)."""
    kp = motion.keypoints.copy()
    ok = (motion.confidence >= cfg.min_confidence) & np.isfinite(kp).all(axis=2)
    max_gap = int(round(cfg.max_gap_s * motion.fps))
    longest = 0
    for j in range(kp.shape[1]):
        for c in range(3):
            kp[:, j, c], gap = _fill(kp[:, j, c], ok[:, j], max_gap)
            longest = max(longest, gap)
    metrics = {"filled_fraction": float(1 - ok.mean()), "longest_gap_s": longest / motion.fps}
    if longest > max_gap:
        raise XGenError(f"a landmark is missing for {longest / motion.fps:.2f} s (> {cfg.max_gap_s} s)",
                        reason_code="xgen_pose_gaps", metrics=metrics)
    kp = _gauss(kp, cfg.smooth_sigma_s * motion.fps)
    return validate_motion(kp, np.where(ok, motion.confidence, 0.0), motion.fps, source=motion.source), metrics


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """(frames (T, H, W, 3) uint8 RGB, fps)."""
    import av

    from kibotos.video import probe_video

    try:
        probe_video(Path(path).read_bytes())  # the project's video budgets (size, frames, rate)
    except KibotosError as exc:
        raise XGenError(f"video {path}: {exc}", reason_code="xgen_video_unreadable", metrics={"cause": exc.reason_code}) from exc
    except OSError as exc:
        raise XGenError(f"cannot read video {path}: {exc}", reason_code="xgen_video_unreadable") from exc
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.base_rate or 0)
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    except (OSError, ValueError, IndexError, av.error.FFmpegError) as exc:
        raise XGenError(f"cannot decode video {path}: {exc}", reason_code="xgen_video_unreadable") from exc
    if fps <= 0:
        raise XGenError(f"video {path} has no frame rate", reason_code="xgen_video_unreadable")
    return frames, fps


def estimate(frames: np.ndarray, fps: float, cfg: XGenConfig) -> tuple[HumanMotion, dict]:
    from gpu_consumers.pose import get_pose_estimator

    pc = cfg.pose
    try:
        est = get_pose_estimator(pc.estimator, tracking=True)
    except KibotosError as exc:
        raise XGenError(str(exc), reason_code=exc.reason_code) from exc
    try:
        track = est.estimate(frames)
    except KibotosError as exc:
        raise XGenError(str(exc), reason_code="xgen_video_unreadable") from exc
    finally:
        est.close()
    rate = float(track.present.mean()) if len(track) else 0.0
    metrics = {"estimator": track.estimator, "frames": len(track), "detection_rate": rate}
    if rate < pc.min_detection_rate or track.world is None:
        raise XGenError(f"a person in {rate:.0%} of the frames (< {pc.min_detection_rate:.0%})",
                        reason_code="xgen_no_person", metrics=metrics)
    raw = HumanMotion(keypoints=track.world.astype(np.float64), confidence=track.confidence.astype(np.float64),
                      fps=fps, source=track.estimator)
    motion, clean_metrics = clean(raw, pc)
    return motion, {**metrics, **clean_metrics}


def run(frames: np.ndarray, fps: float, config: XGenConfig) -> StageResult[HumanMotion]:
    return run_stage("pose", lambda: estimate(frames, fps, config))
