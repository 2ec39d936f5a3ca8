"""Export to the HumanX clip format: one directory per episode with ``clip.npz`` and
``metadata.json`` (the XGen clip layout, ``kibotos.xgen.export``, format ``xgen-clip-1``).

``clip.npz`` arrays (T = kinematic samples; quaternions wxyz, radians, metres)::

    robot_qpos     (T, 7 + J)  root position (3) + root quaternion (4) + J joints
    robot_qvel     (T, 6 + J)  root linear + angular velocity (6) + J joint velocities
    root_pose      (T, 7)      = robot_qpos[:, :7]
    object_pose    (T, 7)      the first object's pose on the kinematic clock; NaN when the
                               bundle has no object stream (metadata "object": null)
    contact_graph  (T, K)      uint8, columns = metadata["contact_pairs"] ("<link>-<object>")
    phase          (T,)        int8 index into metadata["phases"]

A submission bundle of a fixed-base arm has no root motion: its root is the robot base
frame (identity pose, zero velocity) and the object pose is in that frame, as recorded.
Bundles carry no phase labels: ``phase`` is 0 = ``unlabelled``. A verified XGen clip is
already in this format: its ``clip.npz`` is copied byte for byte and its metadata is
kept, with the ``kibotos`` block added. ``metadata["kibotos"]`` is the dataset episode
(submission id, miner, reward, S and components, soft flags, evidence URIs, attribution).

Files are written deterministically (fixed zip timestamps, sorted JSON), so exporting the
same version twice gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from kibotos.export.bundle_frames import BundleEpisode, read_bundle
from kibotos.xgen.export import CLIP_KEYS, FORMAT_VERSION

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fixed member timestamps (byte-reproducible)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in CLIP_KEYS:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def clip_arrays(ep: BundleEpisode) -> dict[str, np.ndarray]:
    t = len(ep.timestamps_ms)
    root = np.tile(np.array([0, 0, 0, 1, 0, 0, 0], np.float64), (t, 1))
    dt = np.diff(ep.timestamps_ms).mean() / 1000.0 if t > 1 else 1.0
    vel = ep.joint_vel if ep.joint_vel is not None else (
        np.gradient(ep.joint_pos, dt, axis=0) if t > 1 else np.zeros_like(ep.joint_pos))
    obj = ep.object_pose if ep.object_pose is not None else np.full((t, 7), np.nan)
    contact = np.stack([ep.contacts[k] for k in sorted(ep.contacts)], axis=1) if ep.contacts else \
        np.zeros((t, 0), np.uint8)
    qpos = np.concatenate([root, ep.joint_pos], axis=1)
    return {"robot_qpos": qpos.astype(np.float32), "robot_qvel": np.concatenate([np.zeros((t, 6)), vel], 1).astype(np.float32),
            "root_pose": root.astype(np.float32), "object_pose": obj.astype(np.float32),
            "contact_graph": contact.astype(np.uint8), "phase": np.zeros(t, np.int8)}


def write_bundle_clip(bundle: Path | BundleEpisode, folder: Path, episode: dict) -> Path:
    ep = bundle if isinstance(bundle, BundleEpisode) else read_bundle(bundle)
    folder.mkdir(parents=True, exist_ok=True)
    write_npz(folder / "clip.npz", clip_arrays(ep))
    t = len(ep.timestamps_ms)
    rate = 1000.0 / float(np.diff(ep.timestamps_ms).mean()) if t > 1 else 0.0
    meta = {"format_version": FORMAT_VERSION, "clip_id": episode["submission_id"], "source_kind": "submission_bundle",
            "uploader": episode["miner_id"], "fps": round(rate, 6), "frames": t,
            "robot_model_id": ep.robot_model_id, "robot_model_revision": episode.get("robot_model_revision"),
            "joint_names": ep.joint_names, "task_id": ep.task,
            "object": None if ep.object_name is None else {"name": ep.object_name},
            "phases": ["unlabelled"], "contact_pairs": [f"{k}-{ep.object_name or 'object'}" for k in sorted(ep.contacts)],
            "frames_convention": "robot base frame (root = identity), metres, radians, quaternions wxyz",
            "kibotos": episode}
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return folder


def copy_xgen_clip(clip_npz: Path, metadata_json: Path | None, folder: Path, episode: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clip.npz").write_bytes(clip_npz.read_bytes())
    meta = json.loads(metadata_json.read_text()) if metadata_json is not None else {"format_version": FORMAT_VERSION}
    meta["kibotos"] = episode
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return folder
