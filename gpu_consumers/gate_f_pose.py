"""Gate F — pose estimation quality (design §5.2 F; GPU consumer ``pose``).

Applies when the validator computes pose estimates, i.e. when the primary video shows a
human demonstrator (manifest ``video.primary.subject``, default ``"human"``). For a
video of the robot itself (``"robot"``: e.g. the sample generator's renders) the gate
passes with ``{"applicable": false}`` and the flag ``pose_not_applicable``.

The primary video is decoded with PyAV and subsampled to at most ``max_fps`` (and at
most ``max_sampled_frames`` frames): every ``stride``-th frame from frame 0, recorded in
the metrics. The pose estimator (a warm model, see ``gpu_consumers.pose``) runs on those
frames, 64 at a time (bounded memory; a tracking estimator restarts per chunk); over the
configured keypoints the validator computes:

* ``mean_keypoint_confidence`` — mean confidence on frames with a person (≥ 0.70);
* ``confident_frame_fraction`` — sampled frames whose mean confidence is above 0.50;
  a frame without a person is not confident (≥ 90 %);
* ``missing_fraction`` — sampled frames without a person (≤ 5 %);
* ``max_dropout_ms`` — the longest run of missing sampled frames × the sampling
  interval (≤ 200 ms);
* reprojection error at 720p — per frame, the estimator's 3D body (its world
  landmarks) is fitted to its 2D keypoints through the manifest camera intrinsics
  (``cv2.solvePnP``: SQPnP, then Levenberg–Marquardt) using the keypoints with
  visibility ≥ ``reprojection_min_visibility``; the frame's error is the mean 2D
  residual scaled by ``720 / image height``; mean and p95 over frames (≤ 5 / ≤ 8 px,
  the design's limits). This is a hard check only for an estimator whose 3D output is a
  metric fit of its 2D output (``reprojection_gated``). MediaPipe's is not: its world
  landmarks are regressed apart from its 2D landmarks in a body-centred frame (where the
  person stands is unknown, so the declared extrinsics cannot place them), and the fit
  leaves 16–24 px on honest videos — the regressor's floor, not the video's. For it the
  error is reported and scored in ``s_pose`` (flag ``pose_reprojection_not_gated``), never
  a reject under limits other than the design's;
* ``jitter_px_720p`` — keypoint noise estimated from the 4th temporal difference
  (motion up to cubic cancels), median over 5-frame windows (feeds ``s_pose`` only).

Reason codes, first failing check wins (``failed_checks`` lists all of them):
``pose_no_person`` (no person in any sampled frame), ``pose_missing_frames``,
``pose_dropout``, ``pose_low_confidence``, ``pose_reprojection_error``.

``s_pose`` (design §7.1) is the geometric mean of three terms in [0, 1]: confidence
``clip((mean_conf - frame_confidence) / (1 - frame_confidence))``, reprojection
``1 / (1 + (mean_err / scale)^2)`` (``scale``: ``reprojection_soft_scale_px_720p``, else
``max_mean_reprojection_px_720p``) and jitter ``1 / (1 + (jitter / jitter_scale)^2)``
(a term that cannot be computed is left out).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from gpu_consumers.pose import PoseEstimator, PoseTrack, concat_tracks
from gpu_consumers.registry import EVIDENCE_GATES
from kibotos.bundle.reader import VIDEO_ENCODED, VIDEO_FRAMES, BundleView
from kibotos.config.gates import GateConfig, GateFConfig
from kibotos.errors import BundleError, ConfigError
from kibotos.media.video import DecodeBudget, decode_frames, open_video
from kibotos.reports.model import GateResult
from processors.base import result

GATE_ID = EVIDENCE_GATES["pose"]
MAX_DECODED_FRAMES = 100_000
CHUNK_FRAMES = 64  # sampled frames decoded and estimated at a time


def video_subject(manifest) -> str:
    """``"human"`` or ``"robot"``: what the primary video shows (manifest default: human)."""
    return manifest.video["primary"].subject


def sample_indices(frame_count: int, fps: float, cfg: GateFConfig) -> tuple[int, np.ndarray]:
    """``(stride, indices)``: every ``stride``-th frame from 0, at most ``max_fps`` and at
    most ``max_sampled_frames`` frames."""
    stride = max(1, math.ceil(fps / cfg.max_fps - 1e-9), math.ceil(frame_count / max(cfg.max_sampled_frames, 1)))
    return stride, np.arange(0, max(frame_count, 0), stride)


def _target_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(w, h))
    return max(2, int(round(w * scale)) // 2 * 2), max(2, int(round(h * scale)) // 2 * 2)


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    if (frames.shape[2], frames.shape[1]) != size:
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    return np.ascontiguousarray(frames, dtype=np.uint8)


def sampled_rgb_chunks(view: BundleView, stride: int, max_side: int, chunk: int = CHUNK_FRAMES
                       ) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    """``(frames (m, h, w, 3) uint8 RGB, frame indices (m,), original (width, height))`` in
    chunks of at most ``chunk`` sampled frames (memory stays bounded for long videos).

    Every frame is decoded (inter-coded video cannot skip), only every ``stride``-th is
    converted to RGB, downscaled so its longer side is at most ``max_side``."""
    if not view.has(VIDEO_ENCODED):
        raw = view.read(VIDEO_FRAMES)
        h, w = raw.shape[1:3]
        size = _target_size(w, h, max_side)
        idx = np.arange(0, raw.shape[0], stride)
        for k in range(0, len(idx), chunk):
            yield _resize(raw[idx[k:k + chunk]], size), idx[k:k + chunk], (w, h)
        return
    data = view.read(VIDEO_ENCODED).tobytes()
    with open_video(data, check_size=True) as (container, stream):
        w, h = stream.codec_context.width, stream.codec_context.height
        tw, th = _target_size(w, h, max_side)
        out: list[np.ndarray] = []
        picked: list[int] = []
        decoded = 0
        try:
            # the decode budgets as in gate C (frame size, frames, pixels, wall time, checked on
            # every packet and frame): a job is no unbounded decoder either
            for i, frame in enumerate(decode_frames(container, stream, DecodeBudget())):
                decoded = i + 1
                if i >= MAX_DECODED_FRAMES:
                    raise BundleError(f"video has more than {MAX_DECODED_FRAMES} frames", reason_code="video_too_long")
                if i % stride == 0:
                    out.append(frame.reformat(width=tw, height=th, format="rgb24").to_ndarray())
                    picked.append(i)
                    if len(out) == chunk:
                        yield np.stack(out), np.asarray(picked, dtype=np.int64), (w, h)
                        out, picked = [], []
        except BundleError:
            raise
        except Exception as exc:
            if decoded == 0:
                raise BundleError(f"video cannot be decoded: {exc}", reason_code="video_unreadable") from exc
            # a damaged tail: judge what decoded (gate C has checked the frame count)
        if out:
            yield np.stack(out), np.asarray(picked, dtype=np.int64), (w, h)


def _longest_run(mask: np.ndarray) -> int:
    best = run = 0
    for m in mask:
        run = run + 1 if m else 0
        best = max(best, run)
    return best


def _camera_matrix(view: BundleView, width: int, height: int) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """The manifest intrinsics in pixels of the decoded video (rescaled if the declared
    image size differs) and distortion coefficients OpenCV accepts (else None)."""
    intr = view.manifest.camera["primary"].intrinsics
    flags = []
    sx, sy = width / intr.width, height / intr.height
    if (intr.width, intr.height) != (width, height):
        flags.append("intrinsics_rescaled")
    k = np.array([[intr.fx * sx, 0.0, intr.cx * sx], [0.0, intr.fy * sy, intr.cy * sy], [0.0, 0.0, 1.0]])
    dist = None
    if intr.distortion:
        if len(intr.distortion) in (4, 5, 8, 12, 14):
            dist = np.asarray(intr.distortion, dtype=np.float64)
        else:
            flags.append("distortion_ignored")
    return k, dist, flags


def reprojection_errors(track: PoseTrack, sel: np.ndarray, k: np.ndarray, dist: np.ndarray | None,
                        scale_to_720: float, cfg: GateFConfig) -> np.ndarray:
    """Per frame (NaN where not fitted): mean 2D residual of the estimator's 3D body fitted
    to its own 2D keypoints through the camera, in pixels at 720p. ``track.keypoints_px``
    must already be in the camera's pixel units."""
    errors = np.full(len(track), np.nan)
    if track.world is None:
        return errors
    for i in np.flatnonzero(track.present):
        use = sel[(track.confidence[i, sel] >= cfg.reprojection_min_visibility)
                  & np.isfinite(track.world[i, sel]).all(axis=1) & np.isfinite(track.keypoints_px[i, sel]).all(axis=1)]
        if use.size < max(cfg.reprojection_min_points, 4):
            continue
        obj = track.world[i, use].astype(np.float64)
        img = track.keypoints_px[i, use].astype(np.float64)
        try:
            ok, rvec, tvec = cv2.solvePnP(obj, img, k, dist, flags=cv2.SOLVEPNP_SQPNP)
            if not ok:
                continue
            rvec, tvec = cv2.solvePnPRefineLM(obj, img, k, dist, rvec, tvec)
            proj = cv2.projectPoints(obj, rvec, tvec, k, dist)[0][:, 0]
        except cv2.error:  # degenerate point sets (all collinear, coincident)
            continue
        errors[i] = float(np.linalg.norm(proj - img, axis=1).mean()) * scale_to_720
    return errors


