"""Stage ``augment``: variants of one interaction clip, each a clip with its parameters.

- ``size``: box scaled (width, height, depth); the box still rests on the floor, so it
  rides higher in the hands by half the height change; palms re-solved onto the new faces.
- ``yaw``: the box turned about its vertical axis while held; palms re-solved.
- ``mass``: recorded for simulation (a kinematic clip does not change with mass).
- ``speed``: the clip resampled in time (quaternions interpolated on the sphere).
- ``mirror``: left and right exchanged (y -> -y, left/right joints swapped, roll and yaw
  joints negated).
- ``base_offset``: the whole scene moved (dx, dy) and turned (dyaw) on the floor.

Re-solved variants must keep the palms on the faces and the box out of the floor and
torso, or they are dropped with their reason code in the metrics. Fewer valid clips than
``augment.min_clips`` => ``xgen_too_few_clips``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kibotos.xgen import g1
from kibotos.xgen.config import XGenConfig
from kibotos.xgen.interaction import (
    Hold,
    InteractionClip,
    _mat,
    anchors_for,
    box_bottom,
    contact_graph,
    face_distances,
    refine,
)
from kibotos.xgen.result import StageResult, XGenError, run_stage


@dataclass(frozen=True)
class Variant:
    clip: InteractionClip
    params: dict[str, Any]


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = np.moveaxis(a, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(b, -1, 0)
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], axis=-1)


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def _resolve(clip: InteractionClip, box: np.ndarray, size: np.ndarray, cfg: XGenConfig) -> InteractionClip:
    """Palms re-solved onto a changed box; refused like the interaction stage refuses."""
    ic = cfg.interaction
    kin = g1.Kin()
    anchors = anchors_for(size)
    h = clip.hold
    qpos = refine(clip.qpos, box, anchors, range(h.start, h.end + 1), ic, clip.fps)
    held = slice(h.start, h.end + 1)
    dist = face_distances(kin, qpos[held], box[held], anchors)
    if dist.max() > ic.max_face_distance_m:
        raise XGenError(f"palms {dist.max():.3f} m off the faces", reason_code="xgen_grasp_unreachable")
    if kin.box_torso_distance(qpos[held], box[held], size).min() < 0.0:
        raise XGenError("box enters the torso", reason_code="xgen_box_collides_robot")
    if box_bottom(box, size).min() < -0.01:
        raise XGenError("box enters the floor", reason_code="xgen_box_in_ground")
    contact = contact_graph(kin, qpos, box, size, h, anchors, ic)
    return replace(clip, qpos=qpos, object_pose=box, box_size=size, anchors=anchors, contact=contact)


def scale_box(clip: InteractionClip, scale: float, cfg: XGenConfig) -> InteractionClip:
    size = clip.box_size * scale
    box = clip.object_pose.copy()
    box[:, 2] += (size[2] - clip.box_size[2]) / 2
    return _resolve(clip, box, size, cfg)


def turn_box(clip: InteractionClip, yaw_deg: float, cfg: XGenConfig) -> InteractionClip:
    box = clip.object_pose.copy()
    box[:, 3:] = _quat_mul(box[:, 3:], _yaw_quat(np.deg2rad(yaw_deg)))
    return _resolve(clip, box, clip.box_size.copy(), cfg)


def _interp_pose(x: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Linear for positions/joints (columns other than 3:7), normalised-linear on the
    sphere (sign-aligned) for the quaternion in columns 3:7."""
    out = np.stack([np.interp(dst, src, x[:, j]) for j in range(x.shape[1])], axis=1)
    q = x[:, 3:7].copy()
    for t in range(1, len(q)):
        if np.dot(q[t], q[t - 1]) < 0:
            q[t] = -q[t]
    qi = np.stack([np.interp(dst, src, q[:, j]) for j in range(4)], axis=1)
    out[:, 3:7] = qi / np.linalg.norm(qi, axis=1, keepdims=True)
    return out


