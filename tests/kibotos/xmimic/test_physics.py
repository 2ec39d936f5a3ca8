"""The MuJoCo scene's physics: the box an environment sets is the box the dynamics moves,
the solver options of config ``sim.physics`` reach the model, and a heavy box in the grasp
stays stable under a policy's residuals."""

import copy

import mujoco
import numpy as np
import pytest
import torch

from kibotos.xmimic.config import PhysicsConfig
from kibotos.xmimic.env import XMimicEnv
from kibotos.xmimic.model import Layout, build_model, set_box


@pytest.mark.parametrize(("mass", "size"), [(1.0, (0.2, 0.3, 0.25)), (5.0, (0.25, 0.24, 0.39)), (6.5, (0.4, 0.3, 0.2))])
def test_box_mass_and_inertia_reach_the_dynamics(mass, size):
    m = copy.copy(build_model(True, 1 / 240))
    lay = Layout(m, True)
    set_box(m, lay, np.array(size), mass, 1.0)
    d = mujoco.MjData(m)
    d.qpos[lay.box_qpos:lay.box_qpos + 3] = [3.0, 0.0, 2.0]  # in the air, touching nothing
    b = lay.box_dof
    force, torque = np.array([10.0, -4.0, 0.0]), np.array([0.3, -0.2, 0.5])
    d.qfrc_applied[b:b + 6] = np.concatenate([force, torque])
    mujoco.mj_forward(m, d)
    sx, sy, sz = size
    inertia = mass / 12 * np.array([sy * sy + sz * sz, sx * sx + sz * sz, sx * sx + sy * sy])
    assert np.allclose(d.qacc[b:b + 3], force / mass + np.array([0, 0, -9.81]), atol=1e-6)
    assert np.allclose(d.qacc[b + 3:b + 6], torque / inertia, rtol=1e-6)


def test_physics_options_reach_the_model():
    fast = PhysicsConfig(cone="pyramidal", contact_condim=3, joint_frictionloss=False, jacobian="sparse",
                         iterations=30, ls_iterations=10, tolerance=1e-6)
    m0, m1 = build_model(True, 1 / 240), build_model(True, 1 / 240, fast)
    assert m0.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC and m1.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL
    assert m1.opt.jacobian == mujoco.mjtJacobian.mjJAC_SPARSE
    assert (m1.opt.iterations, m1.opt.ls_iterations, m1.opt.tolerance) == (30, 10, 1e-6)
    lay = Layout(m1, True)
    assert m1.geom_condim[lay.box_geom] == 3 and m0.geom_condim[lay.box_geom] == 4
    # without the joints' dry friction a step carries no friction rows (one per joint before)
    rows = []
    for m in (m0, m1):
        d = mujoco.MjData(m)
        mujoco.mj_forward(m, d)
        rows.append(int((d.efc_type == mujoco.mjtConstraint.mjCNSTR_FRICTION_DOF).sum()))
    assert rows == [29, 0]


@pytest.mark.parametrize("physics", ["packaged", "first_built"])
def test_heavy_box_in_the_grasp_stays_stable(all_clips, xcfg, physics):
    """The 5 kg clip with random residuals on the arms (a policy exploring, squeezing the
    box): no environment diverges. (With the compiled 2 kg box in the dynamics every one
    of them did.)"""
    cfg = xcfg if physics == "packaged" else xcfg.with_overrides(sim={"physics": {}})
    heavy = max(all_clips, key=lambda c: c.mass_kg)
    assert heavy.mass_kg >= 4.0
    n = 6
    env = XMimicEnv([heavy], cfg, num_envs=n, training=False)
    gen = torch.Generator().manual_seed(0)
    unstable = torch.zeros(n, dtype=torch.bool)
    lifted = torch.zeros(n)
    z0 = env.state.box_pose[:, 2].clone()
    for _ in range(env.max_episode_length):
        env.step(0.5 * torch.randn(n, env.num_actions, generator=gen))
        unstable |= env.state.unstable
        lifted = torch.maximum(lifted, env.state.box_pose[:, 2] - z0)
    assert not unstable.any()
    assert (lifted > 0.1).all()  # the box was in the grasp, not left on the floor
