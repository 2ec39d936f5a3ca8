"""Landmark outliers (what MediaPipe does to occluded or foreshortened limbs) and joint
continuity in the retargeter: physical facts of the output, on the synthetic pickup with
generated outliers."""

from __future__ import annotations

import numpy as np
import pytest

from kibotos.xgen import g1
from kibotos.xgen.pose import clean
from kibotos.xgen.retarget import retarget
from kibotos.xgen.skeleton import IDX, validate_motion
from tests.kibotos.xgen.helpers import planted_drift

LEFT_FOOT = [IDX[n] for n in ("left_ankle", "left_heel", "left_foot_index")]
SPIKES = (40, 41, 70)  # frames of the 3 s / 30 fps pickup where the left foot jumps


def _with_outliers(keypoints: np.ndarray, seed: int = 0, outliers: bool = True) -> np.ndarray:
    """The left foot's landmarks jump 0.3 m (a two-frame jump out and back, and a single
    frame), the right knee's shin shrinks to a fifth in one frame, 1 cm jitter everywhere."""
    rng = np.random.default_rng(seed)
    kp = keypoints + rng.normal(0.0, 0.01, keypoints.shape)
    if not outliers:
        return kp
    for t in SPIKES:
        kp[t, LEFT_FOOT] += np.array([0.0, -0.3, 0.1])  # up (y down) and away
    knee, ankle = IDX["right_knee"], IDX["right_ankle"]
    kp[55, ankle] = kp[55, knee] + 0.2 * (kp[55, ankle] - kp[55, knee])
    return kp


@pytest.fixture(scope="module")
def corrupted(pickup, xcfg):
    kp = _with_outliers(pickup.motion.keypoints)
    return clean(validate_motion(kp, None, pickup.fps, source="test"), xcfg.pose)


@pytest.fixture(scope="module")
def corrupted_robot(corrupted, xcfg):
    return retarget(corrupted[0], xcfg)[0]


@pytest.fixture(scope="module")
def jittered_robot(pickup, xcfg):
    """The same jitter without the outliers: what the corrupted motion should retarget to."""
    kp = _with_outliers(pickup.motion.keypoints, outliers=False)
    return retarget(clean(validate_motion(kp, None, pickup.fps, source="test"), xcfg.pose)[0], xcfg)[0]


def test_outliers_are_rejected_filled_and_recorded(pickup, corrupted):
    motion, metrics = corrupted
    truth = pickup.motion.keypoints
    for t in SPIKES:
        assert (motion.confidence[t, LEFT_FOOT] == 0).all()  # rejected, confidence recorded as 0
        assert np.linalg.norm(motion.keypoints[t, LEFT_FOOT] - truth[t, LEFT_FOOT], axis=1).max() < 0.05
    assert motion.confidence[55, IDX["right_ankle"]] == 0
    assert np.linalg.norm(motion.keypoints[55, IDX["right_ankle"]] - truth[55, IDX["right_ankle"]]) < 0.05
    assert metrics["outliers_by_landmark"]["left_ankle"] >= len(SPIKES)
    assert metrics["outlier_fraction"] < 0.02  # the jitter itself is not an outlier


def test_honest_keypoints_have_no_outliers(pickup, xcfg):
    motion, metrics = clean(pickup.motion, xcfg.pose)
    assert metrics["outlier_fraction"] == 0.0
    assert (motion.confidence == pickup.motion.confidence).all()


def test_no_joint_step_above_the_velocity_limit(pickup, xcfg):
    """Raw (uncleaned) outliers: the retargeter alone bounds every joint's step."""
    kp = _with_outliers(pickup.motion.keypoints, seed=1)
    robot, _ = retarget(validate_motion(kp, None, pickup.fps, source="test"), xcfg)
    bound = g1.velocity_limits() / pickup.fps * xcfg.retarget.max_joint_speed_factor
    assert (np.abs(np.diff(robot.qpos[:, 7:], axis=0)) <= bound + 1e-9).all()


def test_outlier_frames_stay_near_their_neighbours(jittered_robot, corrupted_robot):
    q, clean_q = corrupted_robot.qpos[:, 7:], jittered_robot.qpos[:, 7:]
    for t in (*SPIKES, 55):
        assert np.abs(q[t] - clean_q[t]).max() < 0.1  # as if the outlier had not been there
        # no kink at the outlier frame beyond the motion's own curvature there
        kink = np.abs(q[t] - 0.5 * (q[t - 1] + q[t + 1])).max()
        assert kink < np.abs(clean_q[t] - 0.5 * (clean_q[t - 1] + clean_q[t + 1])).max() + 0.02
    # no hip or shoulder branch flip anywhere: no joint more than 0.35 rad from the outlier-free solution
    assert np.abs(q - clean_q).max() < 0.35


def test_planted_feet_do_not_slide_with_outliers(corrupted_robot):
    soles = g1.Kin().sole_points(corrupted_robot.qpos)
    assert corrupted_robot.planted.mean() > 0.4
    assert planted_drift(soles.mean(axis=2)[..., :2], corrupted_robot.planted) < 0.02
    assert soles[..., 2].min() > -1e-3