def change_speed(clip: InteractionClip, speed: float) -> InteractionClip:
    n = len(clip)
    m = int(round((n - 1) / speed)) + 1
    src = np.arange(n, dtype=float)
    dst = np.minimum(np.arange(m) * speed, n - 1)
    nearest = np.rint(dst).astype(int)
    h = clip.hold
    scale = lambda i: int(round(i / speed))  # noqa: E731
    hold = Hold(start=scale(h.start), lift=scale(h.lift), carry=scale(h.carry), place=scale(h.place),
                end=min(scale(h.end), m - 1))
    return replace(clip, qpos=_interp_pose(clip.qpos, src, dst), object_pose=_interp_pose(clip.object_pose, src, dst),
                   phase=clip.phase[nearest], contact=clip.contact[nearest], hold=hold)


def _mirror_map() -> tuple[np.ndarray, np.ndarray]:
    names = g1.joint_names()
    perm = np.array([names.index(n.replace("left_", "@").replace("right_", "left_").replace("@", "right_"))
                     for n in names])
    sign = np.array([-1.0 if ("roll" in n or "yaw" in n) else 1.0 for n in names])
    return perm, sign


def mirror(clip: InteractionClip) -> InteractionClip:
    perm, sign = _mirror_map()
    q = clip.qpos.copy()
    q[:, 1] = -q[:, 1]
    q[:, 3:7] = q[:, 3:7] * np.array([1.0, -1.0, 1.0, -1.0])
    q[:, 7:] = clip.qpos[:, 7:][:, perm] * sign
    box = clip.object_pose.copy()
    box[:, 1] = -box[:, 1]
    box[:, 3:7] = box[:, 3:7] * np.array([1.0, -1.0, 1.0, -1.0])
    contact = clip.contact[:, [1, 0, 2, 4, 3]]
    return replace(clip, qpos=q, object_pose=box, contact=contact)


def offset_base(clip: InteractionClip, dx: float, dy: float, dyaw: float) -> InteractionClip:
    rot = _mat(_yaw_quat(dyaw))
    shift = np.array([dx, dy, 0.0])
    q = clip.qpos.copy()
    q[:, :3] = clip.qpos[:, :3] @ rot.T + shift
    q[:, 3:7] = _quat_mul(_yaw_quat(dyaw), clip.qpos[:, 3:7])
    box = clip.object_pose.copy()
    box[:, :3] = clip.object_pose[:, :3] @ rot.T + shift
    box[:, 3:7] = _quat_mul(_yaw_quat(dyaw), clip.object_pose[:, 3:7])
    return replace(clip, qpos=q, object_pose=box)


def augment(clip: InteractionClip, cfg: XGenConfig) -> tuple[list[Variant], dict]:
    ac = cfg.augment
    jobs: list[tuple[dict[str, Any], Any]] = [({"kind": "base"}, lambda: clip)]
    jobs += [({"kind": "size", "scale": s}, lambda s=s: scale_box(clip, s, cfg)) for s in ac.size_scales]
    jobs += [({"kind": "yaw", "yaw_deg": y}, lambda y=y: turn_box(clip, y, cfg)) for y in ac.yaw_offsets_deg]
    jobs += [({"kind": "mass", "mass_kg": m}, lambda m=m: replace(clip, mass_kg=m)) for m in ac.masses_kg]
    jobs += [({"kind": "speed", "speed": v}, lambda v=v: change_speed(clip, v)) for v in ac.speeds]
    if ac.mirror:
        jobs.append(({"kind": "mirror"}, lambda: mirror(clip)))
    jobs += [({"kind": "base_offset", "dx_m": o[0], "dy_m": o[1], "dyaw_rad": o[2]},
              lambda o=o: offset_base(clip, *o)) for o in ac.base_offsets_m]
    variants, dropped = [], []
    for params, make in jobs:
        try:
            variant = make()
        except XGenError as exc:
            dropped.append({**params, "reason_code": exc.reason_code})
            continue
        variants.append(Variant(clip=variant, params={**params, "mass_kg": variant.mass_kg,
                                                      "box_size_m": [float(v) for v in variant.box_size]}))
    metrics = {"variants": len(variants), "dropped": dropped}
    if len(variants) < ac.min_clips:
        raise XGenError(f"{len(variants)} valid clips, fewer than {ac.min_clips}", reason_code="xgen_too_few_clips",
                        metrics=metrics)
    return variants, metrics


def run(clip: InteractionClip, config: XGenConfig) -> StageResult[list[Variant]]:
    return run_stage("augment", lambda: augment(clip, config))
