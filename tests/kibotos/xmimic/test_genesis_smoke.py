"""The Genesis backend (the GPU default) must not rot: build a 2-environment full-body
scene on the CPU, reset it from a clip, take two control steps, read a finite state."""

import torch

from kibotos.xmimic.sim import make_simulator


def test_genesis_backend_builds_and_steps(clips):
    c = clips[0]
    sim = make_simulator("genesis", num_envs=2, fixed_pelvis=False, control_dt=1 / c.fps, substeps=4)
    ids = torch.arange(2)
    q = torch.as_tensor(c.qpos[[0, 0]], dtype=torch.float32)
    qd = torch.zeros(2, 35)
    box = torch.as_tensor(c.object_pose[[0, 0]], dtype=torch.float32)
    sim.reset_envs(ids, q, qd, box, torch.as_tensor(c.box_size[None].repeat(2, 0)), torch.full((2,), 2.0),
                   torch.ones(2), torch.ones(2))
    for _ in range(2):
        sim.step(q[:, 7:], torch.zeros(2, 2))
    st = sim.state()
    assert st.qpos.shape == (2, 36) and st.key_body_pos.shape == (2, 4, 3) and st.box_pose.shape == (2, 7)
    assert torch.isfinite(st.qpos).all() and torch.isfinite(st.box_pose).all()
    # two PD steps from the reference pose: the joints stay near it, the pelvis near its start
    assert (st.qpos[:, 7:] - q[:, 7:]).abs().max() < 0.3
    assert (st.qpos[:, :3] - q[:, :3]).norm(dim=-1).max() < 0.2