def _jitter(track: PoseTrack, sel: np.ndarray, min_conf: float, scale_to_720: float) -> float | None:
    """Keypoint noise (px at 720p): the 4th temporal difference over 5 consecutive sampled
    frames cancels any motion up to cubic (a moving camera, a moving arm) and leaves
    noise, whose standard deviation it multiplies by sqrt(70). Median over windows of the
    RMS over keypoints confident in all five frames."""
    kp, conf, present = track.keypoints_px[:, sel], track.confidence[:, sel], track.present
    weights = np.array([1.0, -4.0, 6.0, -4.0, 1.0])
    values = []
    for i in range(len(track) - 4):
        if not present[i:i + 5].all():
            continue
        ok = (conf[i:i + 5] >= min_conf).all(axis=0)
        if ok.sum() < 3:
            continue
        d4 = np.tensordot(weights, kp[i:i + 5, ok].astype(np.float64), axes=1) / np.sqrt(70.0)
        values.append(float(np.sqrt(np.mean(np.sum(d4**2, axis=1) / 2.0))) * scale_to_720)
    return float(np.median(values)) if values else None


def _s_pose(mean_conf: float, reproj_mean: float | None, jitter: float | None, cfg: GateFConfig) -> float:
    terms = [float(np.clip((mean_conf - cfg.frame_confidence) / (1 - cfg.frame_confidence), 0, 1))]
    if reproj_mean is not None:
        scale = cfg.reprojection_soft_scale_px_720p or cfg.max_mean_reprojection_px_720p
        terms.append(1.0 / (1.0 + (reproj_mean / scale) ** 2))
    if jitter is not None:
        terms.append(1.0 / (1.0 + (jitter / cfg.jitter_scale_px_720p) ** 2))
    return float(np.prod(terms) ** (1.0 / len(terms)))


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


