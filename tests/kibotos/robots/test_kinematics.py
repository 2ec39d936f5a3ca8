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
    _numpy_chain_matches(chain, q)


def _numpy_chain_matches(chain: SerialKinematics, q: np.ndarray) -> None:
    """The NumPy chain (the IK solver's loop) gives the torch chain's pose and Jacobian."""
    rot, pos, jac = chain.rot_pos(torch.as_tensor(q[:, chain.joint_index]), True)
    rot_np, pos_np, jt_np = chain.numpy.rot_pos(q[:, chain.joint_index], True)
    np.testing.assert_allclose(rot_np, rot.numpy(), atol=1e-12)
    np.testing.assert_allclose(pos_np, pos.numpy(), atol=1e-12)
    np.testing.assert_allclose(jt_np, jac.numpy().transpose(0, 2, 1), atol=1e-12)
    np.testing.assert_allclose(chain.numpy.link_poses(q), chain.link_poses(q), atol=1e-12)
    # one configuration, and one that differs from the torch chain's is caught
    np.testing.assert_allclose(chain.numpy.rot_pos(q[:1, chain.joint_index])[1], pos.numpy()[:1], atol=1e-12)
    assert np.abs(chain.numpy.link_poses(q[::-1]) - chain.link_poses(q)).max() > 1e-3


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
    _numpy_chain_matches(chain, q)


def test_numpy_chain_with_slides_and_turned_axes():
    """The floating G1 (XGen's): slides along x, y, z and turns about three axes before the
    arm, so the NumPy chain's frames turned onto each axis are exercised off z as well."""
    robot = get_robot("unitree_g1", "29dof-rev1.0-floating")
    for link in robot.end_effector_links:
        chain = SerialKinematics(robot, link)
        assert chain.joint_names[0] == "floating_base_x" and chain.dof == 16
        q = np.random.default_rng(2).uniform(np.maximum(robot.pos_lower, -3), np.minimum(robot.pos_upper, 3),
                                             (32, robot.dof))
        _numpy_chain_matches(chain, q)
