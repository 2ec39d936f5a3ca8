"""The robot model registry: every registered model loads with aligned, sane limits and
batched forward kinematics; unknown models are refused with the known ones listed."""

from __future__ import annotations

import numpy as np
import pytest

from kibotos.errors import UnknownRobotModel
from kibotos.robots import get_robot, list_robots
from kibotos.robots.kinematics import kinematics_for
from tests.fixtures.episodes import ROBOT_IDS, ROBOTS

EXPECTED_DOF = {"unitree_g1": 29, "franka_panda": 9, "ur5": 6}


def test_registry_holds_the_documented_models():
    assert list_robots() == sorted(list_robots())
    assert {m for m, _ in list_robots()} >= set(EXPECTED_DOF)


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_every_robot_loads_with_aligned_limits(key):
    robot = get_robot(*key)
    assert robot.key == key
    assert robot.model_path.is_file()
    assert robot.dof == len(robot.joint_names) == len(robot.joint_types) > 0
    assert len(set(robot.joint_names)) == robot.dof, "joint names must be unique"
    for name in ("pos_lower", "pos_upper", "vel_limit", "acc_limit", "jerk_limit", "home_qpos"):
        arr = getattr(robot, name)
        assert arr.shape == (robot.dof,), name
        assert np.all(np.isfinite(arr)), name
    assert np.all(robot.pos_lower < robot.pos_upper)
    assert np.all(robot.vel_limit > 0)
    assert np.all(robot.acc_limit > 0) and np.all(robot.jerk_limit > 0)
    assert np.all((robot.pos_lower <= robot.home_qpos) & (robot.home_qpos <= robot.pos_upper))
    assert set(robot.joint_types) <= {"revolute", "continuous", "prismatic"}


@pytest.mark.parametrize("model_id, dof", sorted(EXPECTED_DOF.items()))
def test_joint_counts(model_id, dof):
    (key,) = [k for k in list_robots() if k[0] == model_id]
    assert get_robot(*key).dof == dof


def test_franka_counts_its_prismatic_finger_joints():
    panda = get_robot("franka_panda", "fer-v1")
    fingers = [n for n, t in zip(panda.joint_names, panda.joint_types) if t == "prismatic"]
    assert fingers == ["panda_finger_joint1", "panda_finger_joint2"]
    assert panda.joint_names[:2] == ("panda_joint1", "panda_joint2")


def test_get_robot_returns_one_instance_per_key():
    key = list_robots()[0]
    assert get_robot(*key) is get_robot(*key)


@pytest.mark.parametrize("model_id, revision", [("no_such_robot", "v1"), ("franka_panda", "no-such-revision")])
def test_unknown_model_or_revision_lists_the_known_ones(model_id, revision):
    with pytest.raises(UnknownRobotModel) as info:
        get_robot(model_id, revision)
    assert info.value.reason_code == "unknown_robot_model"
    message = str(info.value)
    assert f"{model_id}@{revision}" in message
    for m, r in list_robots():
        assert f"{m}@{r}" in message


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_batched_fk_matches_single_configurations(key):
    robot = get_robot(*key)
    kin = kinematics_for(*key)
    rng = np.random.default_rng(0)
    qs = rng.uniform(robot.pos_lower, robot.pos_upper, (8, robot.dof))
    batch = kin.link_positions(qs)
    assert batch.shape == (8, len(robot.keypoint_links), 3)
    assert np.all(np.isfinite(batch))
    singles = np.concatenate([kin.link_positions(q[None]) for q in qs])
    np.testing.assert_allclose(batch, singles, atol=1e-12)
    # one configuration repeated: identical rows
    repeated = kin.link_positions(np.tile(robot.home_qpos, (16, 1)))
    np.testing.assert_allclose(repeated, np.broadcast_to(repeated[:1], repeated.shape), atol=1e-12)
    np.testing.assert_allclose(repeated[0], kin.link_positions(robot.home_qpos)[0], atol=1e-12)
    # different configurations really give different positions (the batch is not broadcast)
    assert np.abs(batch[0] - batch[1]).max() > 1e-3


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_end_effector_links_are_in_the_chain(key):
    robot = get_robot(*key)
    poses = kinematics_for(*key).link_poses(robot.home_qpos[None], robot.end_effector_links)
    assert poses.shape == (1, len(robot.end_effector_links), 4, 4)
    np.testing.assert_allclose(poses[0, :, 3], np.tile([0, 0, 0, 1.0], (len(robot.end_effector_links), 1)))


@pytest.mark.parametrize(
    "key, joint, moves, stays",
    [
        (("franka_panda", "fer-v1"), "panda_finger_joint1", "panda_leftfinger", "panda_rightfinger"),
        (("franka_panda", "fer-v1"), "panda_finger_joint2", "panda_rightfinger", "panda_leftfinger"),
        (("unitree_g1", "29dof-rev1.0"), "left_knee_joint", "left_ankle_roll_link", "right_ankle_roll_link"),
        (("unitree_g1", "29dof-rev1.0"), "right_elbow_joint", "right_wrist_yaw_link", "left_wrist_yaw_link"),
    ],
)
def test_fk_follows_registry_joint_order(key, joint, moves, stays):
    """The chain's own joint order differs from the registry's: a joint named in the
    registry must move its own links and nothing else."""
    robot = get_robot(*key)
    kin = kinematics_for(*key)
    j = robot.joint_names.index(joint)
    q0 = robot.home_qpos.copy()
    q1 = q0.copy()
    q1[j] = q0[j] + 0.1 * (robot.pos_upper[j] - robot.pos_lower[j])
    p0, p1 = kin.link_positions(np.stack([q0, q1]), (moves, stays))
    assert np.linalg.norm(p1[0] - p0[0]) > 1e-3
    np.testing.assert_allclose(p1[1], p0[1], atol=1e-12)
