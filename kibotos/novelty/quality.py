"""Video quality, viewpoint compliance and render-likeness of the primary video: the
non-duplication parts of ``S_novel`` (design §7.1: "novelty/duplication score + video
quality/viewpoint compliance") and the "render-of-render" heuristic of §11.

**Quality** ``quality`` in [0, 1] is the geometric mean of four terms, each a ramp
between two config values (``novelty.quality``):

* ``sharpness`` — median variance of the Laplacian of full-resolution grey frames
  (a defocused or motion-smeared video has almost none);
* ``exposure`` — 1 minus the ramp of the fraction of clipped pixels (grey <= 3 or >= 252);
* ``resolution`` — the shorter image side;
* ``viewpoint`` — the protocol's "camera aligned to the task, clear viewpoint" (§3): the
  fraction of sampled kinematic instants at which the end effectors (the robot's links
  when it has none), placed by the submitted joints, lie in front of the declared camera
  and inside its image. A camera that looks away from the work earns ~0.

**Render-likeness** (``render_like``): rendered frames carry no sensor noise and little
fine texture. ``noise_sigma`` is Immerkær's estimate of the white-noise level (grey
levels) of full-resolution frames, ``texture`` the Laplacian variance; the strength is the
geometric mean of ``1 - ramp(noise_sigma)`` and ``1 - ramp(texture)``. Its ``confidence``
is the share of frames agreeing with the verdict times the share of the wanted frames
measured; a hard compression can erase a real camera's noise, so this is never a reject:
the report carries it, the flag ``render_like_video`` is raised at ``flag_strength`` and
``s_novel`` loses at most ``penalties.render_like`` x strength x confidence. The sample
generator's robot videos are renders and score as such (measured noise 0.36 grey levels,
texture 41; videos of photographs 1.2-1.4 and 550-830).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from kibotos.bundle.reader import JOINT_POS, TIMESTAMPS, BundleView
from kibotos.errors import BundleError
from kibotos.novelty.config import QualityConfig, RenderLikeConfig
from kibotos.novelty.scan import VideoScan

_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def ramp(x: float, lo: float, hi: float) -> float:
    """0 at or below ``lo``, 1 at or above ``hi``, linear between."""
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def noise_sigma(grey: np.ndarray) -> float:
    """Immerkær (1996) white-noise standard deviation of one grey frame, in grey levels:
    the mask cancels planes and smooth gradients and leaves the noise."""
    f = grey.astype(np.float32)
    if min(f.shape) < 3:
        return float("nan")
    res = cv2.filter2D(f, -1, _IMMERKAER)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2.0) * np.abs(res).mean() / 6.0)


def texture(grey: np.ndarray) -> float:
    """Variance of the Laplacian of one grey frame (fine detail and focus)."""
    return float(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F).var())


def _frames(scan: VideoScan) -> list[np.ndarray]:
    return list(scan.full_grey) or [f for f in scan.grey[:4]]


def viewpoint_fraction(view: BundleView, width: int, height: int, max_samples: int) -> tuple[float | None, str]:
    """Share of (up to ``max_samples``) kinematic samples whose end effectors project into
    the declared camera's image (in front of it), and what was projected. None when the
    kinematics or the robot cannot be read (earlier gates reject such bundles)."""
    from kibotos.media.camera import project_points
    from kibotos.robots import get_robot
    from kibotos.robots.kinematics import kinematics_for

    try:
        m = view.manifest
        robot = get_robot(m.robot_model_id, m.robot_model_revision)
        ts, q_in = view.read(TIMESTAMPS), view.read(JOINT_POS).astype(np.float64)
    except (BundleError, KeyError, ValueError):
        return None, "unreadable"
    names = [n for n in m.joint_names if n in robot.joint_names]
    if q_in.ndim != 2 or q_in.shape[0] != len(ts) or q_in.shape[1] != len(m.joint_names) or not names \
            or not np.isfinite(q_in).all():
        return None, "unreadable"
    idx = np.unique(np.linspace(0, len(ts) - 1, min(max_samples, len(ts))).round().astype(int))
    q = np.tile(robot.home_qpos, (len(idx), 1))
    q[:, [robot.joint_names.index(n) for n in names]] = q_in[idx][:, [m.joint_names.index(n) for n in names]]
    links = tuple(robot.end_effector_links) or None
    pts = kinematics_for(robot.model_id, robot.revision).link_positions(q, links)  # (N, L, 3)
    cam = m.camera["primary"]
    cam_to_world = np.asarray(cam.extrinsics, dtype=np.float64)
    world_to_cam = np.linalg.inv(cam_to_world)
    depth = pts @ world_to_cam[2, :3] + world_to_cam[2, 3]
    intr = cam.intrinsics.model_dump()
    sx, sy = width / cam.intrinsics.width, height / cam.intrinsics.height
    pix = project_points(pts, intr, cam_to_world) * np.array([sx, sy])
    inside = (depth > 1e-3) & (pix[..., 0] >= 0) & (pix[..., 0] < width) & (pix[..., 1] >= 0) & (pix[..., 1] < height)
    return float(inside.all(axis=1).mean()), "end_effectors" if links else "links"


def video_quality(scan: VideoScan | None, view: BundleView | None, cfg: QualityConfig) -> dict:
    """The quality terms of the primary video and their geometric mean ``quality``."""
    if scan is None or len(scan.grey) == 0:
        return {"applicable": False, "reason": "no readable video", "quality": None}
    frames = _frames(scan)
    sharp = float(np.median([texture(f) for f in frames]))
    grey = scan.grey.astype(np.int16)
    clipped = float(((grey <= 3) | (grey >= 252)).mean())
    side = min(scan.width, scan.height)
    terms = {"sharpness": ramp(sharp, cfg.sharpness_lo, cfg.sharpness_hi),
             "exposure": 1.0 - ramp(clipped, cfg.clipped_lo, cfg.clipped_hi),
             "resolution": ramp(side, cfg.min_side_lo, cfg.min_side_hi)}
    seen, what = (viewpoint_fraction(view, scan.width, scan.height, cfg.viewpoint_samples)
                  if view is not None else (None, "no bundle"))
    if seen is not None:
        terms["viewpoint"] = ramp(seen, cfg.viewpoint_lo, cfg.viewpoint_hi)
    quality = float(np.prod([max(t, 1e-6) for t in terms.values()]) ** (1.0 / len(terms)))
    return {"applicable": True, "quality": _r(quality), "terms": {k: _r(v) for k, v in terms.items()},
            "laplacian_var": _r(sharp, 2), "clipped_fraction": _r(clipped), "min_side_px": side,
            "in_view_fraction": _r(seen), "viewpoint_of": what}


def render_likeness(scan: VideoScan | None, cfg: RenderLikeConfig) -> dict:
    """How much the primary video looks rendered: ``{strength, confidence, ...}``."""
    if scan is None or len(scan.grey) == 0:
        return {"applicable": False, "strength": 0.0, "confidence": 0.0}
    frames = _frames(scan)
    sig = np.array([noise_sigma(f) for f in frames])
    tex = np.array([texture(f) for f in frames])
    ok = np.isfinite(sig)
    if not ok.any():
        return {"applicable": False, "strength": 0.0, "confidence": 0.0}
    sig, tex = sig[ok], tex[ok]
    per_frame = np.sqrt((1.0 - np.clip((sig - cfg.noise_lo) / (cfg.noise_hi - cfg.noise_lo), 0, 1))
                        * (1.0 - np.clip((tex - cfg.texture_lo) / (cfg.texture_hi - cfg.texture_lo), 0, 1)))
    strength = float(np.sqrt((1.0 - ramp(float(np.median(sig)), cfg.noise_lo, cfg.noise_hi))
                             * (1.0 - ramp(float(np.median(tex)), cfg.texture_lo, cfg.texture_hi))))
    verdict = strength >= 0.5
    agree = float(np.mean((per_frame >= 0.5) == verdict))
    confidence = agree * min(1.0, len(sig) / cfg.frames)
    return {"applicable": True, "strength": _r(strength), "confidence": _r(confidence),
            "noise_sigma": _r(float(np.median(sig)), 3), "texture": _r(float(np.median(tex)), 1),
            "frames": int(len(sig))}
