"""The fingerprint of a bundle: what the novelty index stores and compares.

All video parts come from frames sampled at ``frames.sample_fps`` by presentation time
(a copy at another frame rate samples the same instants), compared as *sequences*, with
a best-lag search that absorbs trims and time shifts.

* **Motion signature** (the visual evidence). Per sample a ``width x height`` grey
  thumbnail minus the clip's mean thumbnail: what moves, not the scene, so two new
  episodes recorded in the same place differ while a copy matches. Brightness offsets,
  re-encoding and static overlays cancel; mirrored and centre-cropped copies are caught
  by storing variants (identity, mirror, crops) and comparing the query's identity with
  the candidate's variants and the reverse. Quantised to Int8 (grey levels).
* **Frame hashes** (appearance). 64-bit DCT pHashes (``kibotos.media.phash``) per sample and
  of the mirrored sample: near-exact copies, and a same-scene prefilter.
* **Clip embedding.** The mean of EfficientNet-Lite0 embeddings (``kibotos.media.embeddings``)
  of ``keyframes`` frames spread uniformly over the samples, L2-normalised: same-scene
  prefilter.
* **Trajectory.** Joint positions box-averaged over ``1 / rate_hz`` windows (which also
  averages away additive noise), joint-major ``(J, L)``, centred per joint and scaled to
  unit RMS. Compared by the best-lag *locally centred* correlation over the overlap, so
  time shifts, trims, constant offsets and small noise leave a copy near 1.

The same pass measures the video's quality and viewpoint compliance and how rendered it
looks (``kibotos.novelty.quality``), stored with the artifacts.

A static overlay found by the artifact pass (``kibotos.novelty.artifacts``) is filled
with the frame's median before hashing and embedding: a burned-in logo should neither
hide a copy nor make two different videos with the same logo look alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from kibotos.bundle.reader import JOINT_POS, TIMESTAMPS, BundleView
from kibotos.errors import BundleError
from kibotos.media.phash import phash
from kibotos.novelty.artifacts import analyze_artifacts
from kibotos.novelty.config import NoveltySection
from kibotos.novelty.quality import render_likeness, video_quality
from kibotos.novelty.scan import VideoScan, scan_bundle


def variant_names(crops: tuple[float, ...]) -> list[str]:
    """Names of the stored motion-signature variants, in storage order."""
    return ["identity", "mirror"] + [f"crop{round(c * 100)}" for c in crops]


def _centre_crop(img: np.ndarray, fraction: float) -> np.ndarray:
    h, w = img.shape[:2]
    dy, dx = round(h * (1 - fraction) / 2), round(w * (1 - fraction) / 2)
    return img[dy: h - dy, dx: w - dx]


Box = tuple[float, float, float, float]  # x, y, width, height as fractions of the frame


def mask_box(img: np.ndarray, box: Box | None) -> np.ndarray:
    """A copy of ``img`` with ``box`` filled with the image's median (per channel)."""
    if box is None:
        return img
    h, w = img.shape[:2]
    x0, y0 = int(np.floor(box[0] * w)), int(np.floor(box[1] * h))
    x1, y1 = int(np.ceil((box[0] + box[2]) * w)), int(np.ceil((box[1] + box[3]) * h))
    out = img.copy()
    fill = np.median(img.reshape(h * w, -1), axis=0).astype(img.dtype)
    out[max(0, y0): y1, max(0, x0): x1] = fill if img.ndim == 3 else fill[0]
    return out


def frame_hashes(grey: np.ndarray, box: Box | None = None) -> tuple[list[int], list[int]]:
    """pHashes of grey frames ``(M, h, w)`` (``box`` masked) and of their mirror images."""
    hashes, mirrored = [], []
    for frame in grey:
        frame = mask_box(frame, box)
        hashes.append(phash(frame))
        mirrored.append(phash(np.ascontiguousarray(frame[:, ::-1])))
    return hashes, mirrored


