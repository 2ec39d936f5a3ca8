"""Gate A — integrity, shapes, units, NaN/Inf, flatline, joint_vel consistency."""

from __future__ import annotations

import numpy as np
import pytest

from kibotos.config.gates import load_config
from kibotos.robots import get_robot, list_robots
from kibotos.synthetic import perturb
from kibotos.synthetic.samples import EXPECTED, make_episode
from processors.gate_a_integrity import GATE_ID, MIN_SAMPLES
from tests.fixtures.episodes import PANDA, ROBOT_IDS, ROBOTS, manifest_for, run_gate_on, small_bundle, variants_of

UR5 = ("ur5", "joint-limited-v1")
CONFIG = load_config()


def _t(n: int, dt_ms: int = 20) -> np.ndarray:
    return np.arange(n, dtype=np.int64) * dt_ms


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_genuine_passes(samples, key):
    res = run_gate_on(GATE_ID, samples.path(key))
    assert res.passed, (res.reason_code, res.metrics)
    assert res.flags == []  # joint_vel present and consistent
    assert res.metrics["T"] == 401 and res.metrics["J"] == get_robot(*key).dof
    assert res.metrics["frozen_fraction"] <= CONFIG.gate_a.flatline_max_fraction
    assert res.metrics["wall_ms"] > 0
    assert res.thresholds["flatline_max_fraction"] == CONFIG.gate_a.flatline_max_fraction
    assert res.thresholds["vel_consistency_max_nrmse"] == CONFIG.gate_a.vel_consistency_max_nrmse
    assert res.thresholds["min_samples"] == MIN_SAMPLES


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
@pytest.mark.parametrize("variant", variants_of(GATE_ID))
def test_rejects_its_failure_classes(samples, key, variant):
    res = run_gate_on(GATE_ID, samples.path(key, variant))
    assert not res.passed
    assert res.reason_code == EXPECTED[variant][1], res.metrics


def test_tighter_config_rejects_a_genuine_sample(samples, tmp_path):
    """The thresholds come from the config: with no velocity tolerance, a velocity stream 5 %
    off scale is inconsistent (the default tolerates it). Sensor noise never is: its share
    of the difference is taken out (``joint_vel_noise_rms``)."""
    strict = CONFIG.model_copy(update={"gate_a": CONFIG.gate_a.model_copy(
        update={"vel_consistency_abs_tol": 0.0, "vel_consistency_max_nrmse": 0.01})})
    ep = samples.episode(PANDA)
    path = perturb.copy_of(ep, "miner-test", joint_vel=ep.joint_vel * 1.05).write(tmp_path / "v.zarr.zip")
    assert run_gate_on(GATE_ID, path).passed
    res = run_gate_on(GATE_ID, path, strict)
    assert (res.passed, res.reason_code) == (False, "joint_vel_inconsistent")
    assert res.metrics["joint_vel_nrmse"] == pytest.approx(0.05, abs=0.01)
    assert res.thresholds["vel_consistency_max_nrmse"] == 0.01
    assert run_gate_on(GATE_ID, samples.path(PANDA), strict).metrics["joint_vel_noise_rms"] > 0


# --- joint_vel -------------------------------------------------------------------


def test_joint_vel_absent_passes_with_a_flag(tmp_path):
    path = small_bundle(tmp_path / "e.zarr.zip", get_robot(*PANDA))
    res = run_gate_on(GATE_ID, path)
    assert res.passed, res.metrics
    assert res.flags == ["joint_vel_computed"]


