"""MuJoCo backend, batched: every environment's physics state lives in one array
(``N x`` MuJoCo's full physics state) and one control step advances all of them with
``mujoco.rollout`` (C++, ``threads`` worker threads, no Python per environment or
substep). Each environment has its own ``MjModel`` copy (box size, mass, friction and PD
gains differ per environment; a copy is ~0.1 MB since the model keeps only colliding
geoms). Per substep the rollout gets the joint targets, the grip command and, with a
fixed pelvis, the pelvis anchor's pose interpolated along the reference root (computed
for all environments and substeps at once in numpy).

What the reward needs and the physics state does not hold is computed after the step:
actuator forces vectorised from the PD law (force = kp (target - q) - kd qdot, clamped
as MuJoCo clamps), key-body positions by ``mj_kinematics`` (one shared model: the
kinematic tree is the same in every environment). A diverged simulation (MuJoCo resets
the data after a bad acceleration) shows as simulation time behind the step count.
On a CPU this is the default; ``kibotos bench train`` reports its env-steps/s."""

from __future__ import annotations

import copy
import logging
import os
from typing import cast

import mujoco
import numpy as np
import torch
from mujoco import rollout

from kibotos.xmimic.clips import nlerp
from kibotos.xmimic.config import PhysicsConfig
from kibotos.xmimic.model import Layout, build_model, set_box, set_grip_enabled, set_pd_scale
from kibotos.xmimic.sim.base import SimState, Simulator

_log = logging.getLogger(__name__)
_S = mujoco.mjtState
STATE_SPEC = _S.mjSTATE_FULLPHYSICS.value
MAX_SPEED = 200.0  # m/s or rad/s: above this any velocity is a diverged simulation (G1 joints: < 40 rad/s)
CONTROL_SPEC = _S.mjSTATE_CTRL.value | _S.mjSTATE_MOCAP_POS.value | _S.mjSTATE_MOCAP_QUAT.value


def _warning(msg: str) -> None:
    # MuJoCo's default handler appends to MUJOCO_LOG.TXT in the working directory
    _log.warning("mujoco: %s", msg)


def resolve_threads(threads: int) -> int:
    """0: one per CPU core; otherwise as given (1 steps in the calling thread)."""
    return max(1, os.cpu_count() or 1) if threads <= 0 else threads