def motion_signature(grey: np.ndarray, width: int, height: int, crops: tuple[float, ...],
                     box: Box | None = None, blur_cells: float = 0.0) -> list[np.ndarray]:
    """``(L, width * height)`` Int8 signatures of grey frames ``(L, h, w)`` per variant
    (``variant_names(crops)`` order): thumbnails (blurred by ``blur_cells`` cells first,
    which makes small spatial shifts degrade gracefully) minus their temporal mean."""
    views: list[list[np.ndarray]] = [[] for _ in range(1 + len(crops))]
    for frame in grey:
        frame = mask_box(frame, box).astype(np.float32)
        for k, view in enumerate([frame] + [_centre_crop(frame, c) for c in crops]):
            if blur_cells > 0:
                view = cv2.GaussianBlur(view, (0, 0), blur_cells * view.shape[1] / width)
            views[k].append(cv2.resize(view, (width, height), interpolation=cv2.INTER_AREA))
    out = []
    for k, thumbs in enumerate(views):
        a = np.stack(thumbs)
        a -= a.mean(axis=0)
        sig = np.clip(np.rint(a), -127, 127).astype(np.int8)
        out.append(sig.reshape(len(a), -1))
        if k == 0:
            out.append(np.ascontiguousarray(sig[:, :, ::-1]).reshape(len(a), -1))
    return out


def clip_embedding(keyframes: list[np.ndarray], box: Box | None = None) -> np.ndarray | None:
    """Mean keyframe embedding, ``box`` masked, L2-normalised (None without keyframes)."""
    if not keyframes:
        return None
    from kibotos.media.embeddings import embed_images

    mean = embed_images([mask_box(k, box) for k in keyframes]).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm).astype(np.float32) if norm > 0 else None


