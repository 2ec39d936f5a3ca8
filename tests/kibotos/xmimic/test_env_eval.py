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
