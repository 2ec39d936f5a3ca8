"""MuJoCo backend: one ``MjModel`` copy per environment (box size, mass, friction and PD
gains differ per environment) and one ``MjData`` each, stepped in a Python loop. On a CPU
this is the default; ``kibotos bench train`` reports its env-steps/s."""

from __future__ import annotations

import copy
import logging

import mujoco
import numpy as np
import torch

from kibotos.xmimic.model import Layout, build_model, set_box, set_grip_enabled, set_pd_scale
from kibotos.xmimic.sim.base import SimState, Simulator

_BAD = (mujoco.mjtWarning.mjWARN_BADQACC, mujoco.mjtWarning.mjWARN_BADQVEL, mujoco.mjtWarning.mjWARN_BADQPOS)
_log = logging.getLogger(__name__)


def _warning(msg: str) -> None:
    # MuJoCo's default handler appends to MUJOCO_LOG.TXT in the working directory
    _log.warning("mujoco: %s", msg)


def _bad_count(d: mujoco.MjData) -> int:
    return sum(int(d.warning[w].number) for w in _BAD)


def _nlerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    q1 = np.where((q0 * q1).sum(-1, keepdims=True) < 0, -q1, q1)
    q = (1 - a) * q0 + a * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


class MujocoSim(Simulator):
    def __init__(self, *, num_envs: int, fixed_pelvis: bool, control_dt: float, substeps: int, device: str = "cpu"):
        self.num_envs, self.fixed_pelvis, self.control_dt, self.substeps = num_envs, fixed_pelvis, control_dt, substeps
        self.device = device
        base = build_model(fixed_pelvis, round(control_dt / substeps, 9))
        self.lay = Layout(base, fixed_pelvis)
        self.models = [copy.copy(base) for _ in range(num_envs)]
        self.datas = [mujoco.MjData(m) for m in self.models]
        self._kp_scale = np.ones(num_envs)
        self._enabled = True
        mujoco.set_mju_user_warning(_warning)
        self.unstable = np.zeros(num_envs, dtype=bool)  # MuJoCo reset the data after a divergence
        for d in self.datas:
            d.qpos[self.lay.joint_qpos] = 0.0
            mujoco.mj_forward(self.models[0], d)

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=self.device)

    def reset_envs(self, ids, qpos, qvel, box_pose, box_size, box_mass, box_friction, kp_scale) -> None:
        lay = self.lay
        ids = ids.cpu().numpy()
        qpos, qvel, box_pose = (x.double().cpu().numpy() for x in (qpos, qvel, box_pose))
        box_size, box_mass, box_friction, kp_scale = (x.double().cpu().numpy() for x in
                                                      (box_size, box_mass, box_friction, kp_scale))
        for k, i in enumerate(ids):
            m, d = self.models[i], self.datas[i]
            set_box(m, lay, box_size[k], float(box_mass[k]), float(box_friction[k]))
            self._kp_scale[i] = kp_scale[k]
            set_pd_scale(m, lay, kp_scale[k] if self._enabled else 0.0)
            set_grip_enabled(m, lay, self._enabled)
            mujoco.mj_resetData(m, d)
            d.qpos[lay.joint_qpos] = qpos[k, 7:]
            d.qvel[lay.joint_dof] = qvel[k, 6:]
            if self.fixed_pelvis:
                d.mocap_pos[lay.mocap], d.mocap_quat[lay.mocap] = qpos[k, :3], qpos[k, 3:7]
            d.qpos[lay.root_qpos:lay.root_qpos + 7] = qpos[k, :7]
            d.qvel[lay.root_dof:lay.root_dof + 6] = qvel[k, :6]
            d.qpos[lay.box_qpos:lay.box_qpos + 7] = box_pose[k]
            d.ctrl[lay.actuator] = qpos[k, 7:]
            d.ctrl[lay.grip] = 0.0
            mujoco.mj_forward(m, d)
            self.unstable[i] = False

    def step(self, targets, grip, base_from=None, base_to=None) -> None:
        lay = self.lay
        tg = targets.double().cpu().numpy()
        gr = grip.double().cpu().numpy()
        b0 = base_from.double().cpu().numpy() if base_from is not None else None
        b1 = base_to.double().cpu().numpy() if base_to is not None else None
        n = self.substeps
        for i, (m, d) in enumerate(zip(self.models, self.datas)):
            d.ctrl[lay.actuator] = tg[i]
            d.ctrl[lay.grip] = gr[i]
            bad_before = _bad_count(d)
            for s in range(n):
                if self.fixed_pelvis and b0 is not None:
                    a = (s + 1) / n
                    d.mocap_pos[lay.mocap] = (1 - a) * b0[i, :3] + a * b1[i, :3]
                    d.mocap_quat[lay.mocap] = _nlerp(b0[i, 3:], b1[i, 3:], a)
                mujoco.mj_step(m, d)
            if _bad_count(d) > bad_before:
                self.unstable[i] = True

    def state(self) -> SimState:
        lay = self.lay
        n = self.num_envs
        qpos = np.empty((n, 36))
        qvel = np.empty((n, 35))
        box = np.empty((n, 7))
        boxv = np.empty((n, 6))
        keys = np.empty((n, 4, 3))
        tq = np.empty((n, 29))
        for i, d in enumerate(self.datas):
            qpos[i, 7:] = d.qpos[lay.joint_qpos]
            qvel[i, 6:] = d.qvel[lay.joint_dof]
            qpos[i, :7] = d.qpos[lay.root_qpos:lay.root_qpos + 7]
            qvel[i, :6] = d.qvel[lay.root_dof:lay.root_dof + 6]
            box[i] = d.qpos[lay.box_qpos:lay.box_qpos + 7]
            boxv[i] = d.qvel[lay.box_dof:lay.box_dof + 6]
            keys[i, :2] = d.site_xpos[lay.palm_sites]
            keys[i, 2:] = d.xpos[lay.elbow_bodies]
            tq[i] = d.actuator_force[lay.actuator]
        return SimState(*(self._t(a) for a in (qpos, qvel, box, boxv, keys, tq)),
                        unstable=torch.as_tensor(self.unstable.copy(), device=self.device))

    def push_box(self, ids, velocity) -> None:
        v = velocity.double().cpu().numpy()
        for k, i in enumerate(ids.cpu().numpy()):
            self.datas[i].qvel[self.lay.box_dof:self.lay.box_dof + 3] += v[k]

    def set_torque_enabled(self, enabled: bool) -> None:
        self._enabled = enabled
        for i, m in enumerate(self.models):
            set_pd_scale(m, self.lay, self._kp_scale[i] if enabled else 0.0)
            set_grip_enabled(m, self.lay, enabled)
