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


class SerialKinematics:
    """Forward kinematics and the geometric Jacobian of the serial chain from the robot's
    base frame to one link, batched (B configurations at once).

    Written out here rather than taken from pytorch-kinematics' ``SerialChain.jacobian``
    because an IK solve evaluates both every iteration over every frame of an episode:
    the explicit chain product is several times faster (README "The IK solver's own
    loop", benchmarks/RESULTS.md) and is checked against pytorch-kinematics' forward kinematics and Jacobian
    in the tests. The chain's structure (offsets, axes) is read from pytorch-kinematics'
    parse of the URDF.

    On a CPU (and for a GPU's kernel launches) the cost of a batched pass is the number of
    tensor operations, not their size, so the chain is folded once: fixed frames are
    merged into the next joint's static transform (trailing ones into one end transform),
    every joint's rotation is built for all joints in one expression (Rodrigues: ``I +
    sin(q) K + (1 - cos(q)) K^2``), and only the product along the chain is a Python loop
    (one matrix product per joint).

    ``joint_names`` are the chain's movable joints from the base outwards; ``joint_index``
    maps them into ``robot.joint_names``; ``lower``/``upper`` are their limits.
    """

    def __init__(self, robot: RobotModel, link: str, device: str = "cpu", dtype=torch.float64):
        self.robot, self.link, self.device, self.dtype = robot, link, device, dtype
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            chain = pk.build_chain_from_urdf(robot.model_path.read_bytes())
        try:
            serial = pk.SerialChain(chain, link, robot.base_frame)
        except (KeyError, ValueError, AttributeError) as exc:
            raise ValueError(f"{robot.key}: no serial chain from {robot.base_frame!r} to {link!r}") from exc
        # per frame: the static transform from the parent frame (pytorch-kinematics'
        # convention: link offset @ joint offset), then the joint's own motion; fixed
        # frames fold into the static transform of the next joint (or the end transform)
        eye = torch.eye(4, dtype=dtype)
        pending = eye.clone()
        statics, axes, kinds, names = [], [], [], []
        for frame in serial._serial_frames[1:]:
            lo = eye if frame.link.offset is None else frame.link.offset.get_matrix()[0].to(dtype)
            jo = eye if frame.joint.offset is None else frame.joint.offset.get_matrix()[0].to(dtype)
            pending = pending @ lo @ jo
            if frame.joint.joint_type in ("revolute", "prismatic"):
                axis = torch.as_tensor(frame.joint.axis, dtype=dtype)
                statics.append(pending)
                axes.append(axis / torch.linalg.norm(axis))
                kinds.append(frame.joint.joint_type)
                names.append(frame.joint.name)
                pending = eye.clone()
        n = len(names)
        static = torch.stack(statics) if n else torch.zeros(0, 4, 4, dtype=dtype)
        axis = torch.stack(axes) if n else torch.zeros(0, 3, dtype=dtype)
        revolute = torch.tensor([k == "revolute" for k in kinds], dtype=torch.bool)
        x, y, z = axis.unbind(1) if n else (axis[:, 0],) * 3
        zero = torch.zeros_like(x)
        k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).reshape(n, 3, 3)
        k = k * revolute[:, None, None]  # a prismatic joint does not rotate: its K is 0
        self._static_rot = static[:, :3, :3].contiguous().to(device)  # (n, 3, 3)
        self._static_pos = static[:, :3, 3, None].contiguous().to(device)  # (n, 3, 1)
        self._axis = axis[:, :, None].contiguous().to(device)  # (n, 3, 1)
        self._sk = (static[:, :3, :3] @ k).to(device)
        self._sk2 = (static[:, :3, :3] @ k @ k).to(device)
        self._revolute = revolute.to(device)
        self._prismatic = bool((~revolute).any())
        self._end_rot = pending[:3, :3].contiguous().to(device)
        self._end_pos = pending[:3, 3].contiguous().to(device)
        self._eye3 = torch.eye(3, dtype=dtype, device=device)
        self.joint_names: tuple[str, ...] = tuple(names)
        self.joint_index = np.array([robot.joint_names.index(n) for n in names], dtype=np.int64)
        self.lower = torch.as_tensor(robot.pos_lower[self.joint_index], dtype=dtype, device=device)
        self.upper = torch.as_tensor(robot.pos_upper[self.joint_index], dtype=dtype, device=device)

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def rot_pos(self, q: torch.Tensor, jacobian: bool = False):
        """``(R (B, 3, 3), p (B, 3), J (B, 6, n) or None)``: the pose of ``link`` in the
        base frame for chain joints ``q`` (B, n), and the geometric Jacobian."""
        B, n = q.shape[0], self.dof
        if n == 0:
            rot = self._end_rot.expand(B, 3, 3)
            return rot, self._end_pos.expand(B, 3), (q.new_zeros(B, 6, 0) if jacobian else None)
        s, c = torch.sin(q)[:, :, None, None], torch.cos(q)[:, :, None, None]
        # static transform, then the joint's rotation: S (I + sin K + (1 - cos) K^2), S K and S K^2 precomputed
        local = (self._static_rot + s * self._sk + (1.0 - c) * self._sk2).unbind(1)  # n x (B, 3, 3)
        # rots[j]: orientation after joint j; a joint's rotation leaves its own axis fixed
        # (and a prismatic joint rotates nothing), so rots[j] @ axis is joint j's axis
        rots = [local[0]]
        for j in range(1, n):
            rots.append(rots[-1] @ local[j])
        rot = rots[-1]
        stacked = torch.stack([self._eye3.expand(B, 3, 3)] + rots, dim=1)  # (B, n + 1, 3, 3)
        origins = torch.cumsum((stacked[:, :-1] @ self._static_pos)[..., 0], dim=1)  # joint origins without sliding
        axes_w = (stacked[:, 1:] @ self._axis)[..., 0]  # (B, n, 3) joint axes in the base frame
        if self._prismatic:
            slide = axes_w * (q * (~self._revolute))[:, :, None]
            before = torch.cumsum(slide, dim=1) - slide
            origins = origins + before
            end_origin = origins[:, -1] + slide[:, -1]
        else:
            end_origin = origins[:, -1]
        pos = end_origin + rot @ self._end_pos
        rot = rot @ self._end_rot
        if not jacobian:
            return rot, pos, None
        linear = torch.linalg.cross(axes_w, pos[:, None, :] - origins, dim=2)
        angular = axes_w
        if self._prismatic:
            linear = torch.where(self._revolute[:, None], linear, axes_w)
            angular = axes_w * self._revolute[:, None]
        return rot, pos, torch.cat([linear, angular], dim=2).transpose(1, 2)

    @staticmethod
    def _matrix(rot: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        world = torch.zeros(rot.shape[0], 4, 4, dtype=rot.dtype, device=rot.device)
        world[:, :3, :3], world[:, :3, 3], world[:, 3, 3] = rot, pos, 1.0
        return world

    def fk(self, q: torch.Tensor) -> torch.Tensor:
        """(B, n) chain joints -> (B, 4, 4) pose of ``link`` in the base frame."""
        rot, pos, _ = self.rot_pos(q)
        return self._matrix(rot, pos)

    def fk_jacobian(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pose (B, 4, 4), J (B, 6, n))``: J's rows are linear then angular velocity of
        ``link``'s origin in the base frame per unit joint velocity."""
        rot, pos, jac = self.rot_pos(q, jacobian=True)
        return self._matrix(rot, pos), jac

    def link_poses(self, qpos: np.ndarray) -> np.ndarray:
        """(B, J) full-robot configurations (``robot.joint_names`` order) -> (B, 4, 4)."""
        q = torch.as_tensor(np.atleast_2d(qpos)[:, self.joint_index], dtype=self.dtype, device=self.device)
        return self.fk(q).cpu().numpy()

    def link_jacobians(self, qpos: np.ndarray) -> np.ndarray:
        """(B, J) full-robot configurations -> (B, 6, n) Jacobians over the chain joints."""
        q = torch.as_tensor(np.atleast_2d(qpos)[:, self.joint_index], dtype=self.dtype, device=self.device)
        return self.fk_jacobian(q)[1].cpu().numpy()

    @functools.cached_property
    def numpy(self) -> SerialChainNumpy:
        """The same chain in NumPy (float64, CPU): what an iterative solver calls per step."""
        return SerialChainNumpy(self)


def _frame_with_z_along(axis: np.ndarray) -> np.ndarray:
    """A rotation ``C`` with ``C e_z = axis`` (unit): the identity for an axis along z."""
    if np.abs(axis - (0.0, 0.0, 1.0)).max() <= 1e-12:
        return np.eye(3)
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, axis)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(axis, x), axis], axis=1)