class MujocoSim(Simulator):
    def __init__(self, *, num_envs: int, fixed_pelvis: bool, control_dt: float, substeps: int, device: str = "cpu",
                 threads: int = 1, physics: PhysicsConfig | None = None):
        self.num_envs, self.fixed_pelvis, self.control_dt, self.substeps = num_envs, fixed_pelvis, control_dt, substeps
        self.device = device
        self.threads = resolve_threads(threads)
        base = build_model(fixed_pelvis, round(control_dt / substeps, 9), physics)
        self.base = base
        self.lay = lay = Layout(base, fixed_pelvis)
        self.models = [copy.copy(base) for _ in range(num_envs)]
        mujoco.set_mju_user_warning(_warning)
        # state layout: time, qpos, qvel (then act etc., empty for this model)
        self.nstate = mujoco.mj_stateSize(base, STATE_SPEC)
        self.nctrl = mujoco.mj_stateSize(base, CONTROL_SPEC)
        self._qpos = slice(1, 1 + base.nq)
        self._qvel = slice(1 + base.nq, 1 + base.nq + base.nv)
        scratch = mujoco.MjData(base)
        scratch.qpos[lay.joint_qpos] = 0.0
        mujoco.mj_forward(base, scratch)
        st = np.empty(self.nstate)
        mujoco.mj_getState(base, scratch, st, STATE_SPEC)
        self.x = np.tile(st, (num_envs, 1))                     # (N, nstate) every environment's physics state
        self.ctrl = np.zeros((num_envs, base.nu))               # last joint targets and grip commands
        self.kp_scale = np.ones(num_envs)
        self.box_size = np.tile(base.geom_size[lay.box_geom] * 2, (num_envs, 1))
        self._enabled = True
        self.unstable = np.zeros(num_envs, dtype=bool)          # MuJoCo reset the data after a divergence
        self._datas = [mujoco.MjData(base) for _ in range(self.threads)]
        self._pool = rollout.Rollout(nthread=self.threads if self.threads > 1 else 0)
        self._kin = mujoco.MjData(base)
        self._warm = np.zeros((num_envs, base.nv))
        self._out = np.empty((num_envs, substeps, self.nstate))
        self._sens = np.empty((num_envs, substeps, base.nsensordata))
        self._keys = np.zeros((num_envs, 4, 3))
        self._update_kinematics()
        # actuator force = gain * ctrl + bias1 * q + bias2 * qdot (position actuators); the
        # model's force / control clamps, applied as MuJoCo applies them
        a = lay.actuator
        self._force_lim = base.actuator_forcelimited[a].astype(bool)
        self._force_rng = base.actuator_forcerange[a]
        self._ctrl_lim = base.actuator_ctrllimited[a].astype(bool)
        self._ctrl_rng = base.actuator_ctrlrange[a]

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32, device=self.device)

    def close(self) -> None:
        self._pool.close()

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()

    # -- Simulator ----------------------------------------------------------------
    def reset_envs(self, ids, qpos, qvel, box_pose, box_size, box_mass, box_friction, kp_scale) -> None:
        lay = self.lay
        ids = ids.cpu().numpy()
        qpos, qvel, box_pose = (x.double().cpu().numpy() for x in (qpos, qvel, box_pose))
        box_size, box_mass, box_friction, kp_scale = (x.double().cpu().numpy() for x in
                                                      (box_size, box_mass, box_friction, kp_scale))
        for k, i in enumerate(ids):  # resets only: per-environment model parameters
            mi = self.models[i]
            set_box(mi, lay, box_size[k], float(box_mass[k]), float(box_friction[k]), scratch=self._kin)
            set_pd_scale(mi, lay, kp_scale[k] if self._enabled else 0.0)
            set_grip_enabled(mi, lay, self._enabled)
        x = np.zeros((len(ids), self.nstate))
        q = x[:, self._qpos]
        q[:, lay.joint_qpos] = qpos[:, 7:]
        q[:, lay.root_qpos:lay.root_qpos + 7] = qpos[:, :7]
        q[:, lay.box_qpos:lay.box_qpos + 7] = box_pose
        v = x[:, self._qvel]
        v[:, lay.joint_dof] = qvel[:, 6:]
        v[:, lay.root_dof:lay.root_dof + 6] = qvel[:, :6]
        self.x[ids] = x  # time 0; q and v are views into x
        self.ctrl[ids] = 0.0
        self.ctrl[np.ix_(ids, lay.actuator)] = qpos[:, 7:]
        self.kp_scale[ids] = kp_scale
        self.box_size[ids] = box_size
        self._warm[ids] = 0.0
        self.unstable[ids] = False
        self._update_kinematics(ids)

    def step(self, targets, grip, base_from=None, base_to=None) -> None:
        lay, n, s = self.lay, self.num_envs, self.substeps
        self.ctrl[:, lay.actuator] = targets.double().cpu().numpy()
        self.ctrl[:, lay.grip] = grip.double().cpu().numpy()
        control = np.empty((n, s, self.nctrl))
        control[:, :, :self.base.nu] = self.ctrl[:, None, :]
        if self.fixed_pelvis:
            if base_from is None or base_to is None:
                b0 = b1 = self.x[:, self._qpos][:, lay.root_qpos:lay.root_qpos + 7]
            else:
                b0, b1 = base_from.double().cpu().numpy(), base_to.double().cpu().numpy()
            a = (np.arange(1, s + 1) / s)[None, :, None]                          # (1, s, 1)
            nu = self.base.nu
            control[:, :, nu:nu + 3] = (1 - a) * b0[:, None, :3] + a * b1[:, None, :3]
            control[:, :, nu + 3:nu + 7] = nlerp(b0[:, None, 3:], b1[:, None, 3:], a)
        t_expected = self.x[:, 0] + s * self.base.opt.timestep
        self._pool.rollout(self.models, self._datas, self.x, control, control_spec=CONTROL_SPEC, nstep=s,
                           initial_warmstart=self._warm, state=self._out, sensordata=self._sens, skip_checks=True)
        self.x = self._out[:, -1].copy()
        # MuJoCo resets a diverged data (time back to 0) and carries on: the clock tells
        self.unstable |= self.x[:, 0] < t_expected - 0.5 * self.base.opt.timestep
        self.unstable |= ~np.isfinite(self.x).all(-1)
        # MuJoCo only resets at 1e10: a box flung at hundreds of m/s is diverged long before
        # (seen with the 5 kg box in the grasp), and its values would poison the observation
        # normaliser until then
        self.unstable |= np.abs(self.x[:, self._qvel]).max(-1) > MAX_SPEED
        self._update_kinematics()

    def _update_kinematics(self, ids=None) -> None:
        """Palm sites and elbows (world) of environments ``ids`` (all: None) from their qpos."""
        lay, m, d = self.lay, self.base, self._kin
        qs = self.x[:, self._qpos]
        for i in range(self.num_envs) if ids is None else ids:
            d.qpos[:] = qs[i]
            mujoco.mj_kinematics(m, d)
            self._keys[i, :2] = d.site_xpos[lay.palm_sites]
            self._keys[i, 2:] = d.xpos[lay.elbow_bodies]

    def actuator_force(self) -> np.ndarray:
        """(N, 29) joint actuator forces at the current state (PD law, MuJoCo's clamps)."""
        lay = self.lay
        q = self.x[:, self._qpos][:, lay.joint_qpos]
        qd = self.x[:, self._qvel][:, lay.joint_dof]
        ctrl = self.ctrl[:, lay.actuator]
        ctrl = np.where(self._ctrl_lim, np.clip(ctrl, self._ctrl_rng[:, 0], self._ctrl_rng[:, 1]), ctrl)
        scale = self.kp_scale[:, None] if self._enabled else 0.0
        f = scale * (lay.kp * (ctrl - q) - lay.kd * qd)
        return np.where(self._force_lim, np.clip(f, self._force_rng[:, 0], self._force_rng[:, 1]), f)

    def state(self) -> SimState:
        lay = self.lay
        q, v = self.x[:, self._qpos], self.x[:, self._qvel]
        qpos = np.concatenate([q[:, lay.root_qpos:lay.root_qpos + 7], q[:, lay.joint_qpos]], 1)
        qvel = np.concatenate([v[:, lay.root_dof:lay.root_dof + 6], v[:, lay.joint_dof]], 1)
        box = q[:, lay.box_qpos:lay.box_qpos + 7]
        boxv = v[:, lay.box_dof:lay.box_dof + 6]
        # six tensors, the fields before ``unstable``
        return SimState(*cast("tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]",
                              (self._t(a) for a in (qpos, qvel, box, boxv, self._keys, self.actuator_force()))),
                        unstable=torch.as_tensor(self.unstable.copy(), device=self.device))

    def push_box(self, ids, velocity) -> None:
        v = velocity.double().cpu().numpy()
        dof = self._qvel.start + self.lay.box_dof
        self.x[ids.cpu().numpy(), dof:dof + 3] += v

    def set_torque_enabled(self, enabled: bool) -> None:
        self._enabled = enabled
        for i, m in enumerate(self.models):
            set_pd_scale(m, self.lay, self.kp_scale[i] if enabled else 0.0)
            set_grip_enabled(m, self.lay, enabled)
