"""Gate D — joint limits from the registry, degrees sent as radians, joint names."""

from __future__ import annotations

import numpy as np
import pytest

from kibotos.config.gates import load_config
from kibotos.errors import ConfigError
from kibotos.robots import get_robot
from kibotos.synthetic.samples import EXPECTED
from processors.gate_d_limits import GATE_ID, limit_stats, limit_stats_direct
from tests.fixtures.episodes import PANDA, ROBOT_IDS, ROBOTS, manifest_for, run_gate_on, small_bundle, variants_of

CONFIG = load_config()
UR5 = ("ur5", "joint-limited-v1")


def _home(robot, n: int = 100) -> np.ndarray:
    return np.tile(robot.home_qpos, (n, 1)).astype(np.float64)


def _run(tmp_path, robot, q, config=None, manifest=None):
    path = small_bundle(tmp_path / "e.zarr.zip", robot, timestamps_ms=np.arange(len(q), dtype=np.int64) * 20,
                        joint_pos=q.astype(np.float32), manifest=manifest)
    return run_gate_on(GATE_ID, path, config)


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_genuine_passes(samples, key):
    res = run_gate_on(GATE_ID, samples.path(key))
    assert res.passed, (res.reason_code, res.metrics)
    assert res.metrics["violation_fraction"] == 0.0
    assert res.metrics["max_abs_revolute"] < 2 * np.pi
    assert res.thresholds == CONFIG.gate_d.model_dump()
    assert res.metrics["wall_ms"] > 0


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
@pytest.mark.parametrize("variant", variants_of(GATE_ID))
def test_rejects_its_failure_classes(samples, key, variant):
    res = run_gate_on(GATE_ID, samples.path(key, variant))
    assert (res.passed, res.reason_code) == (False, EXPECTED[variant][1]), res.metrics


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
@pytest.mark.parametrize("side", ["lower", "upper"])
@pytest.mark.parametrize("beyond_samples, excess, passes", [
    (100, -0.001, True),   # every sample just inside limit + margin
    (1, +0.001, True),     # 1 % of samples beyond: allowed
    (2, +0.001, False),    # 2 % beyond
])
def test_limit_plus_margin_boundary(tmp_path, key, side, beyond_samples, excess, passes):
    """Revolute joints get ``limit_margin_rad``, prismatic ones ``limit_margin_m``; each
    joint type is exercised where the robot has it."""
    robot = get_robot(*key)
    q = _home(robot)
    for prismatic in (False, True):
        j = next((i for i, t in enumerate(robot.joint_types) if (t == "prismatic") == prismatic), None)
        if j is None:
            continue
        margin = CONFIG.gate_d.limit_margin_m if prismatic else CONFIG.gate_d.limit_margin_rad
        edge = robot.pos_upper[j] + margin + excess if side == "upper" else robot.pos_lower[j] - margin - excess
        q[:beyond_samples, j] = edge
    res = _run(tmp_path, robot, q)
    assert res.passed is passes, res.metrics
    assert passes or res.reason_code == "joint_limit_violation"
    assert res.metrics["violation_fraction"] == (0.0 if excess < 0 else beyond_samples / 100)


def test_prismatic_joints_use_the_metre_margin(tmp_path):
    """A finger 1 cm beyond its limit is a violation although 1 cm < the radian margin."""
    robot = get_robot(*PANDA)
    j = robot.joint_names.index("panda_finger_joint1")
    q = _home(robot)
    q[:, j] = robot.pos_upper[j] + 0.01
    res = _run(tmp_path, robot, q)
    assert (res.passed, res.reason_code) == (False, "joint_limit_violation")
    assert res.metrics["worst_joint"] == "panda_finger_joint1"


def test_degrees_are_told_apart_from_violations(tmp_path):
    robot = get_robot(*UR5)
    t = np.arange(100)[:, None] / 50.0
    q = robot.home_qpos + 0.5 * np.sin(t + np.arange(robot.dof))
    res = _run(tmp_path, robot, np.rad2deg(q))
    assert (res.passed, res.reason_code) == (False, "units_degrees_suspected"), res.metrics
    assert res.metrics["violation_fraction_if_degrees"] == 0.0


