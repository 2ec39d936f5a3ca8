"""The unified imitation reward (HumanX's XMimic): one weighted sum of named terms, weights
and scales from the versioned config (``reward`` in ``kibotos/config/xmimic.yaml``).

Tracking terms are ``exp(-error / sigma)`` in [0, 1]: body (joint positions and velocities
of the policy's joints, key-body positions), object (box position, box orientation),
relative (each palm's position in the box frame against the reference's), contact (the
fraction of the palm-box and box-ground contacts that agree with the clip's contact graph).
Regularisation terms are penalties (negative weights): action rate, torque, joint-limit
proximity. ``compute`` returns every term unweighted so each can be logged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from kibotos.xmimic.config import RewardConfig
from kibotos.xmimic.rotations import quat_angle, quat_rotate_inverse


@dataclass
class RewardInputs:
    q: torch.Tensor            # (N, J) policy joints
    qd: torch.Tensor
    q_ref: torch.Tensor
    qd_ref: torch.Tensor
    keys: torch.Tensor         # (N, 4, 3)
    keys_ref: torch.Tensor
    box: torch.Tensor          # (N, 7)
    box_ref: torch.Tensor
    palms: torch.Tensor        # (N, 2, 3) the palms in the box frame (palms_in_box)
    palms_ref: torch.Tensor    # (N, 2, 3) the reference palms in the reference box frame (Clip.palms_in_box)
    contacts: torch.Tensor     # (N, 3) palm-box left, right, box-ground (bool)
    contacts_ref: torch.Tensor
    action: torch.Tensor
    prev_action: torch.Tensor
    torque: torch.Tensor       # (N, J)
    q_lo: torch.Tensor         # (J,)
    q_hi: torch.Tensor


def palms_in_box(keys: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) palm positions in the box frame."""
    return quat_rotate_inverse(box[:, None, 3:], keys[:, :2] - box[:, None, :3])


def box_surface_distance(p_box: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Signed distance (N, K) of points in the box frame (N, K, 3) to a box of half
    extents (N, 3): positive outside, negative inside."""
    d = p_box.abs() - half[:, None, :]
    outside = d.clamp(min=0).norm(dim=-1)
    inside = d.max(dim=-1).values.clamp(max=0)
    return outside + inside


def contacts(palms: torch.Tensor, box: torch.Tensor, box_size: torch.Tensor, tol: float) -> torch.Tensor:
    """(N, 3) bool: left palm on the box, right palm on the box, box on the ground; ``palms``
    are the palms in the box frame (``palms_in_box``)."""
    dist = box_surface_distance(palms, box_size / 2)
    # the lowest box corner's height (any orientation): centre z minus the half extents projected on z
    ez = torch.zeros_like(box[:, :3])
    ez[:, 2] = 1.0
    z_in_box = quat_rotate_inverse(box[:, 3:], ez)
    bottom = box[:, 2] - (z_in_box.abs() * box_size / 2).sum(-1)
    return torch.cat([dist < tol, (bottom < tol)[:, None]], dim=1)


def compute(cfg: RewardConfig, x: RewardInputs) -> dict[str, torch.Tensor]:
    s = cfg.sigmas
    terms = {
        "body_joint_pos": torch.exp(-((x.q - x.q_ref) ** 2).sum(-1) / s["body_joint_pos"]),
        "body_joint_vel": torch.exp(-((x.qd - x.qd_ref) ** 2).sum(-1) / s["body_joint_vel"]),
        "key_body_pos": torch.exp(-((x.keys - x.keys_ref) ** 2).sum(-1).sum(-1) / s["key_body_pos"]),
        "object_pos": torch.exp(-((x.box[:, :3] - x.box_ref[:, :3]) ** 2).sum(-1) / s["object_pos"]),
        "object_rot": torch.exp(-quat_angle(x.box[:, 3:], x.box_ref[:, 3:]) / s["object_rot"]),
        "relative_hand_box": torch.exp(
            -((x.palms - x.palms_ref) ** 2).sum(-1).sum(-1)
            / s["relative_hand_box"]),
        "contact": (x.contacts == x.contacts_ref).float().mean(-1),
        "action_rate": ((x.action - x.prev_action) ** 2).sum(-1),
        "torque": (x.torque ** 2).sum(-1),
    }
    mid, half = (x.q_hi + x.q_lo) / 2, (x.q_hi - x.q_lo) / 2
    terms["joint_limit"] = ((x.q - mid).abs() - cfg.joint_limit_margin * half).clamp(min=0).sum(-1)
    return terms


def total(cfg: RewardConfig, terms: dict[str, torch.Tensor]) -> torch.Tensor:
    return cast(torch.Tensor, sum(cfg.weights[k] * v for k, v in terms.items()))  # terms is never empty