@dataclass(frozen=True)
class PoseFacts:
    """What gate F measures on one track (the checks and ``s_pose`` read only these)."""

    present: np.ndarray  # (n,) bool: sampled frames with a person
    mean_conf: float
    confident: float
    missing: float
    dropout_ms: float
    reproj_mean: float | None
    reproj_p95: float | None
    reproj_frames: int
    jitter: float | None
    per_keypoint: dict[str, float | None]
    camera_flags: list[str]

    @property
    def anyone(self) -> bool:
        return bool(self.present.any())

    def over_reprojection(self, cfg: GateFConfig) -> bool:
        return self.reproj_mean is not None and self.reproj_p95 is not None and (
            self.reproj_mean > cfg.max_mean_reprojection_px_720p or self.reproj_p95 > cfg.max_p95_reprojection_px_720p)


# reason code -> whether the facts fail it under the estimator's thresholds; in this order
# (the first failing check is the reason, ``failed_checks`` lists all of them)
POSE_CHECKS: dict[str, Callable[[PoseFacts, GateFConfig], bool]] = {
    "pose_no_person": lambda f, cfg: not f.anyone,
    "pose_missing_frames": lambda f, cfg: f.missing > cfg.max_missing_fraction,
    "pose_dropout": lambda f, cfg: f.dropout_ms > cfg.max_dropout_ms,
    "pose_low_confidence": lambda f, cfg: (f.mean_conf < cfg.min_mean_confidence
                                           or f.confident < cfg.min_confident_frame_fraction),
    "pose_reprojection_error": lambda f, cfg: f.over_reprojection(cfg) and cfg.reprojection_gated,
}