def test_a_subset_of_joints_in_any_order_is_accepted(tmp_path):
    robot = get_robot(*PANDA)
    names = ["panda_joint4", "panda_joint1", "panda_finger_joint2"]
    idx = [robot.joint_names.index(n) for n in names]
    q = _home(robot)[:, idx]
    res = _run(tmp_path, robot, q, manifest=manifest_for(robot, joint_names=names))
    assert res.passed, res.metrics
    # the limits follow the names: panda_joint4's upper limit is below 0, so +0.5 violates it
    q[:, 0] = 0.5
    res = _run(tmp_path / "b", robot, q, manifest=manifest_for(robot, joint_names=names))
    assert (res.passed, res.metrics["worst_joint"]) == (False, "panda_joint4")


def test_unknown_joint_names(tmp_path):
    robot = get_robot(*PANDA)
    names = [*robot.joint_names[:-1], "tail_joint"]
    res = _run(tmp_path, robot, _home(robot), manifest=manifest_for(robot, joint_names=names))
    assert (res.passed, res.reason_code) == (False, "unknown_joint_names")
    assert res.metrics["unknown_joints"] == ["tail_joint"]


def test_tighter_config_rejects_a_genuine_sample(samples):
    strict = CONFIG.model_copy(update={"gate_d": CONFIG.gate_d.model_copy(update={"limit_margin_rad": -1.5})})
    res = run_gate_on(GATE_ID, samples.path(UR5), strict)
    assert (res.passed, res.reason_code) == (False, "joint_limit_violation"), res.metrics
    assert res.thresholds["limit_margin_rad"] == -1.5


def test_per_robot_overrides_apply_to_that_robot_only(samples, tmp_path):
    robot = get_robot(*PANDA)
    q = _home(robot)
    q[:3, 0] = robot.pos_upper[0] + 0.2  # 3 % of samples beyond
    config = CONFIG.model_copy(update={"robots": {"franka_panda@fer-v1": {"gate_d": {"max_violation_fraction": 0.05}}}})
    assert config.for_robot(*PANDA).gate_d.max_violation_fraction == 0.05
    assert config.for_robot(*PANDA).gate_d.limit_margin_rad == CONFIG.gate_d.limit_margin_rad
    assert config.for_robot(*UR5) is config
    res = _run(tmp_path, robot, q, config)
    assert res.passed, res.metrics
    assert res.thresholds["max_violation_fraction"] == 0.05
    assert not _run(tmp_path / "default", robot, q).passed
    other = config.model_copy(update={"robots": {"ur5@joint-limited-v1": {"gate_d": {"max_violation_fraction": 0.05}}}})
    assert not _run(tmp_path / "other", robot, q, other).passed


def test_override_of_an_unknown_section_is_a_config_error():
    config = CONFIG.model_copy(update={"robots": {"franka_panda@fer-v1": {"gate_z": {"x": 1}}}})
    with pytest.raises(ConfigError):
        config.for_robot(*PANDA)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_limit_stats_from_extremes_equal_the_sample_by_sample_form(dtype):
    """Each joint's extremes give the excess, the largest revolute angle and the smallest
    margin bit for bit, and the violation fraction is the counted one: streams within
    their limits, beyond them, on the boundary, with NaN and inf, prismatic joints."""
    rng = np.random.default_rng(7)
    for trial in range(300):
        T, J = int(rng.integers(1, 200)), int(rng.integers(1, 8))
        lower = -rng.uniform(0.5, 3.0, J)
        upper = rng.uniform(0.5, 3.0, J)
        revolute = rng.random(J) < 0.8 if trial % 5 else np.zeros(J, dtype=bool)
        margin = np.where(revolute, 0.05, 0.005)
        q = rng.uniform(lower * rng.uniform(0.3, 1.2), upper * rng.uniform(0.3, 1.2), (T, J)).astype(dtype)
        if trial % 7 == 0:
            q[rng.integers(T), rng.integers(J)] = (lower - margin)[0] if J else 0.0
        if trial % 11 == 0:
            q[rng.integers(T), rng.integers(J)] = np.nan
        if trial % 13 == 0:
            q[rng.integers(T), rng.integers(J)] = np.inf
        ours = limit_stats(q, lower, upper, margin, revolute)
        ref = limit_stats_direct(q, lower, upper, margin, revolute)
        assert ours[0] == ref[0] or (np.isnan(ours[0]) and np.isnan(ref[0])), trial
        np.testing.assert_array_equal(ours[1], ref[1])
        np.testing.assert_array_equal(np.array(ours[2:]), np.array(ref[2:]))
