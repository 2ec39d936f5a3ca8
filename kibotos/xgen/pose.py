"""Stage ``pose``: 3D body keypoints per frame from a video, through the project's pose
estimator registry (``gpu_consumers.pose``; MediaPipe world landmarks, tracking mode for
dense frames), then cleaned: low-confidence landmarks are gaps; landmark *outliers* are
gaps too (below); gaps up to ``pose.max_gap_s`` are filled by linear interpolation, and
the result is smoothed with a Gaussian in time. Rejected landmarks keep confidence 0.

Outliers (what real estimators do on occluded or foreshortened limbs: MediaPipe's ankles
jump up to 0.5 m between frames on the generated video, its shins shrink to a fifth of
their length in a squat):

* *velocity*: a landmark further than ``pose.outlier_max_deviation_m`` from its own
  robust local trend over ``pose.outlier_window_s`` (median velocity and median position of
  the window: a Hampel filter that follows a swinging limb; a jump out and back);
* *bone length*: a limb landmark whose bone to its parent (hip->knee->ankle->heel/toe,
  shoulder->elbow->wrist) departs from the skeleton's own length — the median over the
  clip — by more than ``pose.bone_length_tolerance`` of it.

An outlier run longer than ``pose.max_gap_s`` is kept as measured (nothing better is
known there) rather than refused; only missing landmarks (no person) refuse with
``xgen_pose_gaps``.

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
from kibotos.xgen.skeleton import NAMES, HumanMotion, validate_motion


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


# limb bones checked for length consistency: (parent landmark, child landmark)
BONES = tuple((f"{s}_{a}", f"{s}_{b}") for s in ("left", "right") for a, b in (
    ("hip", "knee"), ("knee", "ankle"), ("ankle", "heel"), ("ankle", "foot_index"),
    ("shoulder", "elbow"), ("elbow", "wrist")))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of the True runs of a (T,) mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]))


def _running_trend(x: np.ndarray, ok: np.ndarray, half: int) -> np.ndarray:
    """(T, 3) robust local-linear estimate of x at each frame from the valid samples within
    +-half frames: their median velocity carries each sample to t, the median of those is
    the estimate (NaN where none). A plain running median lags behind a swinging foot."""
    out = np.full_like(x, np.nan)
    for t in range(len(x)):
        lo, hi = max(0, t - half), min(len(x), t + half + 1)
        idx = lo + np.nonzero(ok[lo:hi])[0]
        if len(idx) == 0:
            continue
        vel = np.zeros(3)
        if len(idx) > 1:
            vel = np.median(np.diff(x[idx], axis=0) / np.diff(idx)[:, None], axis=0)
        out[t] = np.median(x[idx] + vel * (t - idx)[:, None], axis=0)
    return out


def outliers(kp: np.ndarray, ok: np.ndarray, fps: float, cfg: PoseConfig) -> np.ndarray:
    """(T, 33) bool: landmarks that are velocity or bone-length outliers (module docstring)."""
    from kibotos.xgen.skeleton import IDX

    bad = np.zeros(ok.shape, bool)
    half = max(1, int(round(cfg.outlier_window_s * fps / 2)))
    for j in range(kp.shape[1]):
        med = _running_trend(kp[:, j], ok[:, j], half)
        dev = np.linalg.norm(kp[:, j] - med, axis=1)
        bad[:, j] |= ok[:, j] & (dev > cfg.outlier_max_deviation_m)
    for parent, child in BONES:
        p, c = IDX[parent], IDX[child]
        both = ok[:, p] & ok[:, c] & ~bad[:, p]
        if both.sum() < 3:
            continue
        length = np.linalg.norm(kp[:, c] - kp[:, p], axis=1)
        ref = np.median(length[both])
        bad[:, c] |= both & (np.abs(length - ref) > cfg.bone_length_tolerance * ref)
    return bad


def clean(motion: HumanMotion, cfg: PoseConfig) -> tuple[HumanMotion, dict]:
    """Outlier rejection, gap filling and temporal smoothing (module docstring)."""
    kp = motion.keypoints.copy()
    ok = (motion.confidence >= cfg.min_confidence) & np.isfinite(kp).all(axis=2)
    max_gap = int(round(cfg.max_gap_s * motion.fps))
    bad = outliers(kp, ok, motion.fps, cfg)
    kept = 0
    for j in range(kp.shape[1]):
        for a, b in _runs(bad[:, j]):
            if b - a > max_gap:  # a long outlier run: no better estimate to fill it from
                bad[a:b, j] = False
                kept += b - a
    usable = ok & ~bad
    longest = 0
    for j in range(kp.shape[1]):
        for c in range(3):
            kp[:, j, c], _ = _fill(kp[:, j, c], usable[:, j], max_gap)
        longest = max([longest] + [b - a for a, b in _runs(~ok[:, j])])
    metrics = {"filled_fraction": float(1 - ok.mean()), "longest_gap_s": longest / motion.fps,
               "outlier_fraction": float(bad.mean()), "outliers_kept_fraction": kept / bad.size,
               "outliers_by_landmark": {NAMES[j]: int(n) for j, n in enumerate(bad.sum(axis=0)) if n}}
    if longest > max_gap:
        raise XGenError(f"a landmark is missing for {longest / motion.fps:.2f} s (> {cfg.max_gap_s} s)",
                        reason_code="xgen_pose_gaps", metrics=metrics)
    kp = _gauss(kp, cfg.smooth_sigma_s * motion.fps)
    return validate_motion(kp, np.where(usable, motion.confidence, 0.0), motion.fps, source=motion.source), metrics


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """(frames (T, H, W, 3) uint8 RGB, fps)."""
    import av

    from kibotos.media.video import probe_video

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