def trajectory_fingerprint(timestamps_ms: np.ndarray, joint_pos: np.ndarray, rate_hz: float, max_samples: int,
                           min_samples: int, min_motion: float) -> np.ndarray:
    """``(J, L)`` float32 trajectory fingerprint; ``(0, 0)`` when there is nothing to
    compare (too short, non-finite, or static below ``min_motion`` RMS)."""
    empty = np.zeros((0, 0), np.float32)
    t = np.asarray(timestamps_ms, dtype=np.float64).ravel()
    q = np.asarray(joint_pos, dtype=np.float64)
    if q.ndim != 2 or len(t) != len(q) or len(t) < 2:
        return empty
    keep = np.isfinite(t) & np.isfinite(q).all(axis=1)
    t, q = t[keep], q[keep]
    if len(t) < 2:
        return empty
    order = np.argsort(t, kind="stable")
    t, q = t[order], q[order]
    t, first = np.unique(t, return_index=True)
    q = q[first]
    step = 1000.0 / rate_hz
    n = min(max_samples, int((t[-1] - t[0]) // step))
    if n < min_samples or len(t) < 2:
        return empty
    # box average over [t0 + k*step, t0 + (k+1)*step) from the trapezoid integral: works
    # for any input rate and across gaps
    integral = np.concatenate([np.zeros((1, q.shape[1])),
                               np.cumsum((q[1:] + q[:-1]) / 2 * np.diff(t)[:, None], axis=0)])
    edges = t[0] + step * np.arange(n + 1)
    at_edges = np.stack([np.interp(edges, t, integral[:, j]) for j in range(q.shape[1])], axis=1)
    binned = np.diff(at_edges, axis=0) / step  # (n, J)
    binned -= binned.mean(axis=0)
    rms = float(np.sqrt((binned**2).mean()))
    if not np.isfinite(rms) or rms < min_motion:
        return empty
    return np.ascontiguousarray((binned / rms).T, dtype=np.float32)


@dataclass(frozen=True)
class Fingerprint:
    sample_fps: float
    hashes: list[int]  # per sample; empty without video
    mirror_hashes: list[int]
    motion_variants: list[str]
    motion: list[np.ndarray]  # per variant (L, width * height) Int8; empty without video
    embedding: np.ndarray | None  # (D,) float32, L2-normalised
    keyframes: int
    trajectory: np.ndarray  # (J, L) float32, (0, 0) when not comparable
    trajectory_rate_hz: float
    timings_ms: dict[str, float]
    masked_box: Box | None = None  # the static overlay left out of hashes, motion and embedding
    flags: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.hashes and self.embedding is None and self.trajectory.size == 0


def read_trajectory(view: BundleView, cfg: NoveltySection) -> np.ndarray:
    """The bundle's trajectory fingerprint (empty when its kinematics are unusable)."""
    tcfg = cfg.trajectory
    try:
        ts, q = view.read(TIMESTAMPS), view.read(JOINT_POS)
    except BundleError:
        return np.zeros((0, 0), np.float32)
    return trajectory_fingerprint(ts, q, tcfg.rate_hz, tcfg.max_samples, tcfg.min_samples, tcfg.min_motion)


def fingerprint_scan(scan: VideoScan | None, trajectory: np.ndarray, cfg: NoveltySection, *,
                     box: Box | None = None, timings_ms: dict[str, float] | None = None,
                     flags: tuple[str, ...] = ()) -> Fingerprint:
    """The fingerprint from a video scan (None: no video), a trajectory fingerprint and
    the overlay ``box`` to leave out."""
    timings = dict(timings_ms or {})
    mc = cfg.motion
    crops = tuple(mc.crop_variants)
    video = scan if scan is not None and len(scan.grey) > 0 else None
    t0 = time.perf_counter()
    hashes, mirrored = frame_hashes(video.grey, box) if video is not None else ([], [])
    timings["hash_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    t0 = time.perf_counter()
    motion = motion_signature(video.grey[: mc.max_samples], mc.width, mc.height, crops, box,
                              mc.blur_cells) if video is not None else []
    timings["motion_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    t0 = time.perf_counter()
    embedding = clip_embedding(video.keyframes, box) if video is not None else None
    timings["embed_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return Fingerprint(
        sample_fps=cfg.frames.sample_fps,
        hashes=hashes,
        mirror_hashes=mirrored,
        motion_variants=variant_names(crops) if motion else [],
        motion=motion,
        embedding=embedding,
        keyframes=len(video.keyframes) if video is not None else 0,
        trajectory=trajectory,
        trajectory_rate_hz=cfg.trajectory.rate_hz,
        timings_ms=timings,
        masked_box=box,
        flags=flags,
    )


def fingerprint_bundle(view: BundleView, cfg: NoveltySection) -> tuple[Fingerprint, dict[str, Any]]:
    """Scan the primary video once, run the artifact heuristics on the scan, and
    fingerprint the bundle: ``(fingerprint, artifacts)``. A video that cannot be read
    leaves a trajectory-only fingerprint flagged ``video_<reason_code>`` (earlier gates
    reject such bundles; novelty never crashes on them)."""
    t_start = time.perf_counter()
    flags: tuple[str, ...] = ()
    t0 = time.perf_counter()
    try:
        scan = scan_bundle(view, cfg)
    except BundleError as exc:
        scan, flags = None, (f"video_{exc.reason_code}",)
    timings = {"scan_ms": round((time.perf_counter() - t0) * 1000, 1)}
    t0 = time.perf_counter()
    artifacts = analyze_artifacts(scan, cfg.artifacts)
    # not artifact cues (they never reach artifact_score's hard reject): S_novel's quality
    # and viewpoint compliance (§7.1) and the soft render-likeness of §11
    artifacts["video_quality"] = video_quality(scan, view, cfg.quality)
    artifacts["render_like"] = render_likeness(scan, cfg.render_like)
    timings["artifacts_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    overlay = (artifacts.get("cues", {}).get("static_overlay") or {}).get("overlay")
    t0 = time.perf_counter()
    trajectory = read_trajectory(view, cfg)
    timings["trajectory_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    fp = fingerprint_scan(scan, trajectory, cfg, box=tuple(overlay["box"]) if overlay else None,
                          timings_ms=timings, flags=flags)
    fp.timings_ms["total_ms"] = round((time.perf_counter() - t_start) * 1000, 1)
    return fp, artifacts
