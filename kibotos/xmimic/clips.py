"""XGen clips as XMimic reads them (``clip.npz`` + ``metadata.json``, layout in README
"XGen (data factory)"), the reference quantities computed once per clip (palm and key-body
positions by forward kinematics) and the held-out variants GSR is measured on.

A clip that cannot be used is refused with ``XMimicError`` and a reason code, never a
traceback: ``xmimic_clips_missing`` (no clip folder), ``xmimic_clip_invalid`` (missing or
malformed arrays / metadata)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kibotos.errors import KibotosError
from kibotos.xgen import g1
from kibotos.xgen.export import CLIP_KEYS

KEY_BODIES = ("left_palm", "right_palm", "left_elbow_link", "right_elbow_link")  # sites first, then bodies
N_JOINTS = 29


class XMimicError(KibotosError):
    reason_code = "xmimic_error"


@dataclass
class Clip:
    clip_id: str
    fps: float
    qpos: np.ndarray          # (T, 36)
    qvel: np.ndarray          # (T, 35)
    object_pose: np.ndarray   # (T, 7) box centre + wxyz
    contact: np.ndarray       # (T, 5) uint8 (metadata contact_pairs order)
    phase: np.ndarray         # (T,)
    box_size: np.ndarray      # (3,) full extents, box frame
    mass_kg: float
    hold: dict
    variant: dict = field(default_factory=dict)  # held-out variant parameters ({} for a training clip)
    key_body_pos: np.ndarray | None = None       # (T, K, 3) reference, world
    # (T, 2, 3) the reference's palms in the reference box's frame: the hand-box relation the
    # relative reward and the success bound track. None: computed from the two trajectories;
    # a held-out variant keeps its source clip's relation (scaled with the box), since its
    # reference body motion is not moved with the box (see ``variant``).
    palms_in_box: np.ndarray | None = None

    def palm_relation(self) -> np.ndarray:
        """(T, 2, 3) the reference palms in the reference box frame (``palms_in_box``)."""
        if self.palms_in_box is not None:
            return self.palms_in_box
        if self.key_body_pos is None:
            raise XMimicError(f"clip {self.clip_id}: no key-body positions", reason_code="xmimic_clip_invalid")
        return quat_rotate_inverse_np(self.object_pose[:, None, 3:], self.key_body_pos[:, :2] - self.object_pose[:, None, :3])

    @property
    def frames(self) -> int:
        return len(self.qpos)

    def episode_frames(self, end: str) -> int:
        """Frames an episode covers: up to the end of carry (the box lifted) or the whole clip."""
        if end == "carry_end":
            return int(min(max(self.hold.get("place", self.frames), 2), self.frames))
        return self.frames

    @property
    def name(self) -> str:
        if not self.variant:
            return self.clip_id
        return self.clip_id + "@" + ",".join(f"{k}={v}" for k, v in sorted(self.variant.items()))


def _invalid(folder: Path, why: str) -> XMimicError:
    return XMimicError(f"clip {folder.name}: {why}", reason_code="xmimic_clip_invalid")


def load_clip(folder: Path) -> Clip:
    folder = Path(folder)
    try:
        meta = json.loads((folder / "metadata.json").read_text())
        with np.load(folder / "clip.npz") as z:
            arrays = {k: np.asarray(z[k]) for k in CLIP_KEYS if k in z}
    except (OSError, ValueError) as exc:
        raise _invalid(folder, f"unreadable ({exc})") from exc
    missing = [k for k in CLIP_KEYS if k not in arrays]
    if missing:
        raise _invalid(folder, f"clip.npz lacks {missing}")
    qpos = arrays["robot_qpos"].astype(np.float64)
    n = len(qpos)
    shapes = {"robot_qpos": (n, 7 + N_JOINTS), "robot_qvel": (n, 6 + N_JOINTS), "object_pose": (n, 7),
              "contact_graph": (n, 5), "phase": (n,)}
    for k, shape in shapes.items():
        if arrays[k].shape != shape:
            raise _invalid(folder, f"{k} has shape {arrays[k].shape}, expected {shape}")
    if n < 10 or not all(np.isfinite(arrays[k]).all() for k in ("robot_qpos", "robot_qvel", "object_pose")):
        raise _invalid(folder, "fewer than 10 frames or non-finite values")
    try:
        obj = meta["object"]
        size = np.asarray(obj["size_m"], float)
        mass = float(obj["mass_kg"])
        fps = float(meta["fps"])
        hold = {k: int(v) for k, v in meta["hold_frames"].items()}
        if list(meta["joint_names"]) != list(g1.joint_names()):
            raise _invalid(folder, "joint_names differ from the G1's")
    except (KeyError, TypeError, ValueError) as exc:
        raise _invalid(folder, f"metadata.json: {exc!r}") from exc
    if size.shape != (3,) or (size <= 0).any() or mass <= 0 or fps <= 0:
        raise _invalid(folder, "box size, mass or fps not positive")
    clip = Clip(clip_id=str(meta.get("clip_id", folder.name)), fps=fps, qpos=qpos,
                qvel=arrays["robot_qvel"].astype(np.float64), object_pose=arrays["object_pose"].astype(np.float64),
                contact=arrays["contact_graph"].astype(np.uint8), phase=arrays["phase"].astype(np.int64),
                box_size=size, mass_kg=mass, hold=hold)
    clip.key_body_pos = key_body_positions(clip.qpos)
    return clip


def load_clips(directory: Path) -> list[Clip]:
    """Every clip folder under ``directory`` (sorted by name)."""
    directory = Path(directory)
    folders = sorted(p.parent for p in directory.glob("*/clip.npz")) if directory.is_dir() else []
    if (directory / "clip.npz").is_file():
        folders = [directory]
    if not folders:
        raise XMimicError(f"no XGen clips (*/clip.npz) under {directory}", reason_code="xmimic_clips_missing")
    return [load_clip(f) for f in folders]


def key_body_positions(qpos: np.ndarray) -> np.ndarray:
    kin = g1.Kin()
    sites = kin.sites(qpos, KEY_BODIES[:2])
    bodies = kin.body_positions(qpos, KEY_BODIES[2:])
    return np.concatenate([sites, bodies], axis=1)


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = np.moveaxis(a, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(b, -1, 0)
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], -1)


def nlerp(q0: np.ndarray, q1: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Normalised linear interpolation of unit quaternions (..., 4) at fractions ``a``, the
    shorter way round."""
    q1 = np.where((q0 * q1).sum(-1, keepdims=True) < 0, -q1, q1)
    q = (1 - a) * q0 + a * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_rotate_inverse_np(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors ``v`` (..., 3) by the inverse of unit quaternions ``q`` (..., 4, wxyz; broadcast)."""
    q = np.broadcast_to(q, v.shape[:-1] + (4,))
    w, xyz = q[..., :1], -q[..., 1:]
    t = 2.0 * np.cross(xyz, v)
    return v + w * t + np.cross(xyz, t)


def variant(clip: Clip, *, size_scale: float = 1.0, offset_xy: tuple[float, float] = (0.0, 0.0),
            yaw_deg: float = 0.0) -> Clip:
    """The same reference body motion with a different box: scaled (resting on the floor,
    so its centre rises or sinks by half the height change), moved in the plane, or turned
    about its vertical axis. The reference box trajectory moves with it; the reference
    robot motion does not (the policy has to adapt). The hand-box relation the policy is
    rewarded and judged on is the source clip's, in the box frame, scaled with the box:
    the reference palms, left where they were, would sit 6 cm off a moved box or inside a
    1.45x one, and tracking them would mean not holding the box."""
    relation = clip.palm_relation() * size_scale
    obj = clip.object_pose.copy()
    size = clip.box_size * size_scale
    obj[:, 2] += (size[2] - clip.box_size[2]) / 2
    obj[:, 0] += offset_xy[0]
    obj[:, 1] += offset_xy[1]
    if yaw_deg:
        obj[:, 3:] = quat_mul(_yaw_quat(math.radians(yaw_deg))[None], obj[:, 3:])
    params: dict[str, Any] = {}
    if size_scale != 1.0:
        params["size_scale"] = size_scale
    if any(offset_xy):
        params["offset_m"] = f"{offset_xy[0]:+.2f}/{offset_xy[1]:+.2f}"
    if yaw_deg:
        params["yaw_deg"] = yaw_deg
    return dataclasses.replace(clip, object_pose=obj, box_size=size, variant=params, palms_in_box=relation)


def resample(clip: Clip, fps: float) -> Clip:
    """The clip at another frame rate: the same motion over the same duration. Positions and
    velocities are interpolated linearly, the root's and the box's orientation by normalised
    lerp, the contact graph and phase taken from the nearest frame, the hold frames rescaled
    and the key bodies recomputed. The environment plays every clip at one control rate
    (config ``sim.control_fps``); without this a 25 fps clip would play 20 % fast at 30 Hz."""
    if abs(clip.fps - fps) < 1e-9:
        return clip
    duration = (clip.frames - 1) / clip.fps
    n = int(math.floor(duration * fps + 1e-6)) + 1
    src = np.arange(n) * (clip.fps / fps)               # fractional source frame of each new frame
    i0 = np.minimum(np.floor(src).astype(int), clip.frames - 1)
    i1 = np.minimum(i0 + 1, clip.frames - 1)
    a = (src - i0)[:, None]
    nearest = np.minimum(np.rint(src).astype(int), clip.frames - 1)

    def lin(x: np.ndarray) -> np.ndarray:
        w = a.reshape((n,) + (1,) * (x.ndim - 1))
        return (1 - w) * x[i0] + w * x[i1]

    qpos, obj = lin(clip.qpos), lin(clip.object_pose)
    qpos[:, 3:7] = nlerp(clip.qpos[i0, 3:7], clip.qpos[i1, 3:7], a)
    obj[:, 3:] = nlerp(clip.object_pose[i0, 3:], clip.object_pose[i1, 3:], a)
    scale = fps / clip.fps
    return dataclasses.replace(
        clip, fps=float(fps), qpos=qpos, qvel=lin(clip.qvel), object_pose=obj, contact=clip.contact[nearest],
        phase=clip.phase[nearest], hold={k: int(round(v * scale)) for k, v in clip.hold.items()},
        key_body_pos=key_body_positions(qpos) if clip.key_body_pos is not None else None,
        palms_in_box=lin(clip.palms_in_box) if clip.palms_in_box is not None else None)


def heldout_variants(clips: list[Clip], heldout) -> list[Clip]:
    """GSR's clips: every training clip under each held-out box change (config eval.heldout)."""
    out = []
    for c in clips[:heldout.max_source_clips]:
        out += [variant(c, size_scale=s) for s in heldout.size_scales]
        out += [variant(c, offset_xy=tuple(o)) for o in heldout.offsets_m]
        out += [variant(c, yaw_deg=y) for y in heldout.yaw_deg]
    return out