class SerialChainNumpy:
    """:class:`SerialKinematics` in NumPy float64, for the loop of an iterative solver on a
    CPU: there a pass over a few hundred configurations costs its number of array
    operations, and a NumPy operation on such arrays costs a fraction of a torch one
    (~1 µs against ~2-10 µs: FK + Jacobian of 300 Panda configurations ~0.18 ms against
    ~0.44 ms, benchmarks/RESULTS.md "After 3"). The torch class stays the reference (and a GPU's path).

    Each joint's frame is turned so that its axis is z (the turn folded into the static
    transforms on both sides): a joint's motion is then ``Rz(q)`` (or a slide along z), its
    4x4 transform one product of ``[1, sin q, cos q, q]`` with a constant basis for all
    joints at once, and after the product along the chain joint ``j``'s axis and origin in
    the base frame are the third and fourth columns of the running transform (no product
    per joint for the Jacobian)."""

    def __init__(self, kin: SerialKinematics):
        n = kin.dof
        static_rot = kin._static_rot.cpu().numpy()
        static_pos = kin._static_pos.cpu().numpy()[:, :, 0]
        axes = kin._axis.cpu().numpy()[:, :, 0]
        revolute = kin._revolute.cpu().numpy()
        basis = np.zeros((n, 4, 4, 4))  # joint, coefficient of [1, sin q, cos q, q], 4x4
        before = np.eye(3)  # the turn of the previous joint's frame
        for j in range(n):
            turn = _frame_with_z_along(axes[j])
            rot = before.T @ static_rot[j] @ turn
            basis[j, 0, :3, 3] = before.T @ static_pos[j]
            basis[j, 0, 3, 3] = 1.0
            if revolute[j]:  # rot @ Rz(q): columns c x + s y, -s x + c y, z
                basis[j, 0, :3, 2] = rot[:, 2]
                basis[j, 1, :3, 0], basis[j, 1, :3, 1] = rot[:, 1], -rot[:, 0]
                basis[j, 2, :3, 0], basis[j, 2, :3, 1] = rot[:, 0], rot[:, 1]
            else:  # a slide q along the turned z
                basis[j, 0, :3, :3] = rot
                basis[j, 3, :3, 3] = rot[:, 2]
            before = turn
        self._basis = basis.reshape(n, 4, 16)
        end = np.eye(4)
        end[:3, :3] = before.T @ kin._end_rot.cpu().numpy()
        end[:3, 3] = before.T @ kin._end_pos.cpu().numpy()
        self._end = end
        self._slides = np.flatnonzero(~revolute)
        self.dof = n
        self.joint_names, self.joint_index = kin.joint_names, kin.joint_index
        self.lower, self.upper = kin.lower.cpu().numpy(), kin.upper.cpu().numpy()

    def _transforms(self, q: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """``(frames (n, B, 4, 4) after each joint, or None without joints; end (B, 4, 4))``."""
        q = np.asarray(q, dtype=np.float64)
        B, n = q.shape
        if n == 0:
            return None, np.repeat(self._end[None], B, axis=0)
        coef = np.empty((n, B, 4))
        coef[:, :, 0] = 1.0
        qt = q.T
        if B >= 32:  # torch's sin and cos on the same memory: NumPy's take ~1.6x as long on many rows
            tq, tc = torch.from_numpy(qt), torch.from_numpy(coef)
            torch.sin(tq, out=tc[:, :, 1])
            torch.cos(tq, out=tc[:, :, 2])
        else:
            np.sin(qt, out=coef[:, :, 1])
            np.cos(qt, out=coef[:, :, 2])
        coef[:, :, 3] = qt
        local = (coef @ self._basis).reshape(n, B, 4, 4)
        frames = np.empty((n, B, 4, 4))  # after joint j: its axis is column 2, its origin column 3
        frames[0] = local[0]
        for j in range(1, n):
            np.matmul(frames[j - 1], local[j], out=frames[j])
        return frames, (frames[-1].reshape(B * 4, 4) @ self._end).reshape(B, 4, 4)  # one product, not B

    def rot_pos(self, q: np.ndarray, jacobian: bool = False):
        """``(R (B, 3, 3), p (B, 3), J^T (B, n, 6) or None)`` for chain joints ``q`` (B, n):
        the pose of the link in the base frame and the transposed geometric Jacobian (the
        layout the normal equations read: per joint its linear, then angular velocity)."""
        frames, end = self._transforms(q)
        B, n = end.shape[0], self.dof
        rot, pos = end[:, :3, :3], end[:, :3, 3]
        if frames is None:
            return rot, pos, (np.zeros((B, 0, 6)) if jacobian else None)
        if not jacobian:
            return rot, pos, None
        # per coordinate i: the joints' axes (B, n) and origins (B, n), contiguous (one copy)
        axis_origin = np.ascontiguousarray(frames[:, :, :3, 2:].transpose(2, 3, 1, 0))  # (3, 2, B, n)
        (ax, ox), (ay, oy), (az, oz) = axis_origin
        lx, ly, lz = pos[:, 0, None] - ox, pos[:, 1, None] - oy, pos[:, 2, None] - oz
        jt = np.empty((B, n, 6))
        np.subtract(ay * lz, az * ly, out=jt[:, :, 0])
        np.subtract(az * lx, ax * lz, out=jt[:, :, 1])
        np.subtract(ax * ly, ay * lx, out=jt[:, :, 2])
        jt[:, :, 3], jt[:, :, 4], jt[:, :, 5] = ax, ay, az
        if self._slides.size:  # a slide moves the link along its axis and turns nothing
            jt[:, self._slides, :3] = jt[:, self._slides, 3:]
            jt[:, self._slides, 3:] = 0.0
        return rot, pos, jt

    def link_poses(self, qpos: np.ndarray) -> np.ndarray:
        """(B, J) full-robot configurations (``robot.joint_names`` order) -> (B, 4, 4)."""
        return self._transforms(np.atleast_2d(qpos)[:, self.joint_index])[1]


@functools.lru_cache(maxsize=32)
def serial_kinematics_for(model_id: str, revision: str, link: str) -> SerialKinematics:
    return SerialKinematics(get_robot(model_id, revision), link)
