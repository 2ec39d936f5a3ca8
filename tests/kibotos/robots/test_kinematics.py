"""Serial-chain kinematics (base frame -> one link): forward kinematics equal to the
full-tree FK, the geometric Jacobian equal to pytorch-kinematics' own and to finite
differences, for every end-effector link of every registered robot."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import pytorch_kinematics as pk
import torch

from kibotos.robots import get_robot
from kibotos.robots.kinematics import SerialKinematics, kinematics_for, serial_kinematics_for
from tests.fixtures.episodes import ROBOTS


def _links():
    for key in ROBOTS:
        for link in get_robot(*key).end_effector_links:
            yield pytest.param(key, link, id=f"{key[0]}-{link}")


@pytest.mark.parametrize("key, link", list(_links()))
def test_serial_chain_matches_full_fk_and_jacobian(key, link):
    robot = get_robot(*key)
    chain = serial_kinematics_for(*key, link)
    assert set(chain.joint_names) <= set(robot.joint_names) and chain.dof >= 6
    q = np.random.default_rng(0).uniform(robot.pos_lower, robot.pos_upper, (64, robot.dof))
    np.testing.assert_allclose(chain.link_poses(q), kinematics_for(*key).link_poses(q, (link,))[:, 0], atol=1e-12)

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        full = pk.build_chain_from_urdf(robot.model_path.read_bytes())
    reference = pk.SerialChain(full, link, robot.base_frame).to(dtype=torch.float64)
    assert tuple(reference.get_joint_parameter_names()) == chain.joint_names
    qc = torch.as_tensor(q[:, chain.joint_index])
    np.testing.assert_allclose(chain.link_jacobians(q), reference.jacobian(qc).numpy(), atol=1e-12)

    # and the linear rows against a finite difference of the position
    eps = 1e-7
    jac = chain.link_jacobians(q[:1])[0]
    for i, j in enumerate(chain.joint_index):
        dq = q[:1].copy()
        dq[0, j] += eps
        dp = (chain.link_poses(dq)[0, :3, 3] - chain.link_poses(q[:1])[0, :3, 3]) / eps
        np.testing.assert_allclose(dp, jac[:3, i], atol=1e-5)


def test_unknown_link_is_a_clear_error():
    with pytest.raises(ValueError, match="no serial chain"):
        SerialKinematics(get_robot(*ROBOTS[0]), "no_such_link")


@pytest.mark.parametrize("link", ["panda_leftfinger", "panda_rightfinger"])
def test_a_chain_with_a_prismatic_joint_matches_pytorch_kinematics(link):
    """The Panda's fingers slide: the folded chain handles a prismatic joint's axis and offset."""
    robot = get_robot("franka_panda", "fer-v1")
    chain = SerialKinematics(robot, link)
    assert chain.joint_names[-1].startswith("panda_finger_joint")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        full = pk.build_chain_from_urdf(robot.model_path.read_bytes())
    reference = pk.SerialChain(full, link, robot.base_frame).to(dtype=torch.float64)
    q = np.random.default_rng(1).uniform(robot.pos_lower, robot.pos_upper, (32, robot.dof))
    qc = torch.as_tensor(q[:, chain.joint_index])
    np.testing.assert_allclose(chain.link_poses(q), reference.forward_kinematics(qc).get_matrix().numpy(), atol=1e-12)
    np.testing.assert_allclose(chain.link_jacobians(q), reference.jacobian(qc).numpy(), atol=1e-12)
