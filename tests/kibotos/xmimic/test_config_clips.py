import dataclasses
import json
import shutil

import numpy as np
import pytest

from kibotos.errors import ConfigError
from kibotos.xmimic.clips import XMimicError, heldout_variants, load_clip, load_clips, resample, variant
from kibotos.xmimic.config import REWARD_TERMS, parse_xmimic_config


def test_packaged_config_is_versioned_and_names_every_reward_term(xcfg):
    assert xcfg.config_version.startswith("xmimic-")
    assert set(xcfg.reward.weights) == set(REWARD_TERMS)
    assert xcfg.task_config("arms_only").fixed_pelvis and xcfg.task_config("full_body").policy_joints == "all"


def test_config_refuses_unknown_or_positive_penalty_terms(xcfg):
    raw = xcfg.model_dump()
    raw["reward"]["weights"]["bogus"] = 1.0
    with pytest.raises(ConfigError):
        parse_xmimic_config(raw)
    raw = xcfg.model_dump()
    raw["reward"]["weights"]["torque"] = 0.5
    with pytest.raises(ConfigError):
        parse_xmimic_config(raw)


def test_clips_load_with_reference_key_bodies(all_clips):
    assert len(all_clips) >= 10
    c = all_clips[0]
    assert c.key_body_pos.shape == (c.frames, 4, 3)
    # palms hold the box during the hold: the reference palms sit near the box
    mid = (c.hold["lift"] + c.hold["place"]) // 2
    assert np.linalg.norm(c.key_body_pos[mid, :2].mean(0) - c.object_pose[mid, :3]) < 0.2
    assert 0 < c.episode_frames("carry_end") <= c.frames


def test_bad_clip_folders_get_reason_codes(tmp_path, clips_dir):
    with pytest.raises(XMimicError) as e:
        load_clips(tmp_path / "nothing")
    assert e.value.reason_code == "xmimic_clips_missing"
    bad = tmp_path / "bad"
    shutil.copytree(next(clips_dir.iterdir()), bad)
    meta = json.loads((bad / "metadata.json").read_text())
    meta["object"]["size_m"] = [0.3, -0.1, 0.2]
    (bad / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(XMimicError) as e:
        load_clip(bad)
    assert e.value.reason_code == "xmimic_clip_invalid"
    np.savez(bad / "clip.npz", robot_qpos=np.zeros((5, 36)))
    with pytest.raises(XMimicError) as e:
        load_clip(bad)
    assert e.value.reason_code == "xmimic_clip_invalid"


def test_heldout_variants_move_the_box_not_the_body(clips, xcfg):
    c = clips[0]
    v = variant(c, size_scale=1.4, offset_xy=(0.05, 0.0))
    assert np.allclose(v.qpos, c.qpos)
    assert np.allclose(v.box_size, c.box_size * 1.4)
    assert np.allclose(v.object_pose[:, 0], c.object_pose[:, 0] + 0.05)
    assert np.allclose(v.object_pose[:, 2], c.object_pose[:, 2] + 0.2 * c.box_size[2])  # still resting on the floor
    h = xcfg.eval.heldout
    vs = heldout_variants(clips, h)
    per_clip = len(h.size_scales) + len(h.offsets_m) + len(h.yaw_deg)
    assert len(vs) == min(len(clips), h.max_source_clips) * per_clip
    assert len({x.name for x in vs}) == len(vs)


def test_a_variant_keeps_its_source_clips_hand_box_relation_scaled_with_the_box(clips):
    c = clips[0]
    rel = c.palm_relation()
    hold = slice(c.hold["lift"], c.hold["place"])
    # the relation of a training clip is its palms in its own box frame: near the box's side faces
    assert (np.abs(rel[hold, :, 1]).max() < c.box_size[1]) and (np.abs(rel[hold]).max() < c.box_size.max())
    moved, turned, grown = variant(c, offset_xy=(0.06, 0.0)), variant(c, yaw_deg=20.0), variant(c, size_scale=1.45)
    assert np.allclose(moved.palm_relation(), rel) and np.allclose(turned.palm_relation(), rel)
    assert np.allclose(grown.palm_relation(), 1.45 * rel)
    # what the unmoved reference palms say about the moved box is 6 cm off the tracked relation
    naive = dataclasses.replace(moved, palms_in_box=None).palm_relation()
    assert np.abs(np.linalg.norm(naive[hold] - rel[hold], axis=-1) - 0.06).max() < 1e-6


def test_a_clip_at_another_rate_is_resampled_to_the_same_motion(clips, xcfg):
    c = clips[0]
    slow = resample(c, 15.0)  # as if the source video ran at 15 fps
    assert slow.fps == 15.0 and slow.frames == (c.frames - 1) // 2 + 1
    assert np.allclose(slow.qpos[1], c.qpos[2]) and np.allclose(slow.object_pose[-1], c.object_pose[2 * (slow.frames - 1)])
    assert slow.hold["lift"] == round(c.hold["lift"] / 2)
    back = resample(slow, 30.0)
    # back at 30 fps: the same duration, joints within what linear interpolation of a 15 fps motion loses
    assert abs(back.frames - c.frames) <= 1
    k = min(back.frames, c.frames)
    assert np.abs(back.qpos[:k, 7:] - c.qpos[:k, 7:]).max() < 0.05
    assert np.abs(back.key_body_pos[:k] - c.key_body_pos[:k]).max() < 0.03
    np.testing.assert_allclose(np.linalg.norm(back.qpos[:, 3:7], axis=-1), 1.0, atol=1e-9)
    # the environment plays both at its control rate: the same episode length in frames
    from kibotos.xmimic.env import XMimicEnv

    env = XMimicEnv([c, slow], xcfg, num_envs=2, training=False)
    assert env.control_dt == 1 / xcfg.sim.control_fps
    lengths = env.ref.lengths.tolist()
    assert abs(lengths[0] - lengths[1]) <= 1, lengths
