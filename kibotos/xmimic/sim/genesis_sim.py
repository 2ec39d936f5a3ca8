"""Genesis backend (the default where CUDA is present): one scene with ``num_envs``
parallel environments of the G1 (Menagerie MJCF), a floor and the cargo box; PD through
Genesis' position control with the MuJoCo model's gains (kp 500, critically damped).

What differs from the MuJoCo backend, and why (README "XMimic: GPU"):
- the box geometry is one entity shared by all environments: every environment gets the
  size passed for the first reset (Genesis cannot resize a geometry per environment);
  mass, friction and PD gains are per environment;
- the palm grip (an adhesion actuator in MuJoCo) and the palm pads are not modelled:
  the hands grasp with their own collision meshes;
- a fixed pelvis is set kinematically every control step (pose and velocity from the
  reference), not welded.
Genesis is imported lazily (9-25 s on a CPU) and its kernels compile on the first build
(93 s cold, ~10 s warm measured here on a CPU)."""

from __future__ import annotations

import torch

from kibotos.xgen import g1
from kibotos.xmimic.sim.base import SimState, Simulator

_GS = None


def _genesis(device: str):
    global _GS
    if _GS is None:
        from gpu_consumers.playback import configure_caches, default_cache_dir

        configure_caches(default_cache_dir())
        import genesis as gs

        if not gs._initialized:
            gs.init(backend=gs.gpu if str(device).startswith("cuda") else gs.cpu, logging_level="warning")
        _GS = gs
    return _GS


class GenesisSim(Simulator):
    def __init__(self, *, num_envs: int, fixed_pelvis: bool, control_dt: float, substeps: int, device: str = "cpu"):
        gs = _genesis(device)
        self.num_envs, self.fixed_pelvis, self.control_dt, self.device = num_envs, fixed_pelvis, control_dt, device
        self.scene = gs.Scene(sim_options=gs.options.SimOptions(dt=control_dt, substeps=substeps),
                              show_viewer=False, rigid_options=gs.options.RigidOptions(enable_self_collision=False))
        self.scene.add_entity(gs.morphs.Plane())
        self.robot = self.scene.add_entity(gs.morphs.MJCF(file=str(g1.mjcf_path())))
        self.box = self.scene.add_entity(gs.morphs.Box(size=(0.25, 0.25, 0.35), pos=(1.0, 0.0, 0.175)))
        self.scene.build(n_envs=num_envs)
        names = g1.joint_names()
        self.dofs = [self.robot.get_joint(n).dofs_idx_local[0] for n in names]
        kp = torch.full((len(names),), 500.0)
        self.kp0 = kp
        self.robot.set_dofs_kp(kp, self.dofs)
        self.robot.set_dofs_kv(2 * torch.sqrt(kp * 0.1), self.dofs)  # ~critical damping for ~0.1 kg m^2 links
        self.links = [self.robot.get_link(n).idx_local for n in ("left_wrist_yaw_link", "right_wrist_yaw_link",
                                                                  "left_elbow_link", "right_elbow_link")]
        self._enabled = True

    def _t(self, x) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32).to(self.device)

    def reset_envs(self, ids, qpos, qvel, box_pose, box_size, box_mass, box_friction, kp_scale) -> None:
        envs = ids.to(self.device)
        self.robot.set_pos(qpos[:, :3], envs_idx=envs)
        self.robot.set_quat(qpos[:, 3:7], envs_idx=envs)
        self.robot.set_dofs_position(qpos[:, 7:], self.dofs, envs_idx=envs)
        self.robot.set_dofs_velocity(qvel[:, 6:], self.dofs, envs_idx=envs)
        self.box.set_pos(box_pose[:, :3], envs_idx=envs)
        self.box.set_quat(box_pose[:, 3:], envs_idx=envs)
        self.robot.control_dofs_position(qpos[:, 7:], self.dofs, envs_idx=envs)

    def step(self, targets, grip, base_from=None, base_to=None) -> None:
        if self.fixed_pelvis and base_to is not None:
            self.robot.set_pos(base_to[:, :3])
            self.robot.set_quat(base_to[:, 3:])
        self.robot.control_dofs_position(targets if self._enabled else self.robot.get_dofs_position(self.dofs),
                                         self.dofs)
        self.scene.step()

    def state(self) -> SimState:
        n = self.num_envs
        qpos = torch.cat([self._t(self.robot.get_pos()), self._t(self.robot.get_quat()),
                          self._t(self.robot.get_dofs_position(self.dofs))], -1)
        qvel = torch.cat([self._t(self.robot.get_vel()), self._t(self.robot.get_ang()),
                          self._t(self.robot.get_dofs_velocity(self.dofs))], -1)
        box = torch.cat([self._t(self.box.get_pos()), self._t(self.box.get_quat())], -1)
        boxv = torch.cat([self._t(self.box.get_vel()), self._t(self.box.get_ang())], -1)
        keys = self._t(self.robot.get_links_pos())[:, self.links].reshape(n, 4, 3)
        torque = self._t(self.robot.get_dofs_control_force(self.dofs))
        return SimState(qpos, qvel, box, boxv, keys, torque)

    def push_box(self, ids, velocity) -> None:
        envs = ids.to(self.device)
        v = self._t(self.box.get_vel())[envs] + velocity
        self.box.set_dofs_velocity(v, dofs_idx_local=[0, 1, 2], envs_idx=envs)

    def set_torque_enabled(self, enabled: bool) -> None:
        self._enabled = enabled
        self.robot.set_dofs_kp(self.kp0 * (1.0 if enabled else 0.0), self.dofs)
