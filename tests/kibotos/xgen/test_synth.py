import numpy as np
import pytest

from kibotos.xgen.phases import PHASES
from kibotos.xgen.skeleton import IDX, mp_world_to_zup, read_keypoints, write_keypoints
from kibotos.xgen.synth import cargo_pickup


@pytest.mark.parametrize("bone", [("left_hip", "left_knee"), ("right_knee", "right_ankle"),
                                  ("left_shoulder", "left_elbow"), ("right_elbow", "right_wrist")])
def test_bone_lengths_are_constant(pickup, bone):
    a, b = (pickup.world[:, IDX[k]] for k in bone)
    length = np.linalg.norm(a - b, axis=1)
    assert np.ptp(length) < 1e-6


def test_phases_in_order_and_all_present(pickup):
    order = [p for i, p in enumerate(pickup.phase) if i == 0 or p != pickup.phase[i - 1]]
    assert order == list(range(len(PHASES)))


def test_box_rests_on_the_floor_until_lifted_and_after_placing(pickup):
    z = pickup.box_pose[:, 2]
    rest = pickup.box_size[2] / 2
    lifted = np.isin(pickup.phase, [PHASES.index("lift"), PHASES.index("carry"), PHASES.index("place")])
    assert np.allclose(z[~lifted], rest)
    assert z.max() > rest + 0.5
    # palms hold the box faces while it is off the floor
    width = np.linalg.norm(pickup.palms[:, 0] - pickup.palms[:, 1], axis=1)
    assert np.allclose(width[lifted], pickup.box_size[1], atol=1e-3)


def test_feet_touch_the_floor_and_never_go_below(pickup):
    soles = pickup.world[:, [IDX[k] for k in ("left_heel", "right_heel", "left_foot_index", "right_foot_index")], 2]
    assert soles.min() >= 0.0
    assert soles.min(axis=1).max() < 0.03  # some sole point near the floor in every frame


def test_mediapipe_view_is_hip_centred_and_rotates_with_the_camera():
    a = cargo_pickup(2.0, 20.0, camera_yaw=0.0)
    b = cargo_pickup(2.0, 20.0, camera_yaw=0.8)
    hip = 0.5 * (a.motion.keypoints[:, IDX["left_hip"]] + a.motion.keypoints[:, IDX["right_hip"]])
    assert np.allclose(hip, 0.0)
    za, zb = mp_world_to_zup(a.motion.keypoints), mp_world_to_zup(b.motion.keypoints)
    c, s = np.cos(0.8), np.sin(0.8)
    rot = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])  # world -> camera turned by +0.8
    assert np.allclose(za @ rot.T, zb, atol=1e-9)
    assert za[..., 2].max() > 0.5  # z-up: the head is above the hips


def test_keypoints_file_round_trip(tmp_path, pickup):
    path = write_keypoints(tmp_path / "kp.npz", pickup.motion)
    back = read_keypoints(path)
    assert back.fps == pickup.motion.fps
    assert np.allclose(back.keypoints, pickup.motion.keypoints, atol=1e-6)
