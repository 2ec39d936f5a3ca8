""""Slight perturbation" copies of sample episodes: what a duplicate-farming miner might do
to resubmit someone's (or their own) demonstration as new.

Every function returns a new ``Episode`` (``kibotos.synthetic.samples``) with a fresh
``submission_id`` / ``episode_id`` and the given ``miner_id``; write it with
``Episode.write`` (the bundle writer).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from dataclasses import replace

import av
import cv2
import numpy as np

from kibotos.media.video import encode_mp4
from kibotos.robots import RobotModel, get_robot
from kibotos.synthetic.samples import Episode


def decode_all(mp4: bytes) -> np.ndarray:
    """Every frame of an mp4 as (N, H, W, 3) uint8 RGB."""
    with av.open(io.BytesIO(mp4), mode="r") as container:
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


def contrast(gain: float) -> Callable[[np.ndarray], np.ndarray]:
    """Scale each pixel's distance from mid-grey by ``gain`` (> 1: more contrast)."""
    return lambda frames: np.clip((frames.astype(np.float32) - 128.0) * gain + 128.0, 0, 255).astype(np.uint8)


# --- whole-episode transforms: video and kinematics together ----------------------------

def _video_fps(ep: Episode) -> float:
    return float(ep.manifest["video"]["primary"]["fps"])


def speed_changed(ep: Episode, miner_id: str, factor: float, crf: int = 23) -> Episode:
    """``ep`` played ``factor`` times as fast (``factor`` > 1: shorter), video and
    kinematics alike, at the same frame and sampling rates: the copy's time ``t`` shows
    the original's ``factor * t`` (the sync offset scales with it)."""
    fps = _video_fps(ep)
    frames = decode_all(ep.video_mp4)
    n_out = int(np.floor((len(frames) - 1) / factor)) + 1
    idx = np.minimum(np.round(np.arange(n_out) * factor).astype(int), len(frames) - 1)
    mp4 = encode_mp4(frames[idx], fps, crf=crf)
    ts = ep.timestamps_ms.astype(np.float64)
    dt = float(np.median(np.diff(ts)))
    new_ts = np.arange(0.0, (ts[-1] - ts[0]) / factor + 1e-9, dt)
    src = ts[0] + new_ts * factor
    q = np.stack([np.interp(src, ts, ep.joint_pos[:, j]) for j in range(ep.joint_pos.shape[1])], axis=1)
    v = None
    if ep.joint_vel is not None:
        v = factor * np.stack([np.interp(src, ts, ep.joint_vel[:, j]) for j in range(ep.joint_vel.shape[1])], axis=1)
    copy = copy_of(ep, miner_id, video_mp4=mp4, timestamps_ms=np.round(new_ts).astype(np.int64),
                   joint_pos=q.astype(np.float32), joint_vel=None if v is None else v.astype(np.float32))
    sync = dict(copy.manifest.get("sync") or {})
    if "sync_offset_ms_claimed" in sync:
        sync["sync_offset_ms_claimed"] = round(sync["sync_offset_ms_claimed"] / factor, 1)
    return replace(copy, manifest=dict(copy.manifest, sync=sync), true_offset_ms=ep.true_offset_ms / factor)


def trimmed(ep: Episode, miner_id: str, head_ms: float, tail_ms: float, crf: int = 23) -> Episode:
    """``ep`` with its first ``head_ms`` and last ``tail_ms`` cut from the video and the
    kinematics alike (kinematics time restarts at 0; the sync offset is unchanged)."""
    fps = _video_fps(ep)
    frames = decode_all(ep.video_mp4)
    first = int(round(head_ms * fps / 1000.0))
    last = len(frames) - int(round(tail_ms * fps / 1000.0))
    mp4 = encode_mp4(frames[first:last], fps, crf=crf)
    ts = ep.timestamps_ms
    keep = (ts >= ts[0] + head_ms) & (ts <= ts[-1] - tail_ms)
    k0 = int(np.argmax(keep))
    new_ts = ts[keep] - ts[k0]
    return copy_of(ep, miner_id, video_mp4=mp4, timestamps_ms=new_ts, joint_pos=ep.joint_pos[keep],
                   joint_vel=None if ep.joint_vel is None else ep.joint_vel[keep])


# --- honest imperfections of the kinematic stream (not copies: gate E must accept them) --

def noise_scale(robot: RobotModel) -> np.ndarray:
    """(J,) noise per unit level: 1 on revolute joints (radians); on prismatic joints the
    same share of a full turn, of the joint's range (``level / 2 pi * span`` metres)."""
    span = robot.pos_upper - robot.pos_lower
    return np.where([t == "prismatic" for t in robot.joint_types], span / (2 * np.pi), 1.0)


