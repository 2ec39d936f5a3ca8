"""Batched forward kinematics through pytorch-kinematics (CPU here, CUDA where present)."""

from __future__ import annotations

import contextlib
import functools
import io

import numpy as np
import pytorch_kinematics as pk
import torch

from kibotos.robots.registry import RobotModel, get_robot


class Kinematics:
    """Forward kinematics of one registered robot, joint order = ``robot.joint_names``."""

    def __init__(self, robot: RobotModel, device: str = "cpu", dtype=torch.float64):
        self.robot = robot
        self.device = device
        self.dtype = dtype
        # the URDF parser prints a line per unknown attribute (Franka dynamics tags)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            chain = pk.build_chain_from_urdf(robot.model_path.read_bytes())
        self.chain = chain.to(dtype=dtype, device=device)
        chain_names = list(self.chain.get_joint_parameter_names())
        missing = set(robot.joint_names) - set(chain_names)
        if missing:
            raise ValueError(f"{robot.key}: joints missing from the kinematic chain: {sorted(missing)}")
        # the chain's parameter order may differ from the registry's: map once
        self._perm = torch.tensor([robot.joint_names.index(n) for n in chain_names], device=device)

    def link_poses(self, qpos: np.ndarray, links: tuple[str, ...] | None = None) -> np.ndarray:
        """World (robot base) poses of ``links`` for a batch of configurations.

        qpos: (B, J) radians. Returns (B, L, 4, 4).
        """
        links = links or self.robot.keypoint_links
        q = torch.as_tensor(np.asarray(qpos), dtype=self.dtype, device=self.device)
        if q.ndim == 1:
            q = q[None]
        frames = self.chain.forward_kinematics(q[:, self._perm], frame_indices=None)
        mats = [frames[name].get_matrix() for name in links]
        return torch.stack(mats, dim=1).cpu().numpy()

    def link_positions(self, qpos: np.ndarray, links: tuple[str, ...] | None = None) -> np.ndarray:
        """(B, L, 3) positions in metres of ``links`` in the robot base frame."""
        return self.link_poses(qpos, links)[..., :3, 3]


@functools.lru_cache(maxsize=8)
def kinematics_for(model_id: str, revision: str) -> Kinematics:
    return Kinematics(get_robot(model_id, revision))
