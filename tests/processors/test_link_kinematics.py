"""Gate C's NumPy keypoint kinematics equal pytorch-kinematics' whole-tree pass
(``kibotos.robots.kinematics``) on every registered robot."""

from __future__ import annotations

import numpy as np
import pytest

from kibotos.robots import get_robot
from kibotos.robots.kinematics import kinematics_for
from processors.link_kinematics import LinkKinematics, link_kinematics_for
from tests.fixtures.episodes import ROBOT_IDS, ROBOTS


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_keypoint_positions_equal_pytorch_kinematics(key):
    robot = get_robot(*key)
    rng = np.random.default_rng(3)
    span = robot.pos_upper - robot.pos_lower
    # inside the limits, and beyond them (a hostile episode's joints are anything)
    q = np.concatenate([robot.home_qpos[None], rng.uniform(robot.pos_lower, robot.pos_upper, (200, robot.dof)),
                        rng.uniform(robot.pos_lower - span, robot.pos_upper + span, (50, robot.dof))])
    expected = kinematics_for(*key).link_positions(q)
    actual = link_kinematics_for(*key).link_positions(q)
    assert actual.shape == expected.shape == (q.shape[0], len(robot.keypoint_links), 3)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9)
    # one configuration as a 1-D vector
    np.testing.assert_allclose(link_kinematics_for(*key).link_positions(q[1]), expected[1:2], rtol=0, atol=1e-9)


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_every_link_of_the_tree_equals_pytorch_kinematics(key):
    # not only the keypoints: any link, fixed ones included
    robot = get_robot(*key)
    links = tuple(kinematics_for(*key).chain.get_link_names())
    q = np.random.default_rng(4).uniform(robot.pos_lower, robot.pos_upper, (20, robot.dof))
    np.testing.assert_allclose(LinkKinematics(robot, links).link_positions(q),
                               kinematics_for(*key).link_positions(q, links), rtol=0, atol=1e-9)


def test_an_unknown_link_is_refused():
    with pytest.raises(ValueError, match="no_such_link"):
        LinkKinematics(get_robot(*ROBOTS[0]), ("no_such_link",))
