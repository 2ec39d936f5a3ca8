"""The rendered procedural human is read by MediaPipe (the pose stage on real pixels)."""

import dataclasses

import numpy as np

from kibotos.xgen.pose import estimate
from kibotos.xgen.render import render_pickup
from kibotos.xgen.skeleton import IDX, mp_world_to_zup
from kibotos.xgen.synth import cargo_pickup


def test_mediapipe_detects_the_rendered_person_and_follows_the_hands(xcfg):
    full = cargo_pickup(6.0, 15.0, camera_yaw=0.6)
    idx = np.arange(0, len(full.world), 6)  # 15 frames across every phase
    pickup = dataclasses.replace(full, world=full.world[idx], box_pose=full.box_pose[idx])
    frames = render_pickup(pickup, width=300, height=400)
    motion, metrics = estimate(frames, 2.5, xcfg)
    assert metrics["detection_rate"] >= 0.9
    # the wrists' height over the pickup (down to the box, up, down) is what the video shows
    seen = mp_world_to_zup(motion.keypoints)
    truth = mp_world_to_zup(full.motion.keypoints[idx])
    for side in ("left", "right"):
        j = IDX[f"{side}_wrist"]
        assert np.corrcoef(seen[:, j, 2], truth[:, j, 2])[0, 1] > 0.7
