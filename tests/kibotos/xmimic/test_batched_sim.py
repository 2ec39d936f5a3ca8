"""The batched MuJoCo backend (one ``mujoco.rollout`` call steps every environment) must give
the transitions that stepping each environment's own ``MjData`` one by one gives, and a
batched environment the rewards and observations of single-environment ones."""

import copy

import mujoco
import numpy as np
import torch

from kibotos.xmimic.env import XMimicEnv
from kibotos.xmimic.model import build_model, set_box, set_grip_enabled, set_pd_scale
from kibotos.xmimic.sim.mujoco_sim import MujocoSim, nlerp


def _plain_steps(qpos, box0, fps, box_size, mass, kp, targets, grips, substeps, lay):
    """One environment stepped with mj_step in Python: the reference semantics."""
    m = copy.copy(build_model(True, round(1 / fps / substeps, 9)))
    set_box(m, lay, box_size, mass, 1.0)
    set_pd_scale(m, lay, kp)
    set_grip_enabled(m, lay, True)
    d = mujoco.MjData(m)
    q0 = qpos[0]
    d.qpos[lay.joint_qpos] = q0[7:]
    d.qpos[lay.root_qpos:lay.root_qpos + 7] = q0[:7]
    d.qpos[lay.box_qpos:lay.box_qpos + 7] = box0
    out = []
    for t, (tg, gr) in enumerate(zip(targets, grips)):
        d.ctrl[lay.actuator] = tg
        d.ctrl[lay.grip] = gr
        d.qacc_warmstart[:] = 0.0  # the batched backend starts each control step cold too
        b0, b1 = qpos[t, :7], qpos[t + 1, :7]
        for s in range(substeps):
            a = (s + 1) / substeps
            d.mocap_pos[lay.mocap] = (1 - a) * b0[:3] + a * b1[:3]
            d.mocap_quat[lay.mocap] = nlerp(b0[3:], b1[3:], np.array([a]))
            mujoco.mj_step(m, d)
        mujoco.mj_kinematics(m, d)
        out.append((d.qpos[lay.joint_qpos].copy(), d.qpos[lay.box_qpos:lay.box_qpos + 7].copy(),
                    d.site_xpos[lay.palm_sites].copy()))
    return out


def test_rollout_backend_matches_plain_mj_step(clips):
    n, substeps, steps = 3, 8, 12
    picked = clips[:n]
    sim = MujocoSim(num_envs=n, fixed_pelvis=True, control_dt=1 / picked[0].fps, substeps=substeps, threads=2)
    sizes = np.stack([c.box_size for c in picked])
    masses, kps = np.array([c.mass_kg for c in picked]), np.array([1.0, 0.9, 1.1])
    f = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    sim.reset_envs(torch.arange(n), f([c.qpos[0] for c in picked]), torch.zeros(n, 35),
                   f([c.object_pose[0] for c in picked]), f(sizes), f(masses), torch.ones(n), f(kps))
    rng = np.random.default_rng(0)
    # the reference's next frame plus a residual, and the clip's grip: the box gets squeezed
    targets = [np.stack([c.qpos[t + 1, 7:] for c in picked]) + 0.05 * rng.standard_normal((n, 29))
               for t in range(steps)]
    grips = [np.stack([c.contact[t + 1, :2] for c in picked]).astype(float) for t in range(steps)]
    batched = []
    for t in range(steps):
        # the float32 tensors the environment passes
        sim.step(f(targets[t]), f(grips[t]), f([c.qpos[t, :7] for c in picked]), f([c.qpos[t + 1, :7] for c in picked]))
        st = sim.state()
        batched.append((st.qpos[:, 7:].double().numpy(), st.box_pose.double().numpy(), st.key_body_pos[:, :2].double().numpy()))
    assert not sim.unstable.any()
    r32 = lambda a: f(a).double().numpy()  # noqa: E731  (the same float32-rounded inputs)
    for i, c in enumerate(picked):
        plain = _plain_steps(r32(c.qpos), r32(c.object_pose[0]), c.fps, r32(sizes[i]), r32(masses[i]), r32(kps[i]),
                             [r32(tg[i]) for tg in targets], [g[i] for g in grips], substeps, sim.lay)
        for t in range(steps):
            for got, want in zip((b[i] for b in batched[t]), plain[t]):
                assert np.abs(got - want).max() < 1e-4, (i, t, np.abs(got - want).max())
    # the joints moved: the comparison is not between two resting states
    assert np.abs(batched[-1][0] - batched[0][0]).max() > 0.01


def test_batched_env_matches_single_envs(clips, xcfg):
    n, steps = 3, 15
    batched = XMimicEnv(clips[:n], xcfg, num_envs=n, training=False)
    singles = [XMimicEnv([c], xcfg, num_envs=1, training=False) for c in clips[:n]]
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        act = 0.5 * torch.randn(n, batched.num_actions, generator=gen)
        obs, rew, done, _ = batched.step(act)
        for i, env in enumerate(singles):
            o, r, d, _ = env.step(act[i:i + 1])
            assert torch.allclose(rew[i], r[0], atol=1e-5), (i, rew[i], r[0])
            assert torch.allclose(obs["proprio"][i], o["proprio"][0], atol=1e-4)
            assert torch.allclose(obs["privileged"][i], o["privileged"][0], atol=1e-4)
            assert bool(done[i]) == bool(d[0])
