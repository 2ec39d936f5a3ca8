"""Gate E — speed, acceleration and jerk bounds, teleports."""

from __future__ import annotations

import numpy as np
import pytest

from kibotos.config.gates import load_config
from kibotos.robots import get_robot
from kibotos.synthetic.samples import EXPECTED
from processors.gate_e_plausibility import GATE_ID
from tests.fixtures.episodes import ROBOT_IDS, ROBOTS, run_gate_on, small_bundle, variants_of

CONFIG = load_config()
UR5 = ("ur5", "joint-limited-v1")
HUGE = 1e6


def _run(tmp_path, robot, q, dt_ms: int = 20, config=None):
    ts = np.arange(len(q), dtype=np.int64) * dt_ms
    path = small_bundle(tmp_path / "e.zarr.zip", robot, timestamps_ms=ts, joint_pos=np.asarray(q, np.float32))
    return run_gate_on(GATE_ID, path, config)


def _only(bound: str):
    """The config with every bound but ``bound`` out of reach."""
    factors = {f"{b}_factor": (1.0 if b == bound else HUGE) for b in ("speed", "acc", "jerk")}
    return CONFIG.model_copy(update={"gate_e": CONFIG.gate_e.model_copy(update=factors)})


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_genuine_passes(samples, key):
    res = run_gate_on(GATE_ID, samples.path(key))
    assert res.passed, (res.reason_code, res.metrics)
    assert res.metrics["teleports"] == 0
    for name in ("speed", "acceleration", "jerk"):
        assert res.metrics[f"{name}_exceed_fraction"] <= CONFIG.gate_e.max_exceed_fraction
    assert res.thresholds == CONFIG.gate_e.model_dump() | {"window_samples": 13}  # 240 ms at 50 Hz
    assert res.metrics["wall_ms"] > 0


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
@pytest.mark.parametrize("variant", variants_of(GATE_ID))
def test_rejects_its_failure_classes(samples, key, variant):
    res = run_gate_on(GATE_ID, samples.path(key, variant))
    assert (res.passed, res.reason_code) == (False, EXPECTED[variant][1]), res.metrics


@pytest.mark.parametrize("jump, passes", [(0.19, True), (0.21, False)])
def test_teleport_minimum_jump(tmp_path, jump, passes):
    """At 50 Hz a UR5 joint may move 2 x 3.15 rad/s x 20 ms = 0.126 rad per sample, so
    ``teleport_min_rad`` (0.2) is the bound that decides."""
    robot = get_robot(*UR5)
    q = np.tile(robot.home_qpos, (500, 1))
    q[250:, 0] += jump
    res = _run(tmp_path, robot, q)
    assert res.metrics["teleports"] == (0 if passes else 1)
    assert res.passed is passes, res.metrics
    if not passes:
        assert res.reason_code == "teleport_detected"
        assert (res.metrics["first_teleport_frame"], res.metrics["first_teleport_joint"]) == (250, robot.joint_names[0])


@pytest.mark.parametrize("jump, teleport", [(0.6, False), (0.66, True)])
def test_teleport_velocity_bound(tmp_path, jump, teleport):
    """At 10 Hz the velocity bound decides: 2 x 3.15 rad/s x 100 ms = 0.63 rad."""
    robot = get_robot(*UR5)
    q = np.tile(robot.home_qpos, (100, 1))
    q[50:, 0] += jump
    res = _run(tmp_path, robot, q, dt_ms=100)
    assert res.metrics["teleports"] == int(teleport)
    assert teleport == (res.reason_code == "teleport_detected")


@pytest.mark.parametrize("bound, reason, derivative", [("speed", "speed_exceeded", 1),
                                                       ("acc", "acceleration_exceeded", 2),
                                                       ("jerk", "jerk_exceeded", 3)])
@pytest.mark.parametrize("ratio, passes", [(0.9, True), (1.2, False)])
def test_each_bound(tmp_path, bound, reason, derivative, ratio, passes):
    """A 0.5 Hz sine on one joint whose ``derivative``-th derivative peaks at ``ratio`` x
    that joint's bound (the other bounds out of reach): at 1.2 x, a third of all frames exceed."""
    robot = get_robot(*UR5)
    limit = {1: robot.vel_limit, 2: robot.acc_limit, 3: robot.jerk_limit}[derivative][0]
    w = 2 * np.pi * 0.5
    t = np.arange(400) / 50.0
    q = np.tile(robot.home_qpos, (400, 1))
    q[:, 0] += ratio * limit / w**derivative * np.sin(w * t)
    res = _run(tmp_path, robot, q, config=_only(bound))
    name = {"speed": "speed", "acc": "acceleration", "jerk": "jerk"}[bound]
    assert res.metrics[f"{name}_peak_ratio"] == pytest.approx(ratio, rel=0.05)
    assert res.passed is passes, res.metrics
    assert passes or res.reason_code == reason


@pytest.mark.parametrize("fast_samples, passes", [(22, True), (23, False)])
def test_exceed_fraction_boundary(tmp_path, fast_samples, passes):
    """A stretch at 1.3 x the speed limit inside 400 samples at rest: rejected only once
    more than 5 % of the frames exceed (22 fast samples: 4.9 %, 23: 5.15 %)."""
    robot = get_robot(*UR5)
    q = np.tile(robot.home_qpos, (400, 1))
    step = 1.3 * robot.vel_limit[0] * 0.02
    ramp = np.concatenate([np.zeros(200), np.arange(1, fast_samples + 1) * step,
                           np.full(200 - fast_samples, fast_samples * step)])
    q[:, 0] += ramp
    res = _run(tmp_path, robot, q, config=_only("speed"))
    frac = res.metrics["speed_exceed_fraction"]
    assert (frac <= CONFIG.gate_e.max_exceed_fraction) is passes, res.metrics
    assert res.passed is passes


def test_too_short_for_the_smoothing_window(tmp_path):
    robot = get_robot(*UR5)
    res = _run(tmp_path, robot, np.tile(robot.home_qpos, (11, 1)))
    assert (res.passed, res.reason_code) == (False, "too_few_samples")


def test_tighter_config_rejects_a_genuine_sample(samples):
    """Jerk bounds at 1 % and no noise tolerance (``noise_z`` 0: the raw derivatives judge):
    the 0.001 rad sensor noise of a genuine sample alone carries jerk past them."""
    strict = CONFIG.model_copy(update={"gate_e": CONFIG.gate_e.model_copy(update={"jerk_factor": 0.01,
                                                                                 "noise_z": 0.0})})
    res = run_gate_on(GATE_ID, samples.path(UR5), strict)
    assert (res.passed, res.reason_code) == (False, "jerk_exceeded"), res.metrics
    assert res.thresholds["jerk_factor"] == 0.01


def test_per_robot_override_relaxes_one_robot(samples):
    relaxed = CONFIG.model_copy(update={"robots": {"ur5@joint-limited-v1": {"gate_e": {"jerk_factor": 100.0}}}})
    res = run_gate_on(GATE_ID, samples.path(UR5, "jerk"), relaxed)
    assert res.passed, res.metrics
    assert res.thresholds["jerk_factor"] == 100.0
    other = run_gate_on(GATE_ID, samples.path(("franka_panda", "fer-v1"), "jerk"), relaxed)
    assert (other.passed, other.reason_code) == (False, "jerk_exceeded")
