"""Stage ``export``: one directory per clip with ``clip.npz`` and ``metadata.json``
(layout, units and frames in README "XGen (data factory)").

``clip.npz`` holds exactly these arrays (world frame z-up, floor at z = 0, metres,
radians, quaternions wxyz)::

    robot_qpos     (T, 36)  root position (3) + root quaternion (4) + 29 joints (G1 order)
    robot_qvel     (T, 35)  root linear velocity (3, world) + root angular velocity
                            (3, pelvis frame) + 29 joint velocities (MuJoCo convention)
    root_pose      (T, 7)   = robot_qpos[:, :7]
    object_pose    (T, 7)   box centre (3) + quaternion (4)
    contact_graph  (T, 5)   uint8, columns = metadata["contact_pairs"]
    phase          (T,)     int8 index into metadata["phases"]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from kibotos import __version__ as kibotos_version
from kibotos.xgen import g1
from kibotos.xgen.augment import Variant
from kibotos.xgen.config import XGenConfig
from kibotos.xgen.interaction import CONTACT_PAIRS, grasp_in_box
from kibotos.xgen.phases import PHASES
from kibotos.xgen.result import StageResult, run_stage

CLIP_KEYS = ("robot_qpos", "robot_qvel", "root_pose", "object_pose", "contact_graph", "phase")
FORMAT_VERSION = "xgen-clip-1"


@dataclass(frozen=True)
class ExportRequest:
    variants: list[Variant]
    out_dir: Path
    source_sha256: str
    source_kind: str  # "video" or "keypoints"
    uploader: str
    task_id: str
    task_version: str
    annotation: dict[str, Any]
    stage_metrics: dict[str, Any]
    first_index: int = 0  # index of variants[0] among the request's variants (export jobs run one clip each)


def qvel(qpos: np.ndarray, fps: float) -> np.ndarray:
    """(T, 35) finite-difference velocities (forward, last row repeated)."""
    m = g1.model()
    out = np.zeros((len(qpos), m.nv))
    for t in range(len(qpos) - 1):
        mujoco.mj_differentiatePos(m, out[t], 1.0 / fps, qpos[t], qpos[t + 1])
    if len(qpos) > 1:
        out[-1] = out[-2]
    return out


def clip_arrays(variant: Variant, dtype: str) -> dict[str, np.ndarray]:
    c = variant.clip
    return {"robot_qpos": c.qpos.astype(dtype), "robot_qvel": qvel(c.qpos, c.fps).astype(dtype),
            "root_pose": c.qpos[:, :7].astype(dtype), "object_pose": c.object_pose.astype(dtype),
            "contact_graph": c.contact.astype(np.uint8), "phase": c.phase.astype(np.int8)}


def grasp_poses(anchors: np.ndarray, cfg: XGenConfig) -> dict[str, list[float]]:
    out = {}
    for side, mat in zip(g1.SIDES, grasp_in_box(np.asarray(anchors, float), cfg.interaction)):
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, np.ascontiguousarray(mat[:3, :3]).reshape(9))
        out[f"{side}_wrist_yaw_link"] = [round(float(v), 9) for v in (*mat[:3, 3], *quat)]
    return out


def export(req: ExportRequest, cfg: XGenConfig) -> tuple[list[Path], dict]:
    paths = []
    for i, variant in enumerate(req.variants, start=req.first_index):
        clip_id = f"{req.source_sha256[:12]}-{i:02d}-{variant.params['kind']}"
        folder = Path(req.out_dir) / clip_id
        folder.mkdir(parents=True, exist_ok=True)
        arrays = clip_arrays(variant, cfg.export.float_dtype)
        # numpy's stub lets **kwds fall on allow_pickle (bool); every key here names an array
        np.savez_compressed(folder / "clip.npz", **arrays)  # type: ignore[arg-type]
        c = variant.clip
        meta = {
            "format_version": FORMAT_VERSION, "clip_id": clip_id, "source_sha256": req.source_sha256,
            "source_kind": req.source_kind, "uploader": req.uploader, "fps": c.fps, "frames": len(c),
            "robot_model_id": g1.ROBOT_ID, "robot_model_revision": g1.ROBOT_REVISION,
            "joint_names": list(g1.joint_names()), "task_id": req.task_id, "task_version": req.task_version,
            "annotation": req.annotation, "augmentation": variant.params,
            "object": {"kind": "box", "size_m": [float(v) for v in c.box_size], "mass_kg": c.mass_kg,
                       "anchors_box_frame_m": c.anchors.tolist(),
                       # the rigid grasp: each wrist link's pose [x,y,z,qw,qx,qy,qz] in the box frame
                       "grasp": grasp_poses(c.anchors, cfg)},
            "phases": list(PHASES), "contact_pairs": ["-".join(p) for p in CONTACT_PAIRS],
            "hold_frames": {"start": c.hold.start, "lift": c.hold.lift, "carry": c.hold.carry,
                            "place": c.hold.place, "end": c.hold.end},
            "stage_metrics": req.stage_metrics, "config_version": cfg.config_version,
            "code_version": f"kibotos-{kibotos_version}", "mujoco_version": mujoco.__version__,
            "frames_convention": "world z-up, floor z=0, metres, radians, quaternions wxyz",
        }
        (folder / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        paths.append(folder)
    return paths, {"clips": len(paths)}


def run(req: ExportRequest, config: XGenConfig) -> StageResult[list[Path]]:
    return run_stage("export", lambda: export(req, config))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