def with_joint_noise(ep: Episode, level_rad: float, seed: int = 7, miner_id: str | None = None) -> Episode:
    """``ep`` with white noise of ``level_rad`` (1 sigma; ``noise_scale`` on prismatic joints)
    added to the joint positions (velocities unchanged), as a new submission. The same
    ``seed`` draws the same noise pattern at every level (a noise ladder)."""
    robot = get_robot(ep.manifest["robot_model_id"], ep.manifest["robot_model_revision"])
    idx = [robot.joint_names.index(n) for n in ep.manifest["joint_names"]]
    z = np.random.default_rng(seed).normal(0.0, 1.0, ep.joint_pos.shape)
    q = ep.joint_pos.astype(np.float64) + z * level_rad * noise_scale(robot)[idx]
    return copy_of(ep, miner_id or ep.manifest["miner_id"], joint_pos=q.astype(np.float32), joint_vel=ep.joint_vel)


def with_dropped_samples(ep: Episode, fraction: float, seed: int = 7) -> Episode:
    """``ep`` without ``fraction`` of its kinematic samples, dropped at scattered single
    instants (never two neighbours, never the first or last), as a new submission."""
    T = len(ep.timestamps_ms)
    rng = np.random.default_rng(seed)
    candidates = np.arange(2, T - 2, 3)  # every third sample at most: no two drops adjacent
    drop = rng.choice(candidates, size=min(len(candidates), int(round(fraction * T))), replace=False)
    keep = np.ones(T, dtype=bool)
    keep[drop] = False
    return copy_of(ep, ep.manifest["miner_id"], timestamps_ms=ep.timestamps_ms[keep], joint_pos=ep.joint_pos[keep],
                   joint_vel=None if ep.joint_vel is None else ep.joint_vel[keep])


def with_timestamp_jitter(ep: Episode, jitter_ms: int, seed: int = 7) -> Episode:
    """``ep`` sampled at instants off the nominal grid by up to ``±jitter_ms`` (uniform,
    whole ms) and honestly time-stamped: each sample holds the position at its own instant
    (cubic Hermite interpolation of the original samples and velocities)."""
    ts = ep.timestamps_ms.astype(np.int64)
    rng = np.random.default_rng(seed)
    new_ts = ts + rng.integers(-jitter_ms, jitter_ms + 1, ts.shape)
    new_ts[0], new_ts[-1] = ts[0], ts[-1]
    new_ts = np.maximum.accumulate(new_ts)
    new_ts[1:] = np.maximum(new_ts[1:], new_ts[:-1] + 1)  # strictly increasing
    t = ts.astype(np.float64) / 1000.0
    q = ep.joint_pos.astype(np.float64)
    v = ep.joint_vel.astype(np.float64) if ep.joint_vel is not None else np.gradient(q, t, axis=0)
    x = new_ts.astype(np.float64) / 1000.0
    k = np.clip(np.searchsorted(t, x, side="right") - 1, 0, len(t) - 2)
    h = (t[k + 1] - t[k])[:, None]
    s = ((x - t[k])[:, None]) / h
    h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
    qj = h00 * q[k] + h10 * h * v[k] + h01 * q[k + 1] + h11 * h * v[k + 1]
    vj = None if ep.joint_vel is None else np.stack(
        [np.interp(x, t, v[:, j]) for j in range(v.shape[1])], axis=1).astype(np.float32)
    return copy_of(ep, ep.manifest["miner_id"], timestamps_ms=new_ts, joint_pos=qj.astype(np.float32), joint_vel=vj)


def spliced(ep: Episode, other: Episode, at_fraction: float = 0.5) -> Episode:
    """``ep``'s joints up to ``at_fraction`` of its samples, then ``other``'s (same robot and
    clock) from there on: two recordings glued into one (``ep``'s video is kept)."""
    if other.joint_pos.shape != ep.joint_pos.shape:
        raise ValueError(f"splice of {ep.joint_pos.shape} and {other.joint_pos.shape} joint streams")
    k = int(round(at_fraction * len(ep.timestamps_ms)))
    q = np.concatenate([ep.joint_pos[:k], other.joint_pos[k:len(ep.joint_pos)]])
    v = None
    if ep.joint_vel is not None and other.joint_vel is not None:
        v = np.concatenate([ep.joint_vel[:k], other.joint_vel[k:len(ep.joint_vel)]])
    return copy_of(ep, ep.manifest["miner_id"], joint_pos=q, joint_vel=v)