def _not_applicable(subject: str, config: GateConfig) -> GateResult:
    thresholds = config.gate_f.model_dump(exclude={"estimators"})
    return result(GATE_ID, True, {"applicable": False, "reason": f"video subject is {subject}"},
                  thresholds, flags=["pose_not_applicable"])


def _estimate(view: BundleView, estimator: PoseEstimator, cfg: GateFConfig, stride: int
              ) -> tuple[PoseTrack | None, int, tuple[int, int] | None]:
    """``(track in the video's own pixels, sampled frames, (width, height))``; no track
    when no frame was sampled."""
    pieces, n_sampled, size = [], 0, None
    for frames, idx, size in sampled_rgb_chunks(view, stride, cfg.max_decode_side):  # noqa: B007 (size: the last chunk's)
        pieces.append(estimator.estimate(frames))
        n_sampled += len(idx)
    if not pieces or size is None:
        return None, n_sampled, size
    width, height = size
    track = concat_tracks(pieces)
    # keypoints back to the pixels of the original video (the camera's pixels)
    fw, fh = track.image_size
    track_px = track.keypoints_px * np.array([width / fw, height / fh], np.float32)
    return (PoseTrack(track.estimator, track.keypoint_names, (width, height), track_px, track.confidence,
                      track.present, track.world, track.hands), n_sampled, size)


def _keypoint_index(track: PoseTrack, cfg: GateFConfig, estimator: str) -> np.ndarray:
    names = list(track.keypoint_names)
    missing_names = [k for k in cfg.keypoints if k not in names]
    if missing_names:
        raise ConfigError(f"gate_f.keypoints {missing_names} are not keypoints of {estimator}")
    return np.array([names.index(k) for k in cfg.keypoints])


def measure_pose(view: BundleView, track: PoseTrack, sel: np.ndarray, cfg: GateFConfig, stride: int,
                 fps: float) -> PoseFacts:
    """The facts of ``track`` (in the video's pixels) over the keypoints ``sel``."""
    width, height = track.image_size
    scale = 720.0 / height
    present = track.present
    frame_conf = np.where(present, track.confidence[:, sel].mean(axis=1), 0.0)
    k, dist, cam_flags = _camera_matrix(view, width, height)
    errors = reprojection_errors(track, sel, k, dist, scale, cfg)
    fitted = errors[np.isfinite(errors)]
    return PoseFacts(
        present=present,
        mean_conf=float(frame_conf[present].mean()) if present.any() else 0.0,
        confident=float(np.mean(frame_conf > cfg.frame_confidence)),
        missing=float(1.0 - present.mean()),
        dropout_ms=_longest_run(~present) * 1000.0 * stride / fps,
        reproj_mean=float(fitted.mean()) if fitted.size else None,
        reproj_p95=float(np.percentile(fitted, 95)) if fitted.size else None,
        reproj_frames=int(fitted.size),
        jitter=_jitter(track, sel, cfg.frame_confidence, scale),
        per_keypoint={name: _r(float(track.confidence[present, i].mean()) if present.any() else 0.0, 3)
                      for name, i in zip(cfg.keypoints, sel)},
        camera_flags=cam_flags,
    )


