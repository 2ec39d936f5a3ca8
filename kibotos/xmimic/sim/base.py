"""The simulator interface the XMimic environment is written against. Everything crosses
it as torch tensors on the simulator's device, batched over environments; the robot's
state uses XGen's clip layout (qpos: root xyz + wxyz + 29 joints; qvel: root linear +
angular + 29 joint velocities), joints in G1 order, whatever the backend's own order."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


@dataclass
class SimState:
    qpos: torch.Tensor          # (N, 36)
    qvel: torch.Tensor          # (N, 35)
    box_pose: torch.Tensor      # (N, 7) centre + wxyz
    box_vel: torch.Tensor       # (N, 6) linear, angular (world)
    key_body_pos: torch.Tensor  # (N, 4, 3) left palm, right palm, left elbow, right elbow (world)
    torque: torch.Tensor        # (N, 29) actuator forces
    unstable: torch.Tensor | None = None  # (N,) bool: the simulation diverged since the reset


class Simulator(ABC):
    num_envs: int
    device: str
    control_dt: float
    fixed_pelvis: bool

    @abstractmethod
    def reset_envs(self, ids: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor, box_pose: torch.Tensor,
                   box_size: torch.Tensor, box_mass: torch.Tensor, box_friction: torch.Tensor,
                   kp_scale: torch.Tensor) -> None:
        """Put environments ``ids`` into the given state with the given box and PD gains."""

    @abstractmethod
    def step(self, targets: torch.Tensor, grip: torch.Tensor, base_from: torch.Tensor | None,
             base_to: torch.Tensor | None) -> None:
        """One control step: PD towards joint ``targets`` (N, 29), palm grip command ``grip``
        (N, 2) in [0, 1] (left, right); with a fixed pelvis the
        pelvis moves from ``base_from`` to ``base_to`` (N, 7) over the step."""

    @abstractmethod
    def state(self) -> SimState:
        ...

    @abstractmethod
    def push_box(self, ids: torch.Tensor, velocity: torch.Tensor) -> None:
        """Add a linear velocity (k, 3) to the box of environments ``ids`` (a push)."""

    @abstractmethod
    def set_torque_enabled(self, enabled: bool) -> None:
        """Switch every actuator off (zero torque) or back on: the zero-torque baseline."""
