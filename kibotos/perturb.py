""""Slight perturbation" copies of sample episodes: what a duplicate-farming miner might do
to resubmit someone's (or their own) demonstration as new.

Every function returns a new ``Episode`` (``kibotos.samples``) with a fresh
``submission_id`` / ``episode_id`` and the given ``miner_id``; write it with
``Episode.write`` (the bundle writer).
"""

from __future__ import annotations

import io
import uuid
from dataclasses import replace
from typing import Callable

import av
import cv2
import numpy as np

from kibotos.samples import Episode
from kibotos.video import encode_mp4


def decode_all(mp4: bytes) -> np.ndarray:
    """Every frame of an mp4 as (N, H, W, 3) uint8 RGB."""
    with av.open(io.BytesIO(mp4)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def copy_of(ep: Episode, miner_id: str, *, video: Callable[[np.ndarray], np.ndarray] | None = None,
            crf: int = 23, timestamps_ms: np.ndarray | None = None, joint_pos: np.ndarray | None = None,
            joint_vel: np.ndarray | None = None, video_mp4: bytes | None = None) -> Episode:
    """A copy of ``ep`` as a new submission: ``video`` maps the decoded frames (then
    re-encoded at ``crf``), or ``video_mp4`` replaces the video outright; kinematics as given."""
    mp4 = video_mp4 if video_mp4 is not None else ep.video_mp4
    if video is not None:
        frames = video(decode_all(ep.video_mp4))
        mp4 = encode_mp4(frames, ep.manifest["video"]["primary"]["fps"], crf=crf)
    ts = ep.timestamps_ms if timestamps_ms is None else timestamps_ms
    q = ep.joint_pos if joint_pos is None else joint_pos
    v = ep.joint_vel if joint_vel is None and joint_pos is None else joint_vel
    manifest = dict(ep.manifest, submission_id=str(uuid.uuid4()), episode_id=str(uuid.uuid4()), miner_id=miner_id)
    if mp4 is not ep.video_mp4:
        try:
            frame_count = len(decode_all(mp4))
        except av.error.FFmpegError:  # a deliberately broken video keeps the declared count
            frame_count = ep.manifest["video"]["primary"]["frame_count"]
        manifest["video"] = {"primary": dict(ep.manifest["video"]["primary"], frame_count=frame_count)}
    extra = {} if timestamps_ms is not None else ep.extra_arrays
    return replace(ep, manifest=manifest, timestamps_ms=ts, joint_pos=q, joint_vel=v, video_mp4=mp4,
                   extra_arrays=extra, array_attributes={} if not extra else ep.array_attributes)


# --- video transforms: (N, H, W, 3) uint8 -> (N, H', W', 3) uint8 -----------------------

def crop(fraction: float, dx: float = 0.0) -> Callable[[np.ndarray], np.ndarray]:
    """Keep the centre ``fraction`` of width and height (shifted by ``dx`` of the width),
    scaled back up to the original size."""

    def apply(frames: np.ndarray) -> np.ndarray:
        h, w = frames.shape[1:3]
        ch, cw = round(h * fraction), round(w * fraction)
        y0, x0 = (h - ch) // 2, (w - cw) // 2 + round(dx * w)
        return np.stack([cv2.resize(f[y0: y0 + ch, x0: x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)
                         for f in frames])

    return apply


def brightness(delta: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda frames: np.clip(frames.astype(np.int16) + delta, 0, 255).astype(np.uint8)


def mirror(frames: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frames[:, :, ::-1])


def identity(frames: np.ndarray) -> np.ndarray:
    return frames


def burn_logo(text: str = "DEMO-CAM", corner: str = "top_right") -> Callable[[np.ndarray], np.ndarray]:
    """A high-contrast text logo (white on a dark plate) burned into every frame."""

    def apply(frames: np.ndarray) -> np.ndarray:
        out = frames.copy()
        h, w = frames.shape[1:3]
        scale = w / 640
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        pad = max(2, round(6 * scale))
        x = w - tw - 3 * pad if corner.endswith("right") else 2 * pad
        y = 2 * pad + th if corner.startswith("top") else h - 2 * pad
        for f in out:
            cv2.rectangle(f, (x - pad, y - th - pad), (x + tw + pad, y + pad), (20, 20, 20), -1)
            cv2.putText(f, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (250, 250, 250), 2, cv2.LINE_AA)
        return out

    return apply


def moire(period_px: float = 3.7, angle_deg: float = 27.0, amplitude: float = 0.12) -> Callable[[np.ndarray], np.ndarray]:
    """A fine sinusoidal interference pattern multiplied into every frame, as filming a
    screen leaves it."""

    def apply(frames: np.ndarray) -> np.ndarray:
        h, w = frames.shape[1:3]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = np.radians(angle_deg)
        pattern = 1.0 + amplitude * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period_px)
        return np.clip(frames.astype(np.float32) * pattern[None, :, :, None], 0, 255).astype(np.uint8)

    return apply


# --- trajectory transforms -------------------------------------------------------------

def shifted_trajectory(ep: Episode, shift_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """The same motion starting ``shift_ms`` later: the first ``shift_ms`` are cut off and
    the last pose held for as long at the end (timestamps unchanged)."""
    ts = ep.timestamps_ms
    k = int(np.searchsorted(ts, ts[0] + shift_ms))
    q = np.concatenate([ep.joint_pos[k:], np.repeat(ep.joint_pos[-1:], k, axis=0)])
    return ts.copy(), q.astype(np.float32)


def noisy_trajectory(ep: Episode, sigma: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (ep.joint_pos + rng.normal(0.0, sigma, ep.joint_pos.shape)).astype(np.float32)