def _pose_metrics(f: PoseFacts, track: PoseTrack, cfg: GateFConfig) -> dict:
    metrics = {
        "frames_with_person": int(f.present.sum()),
        "mean_keypoint_confidence": _r(f.mean_conf),
        "confident_frame_fraction": _r(f.confident),
        "missing_fraction": _r(f.missing),
        "max_dropout_ms": _r(f.dropout_ms, 1),
        "mean_reprojection_px_720p": _r(f.reproj_mean, 3),
        "p95_reprojection_px_720p": _r(f.reproj_p95, 3),
        "reprojection_frames": f.reproj_frames,
        "jitter_px_720p": _r(f.jitter, 3),
        "keypoint_confidence": f.per_keypoint,
        "s_pose": _r(_s_pose(f.mean_conf, f.reproj_mean, f.jitter, cfg)) if f.anyone else 0.0,
    }
    if track.hands is not None:
        hands = track.hands
        metrics["hand_detected_fraction"] = {side: _r(float((hands.score[:, j] > 0).mean()))
                                             for j, side in enumerate(("left", "right"))}
    return metrics


def _pose_flags(f: PoseFacts, cfg: GateFConfig) -> list[str]:
    flags = list(f.camera_flags)
    if f.anyone and f.reproj_mean is None:
        flags.append("pose_reprojection_unavailable")
    if f.reproj_mean is not None and not cfg.reprojection_gated:
        flags.append("pose_reprojection_not_gated")
    return flags


def check_pose(view: BundleView, config: GateConfig, estimator: PoseEstimator | None) -> GateResult:
    """Gate F on one bundle with a warm ``estimator`` (may be ``None`` when the video's
    subject is the robot: nothing is estimated then): the estimator's track, its facts
    (``measure_pose``), the checks of ``POSE_CHECKS`` under the estimator's thresholds."""
    m = view.manifest
    subject = video_subject(m)
    if subject != "human":
        return _not_applicable(subject, config)
    if estimator is None:
        raise ConfigError("gate F needs a pose estimator for a video of a human", reason_code="pose_estimator_missing")
    cfg = config.gate_f.for_estimator(estimator.name)
    thresholds = cfg.model_dump(exclude={"estimators"}) | {"estimator": estimator.name}

    video = m.video["primary"]
    stride, _ = sample_indices(video.frame_count, video.fps, cfg)
    track, n_sampled, size = _estimate(view, estimator, cfg, stride)
    metrics: dict = {"applicable": True, "estimator": estimator.version, "video_size": list(size) if size else None,
                     "sampled_frame_stride": stride, "sampled_frame_count": n_sampled,
                     "sampled_fps": round(video.fps / stride, 3)}
    if track is None:
        metrics["failed_checks"] = ["pose_no_person"]
        return result(GATE_ID, False, metrics, thresholds, "pose_no_person")
    sel = _keypoint_index(track, cfg, estimator.name)
    facts = measure_pose(view, track, sel, cfg, stride, video.fps)
    metrics |= _pose_metrics(facts, track, cfg)
    flags = _pose_flags(facts, cfg)
    metrics["reprojection_within_design_limits"] = (None if facts.reproj_mean is None
                                                    else not facts.over_reprojection(cfg))
    failed = [code for code, fails in POSE_CHECKS.items() if fails(facts, cfg)]
    metrics["failed_checks"] = failed
    if failed:
        return result(GATE_ID, False, metrics, thresholds, failed[0], flags=flags)
    return result(GATE_ID, True, metrics, thresholds, flags=flags)