def _moving(robot, n: int = 200, amp: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions with an RMS speed near 0.67 rad/s and the gate's own finite-difference
    velocity of them (so a test controls nrmse exactly)."""
    ts = _t(n)
    t = ts[:, None] / 1000.0
    q = (robot.home_qpos + amp * np.sin(2 * np.pi * 0.5 * t + np.arange(robot.dof))).astype(np.float32)
    dq = np.gradient(q.astype(np.float64), ts / 1000.0, axis=0)
    return ts, q, dq


@pytest.mark.parametrize(
    "amp, bias, scale, passes",
    [
        (0.3, 0.0, 1.0, True),
        (0.05, 0.2, 1.0, True),   # RMS difference 0.2 rad/s < abs tol 0.25: consistent whatever the nrmse (~1.8)
        (0.05, 0.3, 1.0, False),  # 0.3 rad/s, nrmse ~2.7
        (0.3, 0.0, 1.45, True),   # nrmse 0.45 < 0.5, though the RMS difference (~0.3) is above the abs tol
        (0.3, 0.0, 1.55, False),  # nrmse 0.55 and RMS difference above the abs tol
    ],
)
def test_joint_vel_consistency_boundaries(tmp_path, amp, bias, scale, passes):
    """Inconsistent = RMS difference above ``vel_consistency_abs_tol`` AND nrmse above
    ``vel_consistency_max_nrmse``; each condition alone is not enough."""
    robot = get_robot(*UR5)
    ts, q, dq = _moving(robot, amp=amp)
    v = (dq * scale + bias).astype(np.float32)
    res = run_gate_on(GATE_ID, small_bundle(tmp_path / "e.zarr.zip", robot, timestamps_ms=ts, joint_pos=q, joint_vel=v))
    assert res.passed is passes, res.metrics
    assert passes or res.reason_code == "joint_vel_inconsistent"
    if scale != 1.0:
        assert res.metrics["joint_vel_nrmse"] == pytest.approx(scale - 1.0, abs=0.01)
        assert res.metrics["joint_vel_rms_diff"] > CONFIG.gate_a.vel_consistency_abs_tol
    if bias:
        assert res.metrics["joint_vel_nrmse"] > 1.0


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_genuine_high_rate_recording_passes(tmp_path, key):
    ep = make_episode(get_robot(*key), seed=0, rate_hz=500, duration_ms=3000)
    res = run_gate_on(GATE_ID, ep.write(tmp_path / "e.zarr.zip"))
    assert res.passed, res.metrics


# --- flatline, length ------------------------------------------------------------------


@pytest.mark.parametrize("frozen, passes", [(20, True), (21, False)])
def test_flatline_fraction_boundary(tmp_path, frozen, passes):
    """101 samples = 100 steps; 20 % frozen steps is allowed, 21 % is not."""
    robot = get_robot(*PANDA)
    ts, q, _ = _moving(robot, n=101, amp=0.05)
    for i in range(1, frozen + 1):  # freeze steps 1..frozen: q[i] = q[i-1]
        q[i] = q[i - 1]
    res = run_gate_on(GATE_ID, small_bundle(tmp_path / "e.zarr.zip", robot, timestamps_ms=ts, joint_pos=q))
    assert res.metrics["frozen_fraction"] == pytest.approx(frozen / 100)
    assert res.passed is passes
    assert passes or res.reason_code == "flatline_stream"


@pytest.mark.parametrize("n, passes", [(MIN_SAMPLES, True), (MIN_SAMPLES - 1, False)])
def test_minimum_length(tmp_path, n, passes):
    res = run_gate_on(GATE_ID, small_bundle(tmp_path / "e.zarr.zip", get_robot(*PANDA), samples_count=n))
    assert res.passed is passes, res.metrics
    assert passes or res.reason_code == "too_few_samples"


# --- units, model, datasets, dtypes, shapes, NaN ----------------------------------------


@pytest.mark.parametrize(
    "override, path",
    [
        ({"units": {"joint_pos": "deg", "joint_vel": "rad/s"}}, "units.joint_pos"),
        ({"units": {"joint_pos": "rad", "joint_vel": "deg/s"}}, "units.joint_vel"),
        ({"time_units": "s"}, "time_units"),
        ({"time_base": "unix"}, "time_base"),
    ],
)
def test_wrong_units_are_a_unit_mismatch(tmp_path, override, path):
    robot = get_robot(*PANDA)
    res = run_gate_on(GATE_ID, small_bundle(tmp_path / "e.zarr.zip", robot, manifest=manifest_for(robot, **override)))
    assert (res.passed, res.reason_code) == (False, "unit_mismatch")
    assert list(res.metrics["declared_units"]) == [path]


def test_unknown_robot_model_lists_the_known_ones(tmp_path):
    robot = get_robot(*PANDA)
    manifest = manifest_for(robot, robot_model_id="atlas", robot_model_revision="v9")
    res = run_gate_on(GATE_ID, small_bundle(tmp_path / "e.zarr.zip", robot, manifest=manifest))
    assert (res.passed, res.reason_code) == (False, "unknown_robot_model")
    for m, r in list_robots():
        assert f"{m}@{r}" in res.metrics["error"]
    assert "wall_ms" in res.metrics


def test_missing_video_is_a_missing_dataset(tmp_path):
    from kibotos.bundle import write_bundle

    robot = get_robot(*PANDA)
    path = write_bundle(tmp_path / "e.zarr.zip", manifest_for(robot), timestamps_ms=_t(50),
                        joint_pos=np.tile(robot.home_qpos, (50, 1)).astype(np.float32))
    res = run_gate_on(GATE_ID, path)
    assert (res.passed, res.reason_code) == (False, "missing_dataset")
    assert res.metrics["missing"] == ["video/primary/encoded|video/primary/frames"]


@pytest.mark.parametrize(
    "what, dtype",
    [("timestamps_ms", np.float64), ("joint_pos", np.int32), ("joint_pos", np.float16), ("joint_vel", np.int64)],
)
def test_contract_dtypes(tmp_path, what, dtype):
    robot = get_robot(*PANDA)
    ts, q, dq = _moving(robot, amp=0.05)
    arrays = {"timestamps_ms": ts, "joint_pos": q, "joint_vel": dq.astype(np.float32)}
    arrays[what] = arrays[what].astype(dtype)
    res = run_gate_on(GATE_ID, small_bundle(tmp_path / "e.zarr.zip", robot, **arrays))
    assert (res.passed, res.reason_code) == (False, "wrong_dtype")
    assert list(res.metrics["dtypes"]) == [f"kinematics/{what}"]


@pytest.mark.parametrize("problem", ["joint_pos_columns", "joint_vel_rows", "duplicate_names", "timestamps_2d"])
def test_shape_problems(tmp_path, problem):
    robot = get_robot(*PANDA)
    ts, q, dq = _moving(robot, amp=0.05)
    kw = {"timestamps_ms": ts, "joint_pos": q, "joint_vel": dq.astype(np.float32)}
    manifest = manifest_for(robot)
    if problem == "joint_pos_columns":
        kw["joint_pos"] = q[:, :-1]
    elif problem == "joint_vel_rows":
        kw["joint_vel"] = kw["joint_vel"][:-1]
    elif problem == "duplicate_names":
        manifest["joint_names"] = [*robot.joint_names[:-1], robot.joint_names[0]]
    else:
        kw["timestamps_ms"] = ts[:, None]
    res = run_gate_on(GATE_ID, small_bundle(tmp_path / "e.zarr.zip", robot, manifest=manifest, **kw))
    assert (res.passed, res.reason_code) == (False, "shape_mismatch"), res.metrics


def test_raw_frames_must_match_the_declared_frame_count(tmp_path):
    robot = get_robot(*PANDA)
    manifest = manifest_for(robot, video={"primary": {"fps": 10.0, "frame_count": 5}})  # 4 frames written
    res = run_gate_on(GATE_ID, small_bundle(tmp_path / "e.zarr.zip", robot, manifest=manifest))
    assert (res.passed, res.reason_code) == (False, "shape_mismatch")
    assert "video/primary/frames" in res.metrics["shapes"]


@pytest.mark.parametrize("where", ["joint_pos", "joint_vel", "objects/cup/pose"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_anywhere(tmp_path, where, value):
    robot = get_robot(*PANDA)
    ts, q, dq = _moving(robot, amp=0.05)
    v = dq.astype(np.float32)
    pose = np.tile(np.array([0.4, 0, 0.1, 1, 0, 0, 0], np.float32), (len(ts), 1))
    {"joint_pos": q, "joint_vel": v, "objects/cup/pose": pose}[where][50, 1] = value
    path = small_bundle(tmp_path / "e.zarr.zip", robot, timestamps_ms=ts, joint_pos=q, joint_vel=v,
                        extra_arrays={"objects/cup/timestamps_ms": ts, "objects/cup/pose": pose})
    res = run_gate_on(GATE_ID, path)
    assert (res.passed, res.reason_code) == (False, "non_finite_values")
    key = where if "/" in where else f"kinematics/{where}"
    assert res.metrics["non_finite"] == {key: 1}


# --- secondary cameras: optional, checked, never a reason to reject ------------------------

SECONDARY_CAMERA = {"intrinsics": {"fx": 10.0, "fy": 10.0, "cx": 4.0, "cy": 4.0, "width": 8, "height": 8},
                    "extrinsics": np.eye(4).tolist()}


def _with_secondary(path, *, frames=None, declared: int | None = 4, encoded: bytes | None = None):
    robot = get_robot(*PANDA)
    manifest = manifest_for(robot)
    if declared is not None:
        manifest["camera"]["secondary_side"] = SECONDARY_CAMERA
        manifest["video"]["secondary_side"] = {"fps": 10.0, "frame_count": declared}
    extra = {}
    if frames is not None:
        extra["video/secondary_side/frames"] = frames
    if encoded is not None:
        extra["video/secondary_side/encoded"] = np.frombuffer(encoded, np.uint8)
    return small_bundle(path, robot, manifest=manifest, extra_arrays=extra)


@pytest.mark.parametrize("kwargs, problem", [
    (dict(frames=np.zeros((4, 8, 8, 3), np.uint8)), None),
    (dict(frames=np.zeros((4, 8, 8, 3), np.uint8), declared=9), "secondary_frame_count_mismatch"),
    (dict(frames=np.zeros((4, 8, 8, 3), np.int16)), "secondary_video_malformed"),
    (dict(frames=np.zeros((4, 8, 8), np.uint8)), "secondary_video_malformed"),
    (dict(encoded=b"not an mp4 file" * 20), "secondary_video_unreadable"),
    (dict(), "secondary_video_missing"),
    (dict(frames=np.zeros((4, 8, 8, 3), np.uint8), declared=None), "secondary_manifest_missing"),
], ids=["ok", "frame_count", "dtype", "shape", "unreadable", "missing", "undeclared"])
def test_a_secondary_camera_is_checked_and_flagged_never_rejected(tmp_path, kwargs, problem):
    res = run_gate_on(GATE_ID, _with_secondary(tmp_path / "b.zarr.zip", **kwargs))
    assert res.passed, (res.reason_code, res.metrics)
    [(name, entry)] = res.metrics["secondary_videos"].items()
    assert name == "side" and entry["problem"] == problem
    assert [f for f in res.flags if f.startswith("secondary_")] == ([problem] if problem else [])
    if problem is None:
        assert entry["frame_count_declared"] == entry["frame_count_decoded"] == 4


def test_a_mono_bundle_reports_no_secondary_videos(tmp_path):
    res = run_gate_on(GATE_ID, small_bundle(tmp_path / "b.zarr.zip", get_robot(*PANDA)))
    assert res.passed and "secondary_videos" not in res.metrics
