"""The rollout preview: the evaluation episode rendered offscreen by MuJoCo (the robot as
capsules between its bodies, the box, the floor), encoded as an mp4 the policy page
shows; stored beside the policy in the object store (local and S3)."""

from __future__ import annotations

import numpy as np

from kibotos.media.video import probe_video
from kibotos.xmimic.env import XMimicEnv
from kibotos.xmimic.html import render_policy_html
from kibotos.xmimic.preview import ROBOT_RGBA, rollout_frames, write_preview


def _robot_pixels(frame: np.ndarray) -> int:
    rgb = np.array(ROBOT_RGBA[:3]) * 255
    # lit capsules: the hue of the robot colour, brighter or darker (blue dominant)
    f = frame.astype(int)
    return int(((f[..., 2] > f[..., 0] + 60) & (f[..., 2] > f[..., 1] + 30)).sum()) if rgb[2] > rgb[0] else 0


def test_rollout_preview_shows_the_robot_moving(clips, xcfg, tmp_path):
    frames, outcome = rollout_frames(clips[0], xcfg, None, width=160, height=120)
    env = XMimicEnv(clips[:1], xcfg, num_envs=1, backend="mujoco", training=False)
    # the first frame, then one per control step up to the end of carry (the step that ends
    # the episode returns the reset state, so it has no frame of its own)
    assert abs(len(frames) - env.max_episode_length) <= 1 and frames.shape[1:] == (120, 160, 3)
    assert outcome["success"]  # the reference replayed by PD lifts this clip's box (tested in test_env_eval too)
    assert _robot_pixels(frames[0]) > 100 and _robot_pixels(frames[-1]) > 100
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1.0  # the scene changed
    info = write_preview(clips[0], xcfg, None, tmp_path / "p" / "preview.mp4", width=160, height=120)
    data = (tmp_path / "p" / "preview.mp4").read_bytes()
    probe = probe_video(data)
    assert (probe.width, probe.height) == (160, 120) and info["frames"] == len(frames)
    page = render_policy_html({"policy_id": "p-1"}, preview_mp4=data)
    assert "<video" in page and "data:video/mp4;base64," in page


def test_a_stored_preview_is_found_beside_the_policy(object_store, tmp_path):
    import uuid

    from kibotos.xmimic.preview import find_preview, preview_key, store_preview

    store = object_store  # a local directory, then a fresh S3 bucket
    video = tmp_path / "preview.mp4"
    video.write_bytes(b"mp4 of p-1 " + uuid.uuid4().bytes)
    uri = store_preview(store, "p-1", video)
    assert uri == store.uri_for(preview_key("p-1")) == store.uri_for("xmimic/policies/p-1/preview.mp4")
    assert find_preview("p-1", store=store) == video.read_bytes()
    assert find_preview("p-2", store=store) is None
    local = tmp_path / "home" / "policies" / "p-2" / "preview.mp4"  # a preview only the local registry has
    local.parent.mkdir(parents=True)
    local.write_bytes(b"local")
    assert find_preview("p-2", store=store, home=tmp_path / "home") == b"local"
