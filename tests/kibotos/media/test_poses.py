"""Pose conversions: the bundle's x,y,z,qw,qx,qy,qz <-> 4x4 matrices."""

from __future__ import annotations

import numpy as np

from kibotos.media.poses import invert, matrix_to_pose7, pose7_to_matrix, rotation_angle_deg, rotvec_to_matrix


def test_round_trip_normalizes_and_keeps_qw_positive():
    rng = np.random.default_rng(0)
    pose = np.concatenate([rng.normal(size=(500, 3)), rng.normal(size=(500, 4)) * 3], axis=1)
    back = matrix_to_pose7(pose7_to_matrix(pose))
    q = pose[:, 3:] / np.linalg.norm(pose[:, 3:], axis=1, keepdims=True)
    q *= np.sign(q[:, :1])
    np.testing.assert_allclose(back[:, :3], pose[:, :3], atol=1e-12)
    np.testing.assert_allclose(back[:, 3:], q, atol=1e-9)


def test_rotations_inverse_and_angles():
    m = pose7_to_matrix(np.array([0.1, 0.2, 0.3, np.cos(0.4), 0.0, np.sin(0.4), 0.0]))
    np.testing.assert_allclose(invert(m) @ m, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(m[:3, :3], rotvec_to_matrix(np.array([0.0, 0.8, 0.0])), atol=1e-12)
    assert abs(rotation_angle_deg(m, np.eye(4)) - np.degrees(0.8)) < 1e-9
    np.testing.assert_allclose(rotvec_to_matrix(np.zeros(3)), np.eye(3))
