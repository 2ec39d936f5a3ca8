"""Pinhole camera maths. Convention: OpenCV camera axes (x right, y down, z forward);
extrinsics are camera-to-world 4x4 matrices, world = the robot base frame."""

from __future__ import annotations

import numpy as np


def project_points(points_w: np.ndarray, intrinsics: dict, cam_to_world: np.ndarray) -> np.ndarray:
    """(..., 3) world points -> (..., 2) pixel coordinates (distortion ignored)."""
    world_to_cam = np.linalg.inv(cam_to_world)
    pc = points_w @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    z = np.clip(pc[..., 2:3], 1e-3, None)
    return np.concatenate([intrinsics["fx"] * pc[..., 0:1] / z + intrinsics["cx"],
                           intrinsics["fy"] * pc[..., 1:2] / z + intrinsics["cy"]], axis=-1)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world pose of a camera at ``eye`` looking at ``target`` (world z up)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose
