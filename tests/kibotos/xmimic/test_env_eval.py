"""The environment, the reward terms and SR/GSR on scripted policies."""

import torch

from kibotos.xmimic.config import REWARD_TERMS
from kibotos.xmimic.env import XMimicEnv
from kibotos.xmimic.evaluate import run_episodes


def test_observation_groups_and_logged_reward_terms(clips, xcfg):
    env = XMimicEnv(clips, xcfg, num_envs=2, training=True)
    obs = env.get_observations()
    assert set(obs.keys()) == {"proprio", "reference", "privileged", "mocap"}
    assert env.num_actions == 14
    _, rew, done, extras = env.step(torch.zeros(2, 14))
    assert rew.shape == (2,) and torch.isfinite(rew).all()
    assert {f"/reward/{k}" for k in REWARD_TERMS} <= set(extras["log"])



def _in_frame(pos, quat, p):
    """Points p (N, 3) in the frame (pos, quat wxyz) by rotation matrices (not the env's code path)."""
    w, x, y, z = quat.double().unbind(-1)
    r = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).view(-1, 3, 3)
    return torch.einsum("nji,nj->ni", r, (p - pos).double())


def test_observation_entries_are_the_quantities_they_name(clips, xcfg):
    """The observation is assembled from one batched rotation: each slice must still be the
    quantity the module docstring names (checked against rotation matrices)."""
    env = XMimicEnv(clips, xcfg, num_envs=4, training=True, seed=5)
    gen = torch.Generator().manual_seed(1)
    for _ in range(7):
        obs, *_ = env.step(0.3 * torch.randn(4, 14, generator=gen))
    st = env.state
    root_p, root_q = st.qpos[:, :3], st.qpos[:, 3:7]
    tol = dict(atol=1e-5, rtol=1e-5)
    box_local = _in_frame(root_p, root_q, st.box_pose[:, :3])
    torch.testing.assert_close(obs["privileged"][:, :3].double(), box_local, **tol)
    torch.testing.assert_close(obs["mocap"][:, :3].double(), _in_frame(root_p, root_q, env.mocap_box[:, :3]), **tol)
    # the reference one frame ahead: its joints less the current ones, then its key bodies and box
    ahead = env.frame + 1
    rq = env.ref.qpos[env.clip_idx, ahead]
    torch.testing.assert_close(obs["reference"][:, :29], rq[:, 7:] - st.qpos[:, 7:], **tol)
    keys = env.ref.keys[env.clip_idx, ahead]
    for k in range(4):
        torch.testing.assert_close(obs["reference"][:, 29 + 3 * k:32 + 3 * k].double(),
                                   _in_frame(root_p, root_q, keys[:, k]), **tol)
    rbox = env.ref.box[env.clip_idx, ahead, :3] + env.box_offset
    torch.testing.assert_close(obs["reference"][:, 41:44].double(), _in_frame(root_p, root_q, rbox), **tol)
    # gravity in the pelvis frame
    g = torch.tensor([0.0, 0.0, -1.0]).expand(4, 3)
    torch.testing.assert_close(obs["proprio"][:, 73:76].double(), _in_frame(torch.zeros(4, 3), root_q, g), **tol)

def test_reference_by_pd_succeeds_and_zero_torque_fails(clips, xcfg):
    ref = run_episodes(clips, xcfg, baseline="reference_pd")
    limp = run_episodes(clips, xcfg, baseline="zero_torque")
    assert len(ref.clips) == len(limp.clips) == len(clips)
    assert ref.rate >= 0.75, [(c.clip, c.final_height_error_m, c.mean_hand_box_error_m) for c in ref.clips]
    assert limp.rate == 0.0
    # the limp arms never lift the box: its final height error is the lift height
    assert min(c.final_height_error_m for c in limp.clips) > 0.2


def test_reference_tracking_earns_more_reward_than_zero_torque(clips, xcfg):
    totals = {}
    for name, on in (("pd", True), ("limp", False)):
        env = XMimicEnv(clips, xcfg, num_envs=len(clips), training=False)
        env.sim.set_torque_enabled(on)
        for _ in range(60):
            env.step(torch.zeros(len(clips), 14))
        totals[name] = env.stats.pop()["reward_terms"]
    assert totals["pd"]["total"] > totals["limp"]["total"] + 0.1
    assert totals["pd"]["key_body_pos"] > totals["limp"]["key_body_pos"]


def test_failure_weighted_sampling_draws_failing_clips(clips, xcfg):
    cfg = xcfg.with_overrides(di={"failure_weighted_sampling": True, "sampling_floor": 0.05})
    env = XMimicEnv(clips, cfg, num_envs=4, training=True)
    env.clip_failure = torch.tensor([1.0] + [0.0] * (len(clips) - 1))
    drawn = []
    for _ in range(25):
        env.reset_envs(torch.arange(4))
        drawn += env.clip_idx.tolist()
    # weights 1.05 : 0.05 each: the failing clip gets ~88 % of the episodes (uniform: 25 %)
    assert drawn.count(0) / len(drawn) > 0.6


def test_box_noise_moves_the_reference_box_with_the_box(clips, xcfg):
    cfg = xcfg.with_overrides(di={"box_noise_m": 0.05, "box_noise_moves_reference": True, "max_start_fraction": 0.1},
                              dr={"enabled": False})
    env = XMimicEnv(clips, cfg, num_envs=8, training=True, seed=3)
    st = env.sim.state()
    # episodes start before the grasp: the box is moved, and its reference with it
    assert env.box_offset[:, :2].abs().max() > 0.01
    assert torch.allclose(env._ref_box()[:, :2], st.box_pose[:, :2], atol=1e-4)
    # the reference body is not moved: the policy has to adapt its reach
    assert torch.allclose(env._ref_frame().qpos[:, :2], st.qpos[:, :2], atol=1e-3)


def test_hands_count_as_holding_by_the_clips_relation_or_where_the_body_puts_them(clips, xcfg):
    """Both episodes at their first frame (the box where the reference has it). The hand-box
    error is the closer of the two targets: 10 cm off the relation but 5 cm from where the
    reference body puts the palms passes (a box moved along the palm faces, held off-centre),
    10 cm from both fails."""
    from kibotos.xmimic.clips import variant

    c = clips[0]
    env = XMimicEnv([c, variant(c, offset_xy=(0.06, 0.0))], xcfg, num_envs=2, training=False)
    ids = torch.arange(2)
    env.hand_err_n[:] = 10.0
    env.hand_err_sum[:] = 10 * 0.10
    env.hand_err_body_sum[:] = 10 * 0.05
    out = env.outcome(ids)
    assert out["success"].tolist() == [True, True], out
    assert torch.allclose(out["mean_hand_box_error_m"], torch.tensor([0.05, 0.05]))
    env.hand_err_body_sum[:] = 10 * 0.10
    assert env.outcome(ids)["success"].tolist() == [False, False]
    env.hand_err_sum[:] = 10 * 0.05
    assert env.outcome(ids)["success"].tolist() == [True, True]


def test_on_a_training_clip_the_two_hand_targets_are_one(clips, xcfg):
    env = XMimicEnv(clips[:2], xcfg, num_envs=2, training=False)
    for _ in range(40):
        env.step(torch.zeros(2, 14))
    assert env.hand_err_n.min() > 0
    torch.testing.assert_close(env.hand_err_sum, env.hand_err_body_sum, atol=1e-4, rtol=1e-4)
