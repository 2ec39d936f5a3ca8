"""Rigid poses as the bundle stores them — ``(..., 7)`` x, y, z, qw, qx, qy, qz (metres,
unit quaternion, scalar first) — and as 4x4 homogeneous matrices."""

from __future__ import annotations

import numpy as np


def pose7_to_matrix(pose: np.ndarray) -> np.ndarray:
    """(..., 7) x,y,z,qw,qx,qy,qz -> (..., 4, 4); quaternions are normalized."""
    pose = np.asarray(pose, dtype=np.float64)
    q = pose[..., 3:] / np.linalg.norm(pose[..., 3:], axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    m = np.zeros(pose.shape[:-1] + (4, 4))
    m[..., 0, 0], m[..., 0, 1], m[..., 0, 2] = 1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)
    m[..., 1, 0], m[..., 1, 1], m[..., 1, 2] = 2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)
    m[..., 2, 0], m[..., 2, 1], m[..., 2, 2] = 2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)
    m[..., :3, 3] = pose[..., :3]
    m[..., 3, 3] = 1.0
    return m


def matrix_to_pose7(m: np.ndarray) -> np.ndarray:
    """(..., 4, 4) -> (..., 7) x,y,z,qw,qx,qy,qz with qw >= 0."""
    r = np.asarray(m, dtype=np.float64)[..., :3, :3]
    t = np.asarray(m, dtype=np.float64)[..., :3, 3]
    # Shepperd's method through the largest of the four quaternion magnitudes
    tr = np.trace(r, axis1=-2, axis2=-1)
    cand = np.stack([1 + tr, 1 + 2 * r[..., 0, 0] - tr, 1 + 2 * r[..., 1, 1] - tr, 1 + 2 * r[..., 2, 2] - tr], -1)
    k = np.argmax(cand, axis=-1)
    s = np.sqrt(np.maximum(np.take_along_axis(cand, k[..., None], -1)[..., 0], 1e-12))
    q = np.empty(r.shape[:-2] + (4,))
    rows = [
        (s / 2, (r[..., 2, 1] - r[..., 1, 2]) / (2 * s), (r[..., 0, 2] - r[..., 2, 0]) / (2 * s), (r[..., 1, 0] - r[..., 0, 1]) / (2 * s)),
        ((r[..., 2, 1] - r[..., 1, 2]) / (2 * s), s / 2, (r[..., 0, 1] + r[..., 1, 0]) / (2 * s), (r[..., 0, 2] + r[..., 2, 0]) / (2 * s)),
        ((r[..., 0, 2] - r[..., 2, 0]) / (2 * s), (r[..., 0, 1] + r[..., 1, 0]) / (2 * s), s / 2, (r[..., 1, 2] + r[..., 2, 1]) / (2 * s)),
        ((r[..., 1, 0] - r[..., 0, 1]) / (2 * s), (r[..., 0, 2] + r[..., 2, 0]) / (2 * s), (r[..., 1, 2] + r[..., 2, 1]) / (2 * s), s / 2),
    ]
    for i in range(4):
        sel = k == i
        q[sel] = np.stack([c[sel] for c in rows[i]], -1)
    q *= np.where(q[..., :1] < 0, -1.0, 1.0)
    return np.concatenate([t, q], axis=-1)


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (degrees) of the relative rotation between (..., 4, 4) or (..., 3, 3) poses."""
    rel = np.einsum("...ji,...jk->...ik", a[..., :3, :3], b[..., :3, :3])
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vectors (axis * angle, radians) -> (..., 3, 3) (Rodrigues)."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(rotvec, axis=-1)[..., None, None]
    axis = rotvec / np.maximum(np.linalg.norm(rotvec, axis=-1, keepdims=True), 1e-12)
    x, y, z = np.moveaxis(axis, -1, 0)
    zero = np.zeros_like(x)
    k = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of (..., 4, 4) rigid transforms."""
    out = np.zeros_like(np.asarray(m, dtype=np.float64))
    rt = np.swapaxes(m[..., :3, :3], -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -(rt @ m[..., :3, 3, None])[..., 0]
    out[..., 3, 3] = 1.0
    return out
