"""Forward kinematics of a robot's keypoint links in NumPy, for gate C's image speed.

Gate C projects the robot's keypoint links (``robot.keypoint_links``) through the
declared camera at every kinematic sample. ``kibotos.robots.kinematics.Kinematics``
computes every frame of the URDF tree with pytorch-kinematics' batched BFS; on this
path that cost more than the video decode the gate exists for (issue 17's profile: 0.4-3 s
of a 5-60 s episode, most of it torch's per-operation overhead and its threads
competing for shared CPUs). Here the tree is read once from the same pytorch-kinematics
parse of the URDF and pruned to the keypoints' ancestors; fixed frames fold into the next
frame's static transform, each joint's rotation is Rodrigues' formula with the static
rotation premultiplied (``S R(q) = S + sin q (S K) + (1 - cos q) (S K^2)``), and one
batched matrix product per frame walks the tree. Its positions equal
``Kinematics.link_positions`` to rounding (``tests/processors/test_link_kinematics.py``).
"""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass

import numpy as np

from kibotos.robots import RobotModel, get_robot


@dataclass(frozen=True)
class _Frame:
    parent: int  # index into the frame list (-1: the world)
    static_rot: np.ndarray  # (3, 3): link offset @ joint offset, fixed ancestors folded in
    static_pos: np.ndarray  # (3,)
    sk: np.ndarray  # (3, 3) static_rot @ K (revolute; zeros otherwise)
    sk2: np.ndarray  # (3, 3) static_rot @ K @ K
    axis: np.ndarray  # (3,) unit joint axis (the joint's own frame)
    kind: str  # "revolute", "prismatic", "fixed"
    column: int  # the joint's column in ``robot.joint_names`` (-1: fixed)


def _matrix(transform) -> np.ndarray:
    return np.eye(4) if transform is None else transform.get_matrix()[0].detach().cpu().double().numpy()


class LinkKinematics:
    """Positions of ``links`` (default: ``robot.keypoint_links``) for a batch of
    configurations in ``robot.joint_names`` order."""

    def __init__(self, robot: RobotModel, links: tuple[str, ...] | None = None):
        import pytorch_kinematics as pk

        self.robot = robot
        self.links = tuple(links or robot.keypoint_links)
        # the URDF parser prints a line per unknown attribute (Franka dynamics tags)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            chain = pk.build_chain_from_urdf(robot.model_path.read_bytes())
        wanted = set(self.links)
        frames: list[_Frame] = []
        index: dict[str, int] = {}

        def keep(frame) -> bool:  # the frame is a keypoint or an ancestor of one
            return frame.name in wanted or any(keep(c) for c in frame.children)

        def visit(frame, parent: int, pending: np.ndarray) -> None:
            local = pending @ _matrix(frame.link.offset) @ _matrix(frame.joint.offset)
            kind = frame.joint.joint_type if frame.joint.joint_type in ("revolute", "prismatic") else "fixed"
            if kind == "fixed" and frame.name not in wanted:
                me, carry = parent, local  # folded into its children's static transforms
            else:
                axis = np.asarray(frame.joint.axis.detach().cpu().double().numpy() if kind != "fixed"
                                  else np.zeros(3), dtype=np.float64).reshape(3)
                if kind != "fixed":
                    axis = axis / np.linalg.norm(axis)
                x, y, z = axis
                k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]]) if kind == "revolute" else np.zeros((3, 3))
                rot = local[:3, :3].copy()
                column = robot.joint_names.index(frame.joint.name) if kind != "fixed" else -1
                frames.append(_Frame(parent, rot, local[:3, 3].copy(), rot @ k, rot @ k @ k, axis, kind, column))
                me, carry = len(frames) - 1, np.eye(4)
                index[frame.name] = me
            for child in frame.children:
                if keep(child):
                    visit(child, me, carry)

        visit(chain._root, -1, np.eye(4))
        missing = wanted - set(index)
        if missing:
            raise ValueError(f"{robot.key}: links missing from the kinematic tree: {sorted(missing)}")
        self._frames = frames
        self._out = [index[name] for name in self.links]

    def link_positions(self, qpos: np.ndarray) -> np.ndarray:
        """(B, L, 3) positions in metres of ``links`` in the robot base frame; ``qpos`` (B, J)."""
        q = np.asarray(qpos, dtype=np.float64)
        if q.ndim == 1:
            q = q[None]
        b = q.shape[0]
        rots: list[np.ndarray] = []
        pos: list[np.ndarray] = []
        for f in self._frames:
            if f.kind == "revolute":
                s, c = np.sin(q[:, f.column])[:, None, None], np.cos(q[:, f.column])[:, None, None]
                local_rot = f.static_rot + s * f.sk + (1.0 - c) * f.sk2  # (B, 3, 3)
                local_pos = np.broadcast_to(f.static_pos, (b, 3))
            elif f.kind == "prismatic":
                local_rot = np.broadcast_to(f.static_rot, (b, 3, 3))
                local_pos = f.static_pos + q[:, f.column, None] * (f.static_rot @ f.axis)
            else:
                local_rot = np.broadcast_to(f.static_rot, (b, 3, 3))
                local_pos = np.broadcast_to(f.static_pos, (b, 3))
            if f.parent < 0:
                rots.append(np.array(local_rot))
                pos.append(np.array(local_pos))
            else:
                pr, pp = rots[f.parent], pos[f.parent]
                rots.append(pr @ local_rot)
                pos.append(pp + (pr @ local_pos[..., None])[..., 0])
        return np.stack([pos[i] for i in self._out], axis=1)


@functools.lru_cache(maxsize=8)
def link_kinematics_for(model_id: str, revision: str) -> LinkKinematics:
    return LinkKinematics(get_robot(model_id, revision))
