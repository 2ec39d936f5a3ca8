import numpy as np
import pytest

from kibotos.robots import get_robot
from kibotos.xgen import g1
from kibotos.xgen.result import XGenError
from kibotos.xgen.retarget import retarget, run
from kibotos.xgen.skeleton import IDX, validate_motion
from kibotos.xgen.synth import cargo_pickup
from tests.kibotos.xgen.helpers import planted_drift


def test_mujoco_g1_matches_the_registered_robot():
    robot = get_robot(g1.ROBOT_ID, g1.ROBOT_REVISION)
    assert g1.joint_names() == robot.joint_names
    lo, hi = g1.joint_limits()
    assert np.allclose(lo, robot.pos_lower, atol=1e-3) and np.allclose(hi, robot.pos_upper, atol=1e-3)


def test_feet_on_the_floor_never_below(robot_motion):
    soles = g1.Kin().sole_points(robot_motion.qpos)[..., 2]  # (T, 2, 4)
    assert soles.min() > -1e-3  # no ground penetration
    assert np.abs(soles.min(axis=(1, 2))).max() < 2e-3  # no floating: some sole point on the floor
    # standing at the start: both feet flat on the floor (not just one toe)
    assert soles[0].max() < 0.01


def test_planted_feet_do_not_slide(robot_motion):
    soles = g1.Kin().sole_points(robot_motion.qpos)
    assert robot_motion.planted.mean() > 0.5
    assert planted_drift(soles.mean(axis=2)[..., :2], robot_motion.planted) < 0.02


def test_joint_limits_and_no_arm_flips(pickup, robot_motion):
    lo, hi = g1.joint_limits()
    q = robot_motion.qpos[:, 7:]
    assert (q >= lo - 1e-6).all() and (q <= hi + 1e-6).all()
    # a flip shows as a jump (>10 rad/s at 30 fps) or as ringing between two solutions
    assert np.abs(np.diff(q, axis=0)).max() < 0.35
    dq = np.diff(q, axis=0)
    big = np.abs(dq) > 0.1
    ringing = (dq[2:] * dq[1:-1] < 0) & (dq[1:-1] * dq[:-2] < 0) & big[2:] & big[1:-1] & big[:-2]
    assert not ringing.any()
    # the robot's elbows follow the human's: bent the human way, changing no faster
    w = pickup.world
    for side in g1.SIDES:
        upper = w[:, IDX[f"{side}_shoulder"]] - w[:, IDX[f"{side}_elbow"]]
        fore = w[:, IDX[f"{side}_wrist"]] - w[:, IDX[f"{side}_elbow"]]
        human = np.pi - np.arccos(np.sum(upper * fore, 1) / np.linalg.norm(upper, axis=1) / np.linalg.norm(fore, axis=1))
        robot = q[:, g1.joint_names().index(f"{side}_elbow_joint")]
        assert robot.min() > -0.2
        assert (np.abs(np.diff(robot)) <= np.abs(np.diff(human)) + 0.15).all()


def test_keypoint_residuals_are_small(robot_motion):
    assert robot_motion.residual.shape == (len(robot_motion), 10)
    assert robot_motion.residual.mean() < 0.03
    assert np.median(robot_motion.residual) < 0.01


def test_root_travels_the_scaled_walking_distance(pickup, robot_motion):
    human = pickup.world[-1, 23:25].mean(axis=0) - pickup.world[0, 23:25].mean(axis=0)
    robot = robot_motion.qpos[-1, :3] - robot_motion.qpos[0, :3]
    scale = 0.624 / 0.85  # G1 / human hip-to-ankle length
    assert np.linalg.norm(robot[:2]) == pytest.approx(scale * np.linalg.norm(human[:2]), rel=0.1)


def test_no_first_frame_dependence(pickup, robot_motion, xcfg):
    k = 20
    cut = validate_motion(pickup.motion.keypoints[k:], None, pickup.fps, source="test")
    later, _ = retarget(cut, xcfg)
    full = robot_motion.qpos[k:]
    assert np.abs(later.qpos[:, 7:] - full[:, 7:]).max() < 0.05
    assert np.abs(later.qpos[:, 2] - full[:, 2]).max() < 0.01
    # the cut clip starts at its own origin: compare displacements
    assert np.abs((later.qpos[:, :2] - later.qpos[0, :2]) - (full[:, :2] - full[0, :2])).max() < 0.01


def _in_pelvis_frame(qpos, names):
    kin = g1.Kin()
    out = np.empty((len(qpos), len(names), 3))
    for t, q in enumerate(qpos):
        d = kin.forward(q)
        rot = d.body("pelvis").xmat.reshape(3, 3)
        out[t] = (np.array([d.site(n).xpos for n in names]) - d.body("pelvis").xpos) @ rot
    return out


def test_camera_heading_changes_only_the_root_yaw(robot_motion, xcfg):
    turned, _ = retarget(cargo_pickup(3.0, 30.0, camera_yaw=0.9).motion, xcfg)
    legs = slice(0, 15)  # legs and waist: no redundancy
    assert np.abs(turned.qpos[:, 7:][:, legs] - robot_motion.qpos[:, 7:][:, legs]).max() < 0.03
    assert np.abs(turned.qpos[:, 2] - robot_motion.qpos[:, 2]).max() < 0.01
    names = ("left_palm", "right_palm", "left_toe", "right_toe")
    assert np.abs(_in_pelvis_frame(turned.qpos, names) - _in_pelvis_frame(robot_motion.qpos, names)).max() < 0.015


def test_gaps_and_wrong_units_get_reason_codes(pickup, xcfg):
    kp = pickup.motion.keypoints.copy()
    kp[5, 3] = np.nan
    result = run(validate_motion(kp, None, 30.0, source="test"), xcfg)
    assert not result.ok and result.reason_code == "xgen_keypoints_invalid"
    with pytest.raises(XGenError) as exc:
        validate_motion(pickup.motion.keypoints * 100.0, None, 30.0, source="test")
    assert exc.value.reason_code == "xgen_keypoints_units"


def test_jittery_keypoints_still_give_planted_feet_and_a_grasp(pickup, xcfg):
    """MediaPipe-like jitter (1 cm per landmark and frame), cleaned by the pose stage."""
    from kibotos.xgen.interaction import interact
    from kibotos.xgen.pose import clean

    noisy = pickup.motion.keypoints + np.random.default_rng(0).normal(0.0, 0.01, pickup.motion.keypoints.shape)
    motion, _ = clean(validate_motion(noisy, None, pickup.fps, source="test"), xcfg.pose)
    robot, _ = retarget(motion, xcfg)
    soles = g1.Kin().sole_points(robot.qpos)
    assert soles[..., 2].min() > -1e-3
    assert planted_drift(soles.mean(axis=2)[..., :2], robot.planted) < 0.02
    dq = np.diff(robot.qpos[:, 7:], axis=0)
    big = np.abs(dq) > 0.1
    assert not ((dq[2:] * dq[1:-1] < 0) & (dq[1:-1] * dq[:-2] < 0) & big[2:] & big[1:-1] & big[:-2]).any()
    clip, metrics = interact(robot, xcfg)
    assert metrics["max_face_distance_m"] < 0.02 and metrics["box_lift_m"] > 0.3
