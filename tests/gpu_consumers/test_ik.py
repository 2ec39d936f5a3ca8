"""IK residual stage: independent targets from object streams (and task waypoints),
the batched solver, the verdicts and ``s_retarget``, for every registered robot."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from gpu_consumers.ik import GATE_ID, IKSolver, check_ik
from kibotos.bundle import open_bundle
from kibotos.config.gates import load_config
from kibotos.errors import BundleError, ConfigError
from kibotos.media.poses import invert, matrix_to_pose7, pose7_to_matrix, rotvec_to_matrix
from kibotos.robots import get_robot
from kibotos.robots.kinematics import serial_kinematics_for
from kibotos.synthetic.samples import EXPECTED, NOISE, OBJECT_NAME, grasp_link, make_episode, random_trajectory
from tests.fixtures.episodes import PANDA, ROBOT_IDS, ROBOTS

CONFIG = load_config()
IK_VARIANTS = [v for v, exp in EXPECTED.items() if exp is not None and exp[0] == GATE_ID]
POSE = f"objects/{OBJECT_NAME}/pose"
TIMES = f"objects/{OBJECT_NAME}/timestamps_ms"


@pytest.fixture(scope="module")
def solvers():
    """One warm solver per robot, reused by every test (as an actor would)."""
    made: dict[tuple[str, str], IKSolver] = {}

    def get(key):
        if key not in made:
            made[key] = IKSolver(get_robot(*key))
        return made[key]

    return get


def _check(path, solver, config=CONFIG):
    with open_bundle(path) as view:
        return check_ik(view, config, solver)


def _write(tmp_path, ep, name="edited"):
    return ep.write(tmp_path / f"{name}.zarr.zip")


def test_ik_variants_are_declared():
    assert IK_VARIANTS == ["ik_perturbed", "ik_target_shift"]


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_consistent_target_passes_with_a_noise_level_residual(samples, solvers, key):
    res = _check(samples.path(key), solvers(key))
    m = res.metrics
    assert (res.gate, res.passed, res.reason_code, res.flags) == (GATE_ID, True, None, []), m
    assert m["applicable"] is True and m["target_source"] == "object_grasp"
    [target] = m["targets"]
    assert target["link"] == grasp_link(get_robot(*key))
    assert target["grasp_frames_from"] == "contacts_on_object_timestamps"
    assert m["target_frames"] >= 100
    # the object tracker's noise (2 mm, 1 degree RMS) plus the joint sensors': a few mm
    assert 0.001 < m["rms_pos_error_m"] < 0.005 and m["peak_pos_error_m"] < 0.015
    assert 0.5 < m["orientation_error_deg"]["mean"] < 2.0 and m["orientation_error_deg"]["fraction_above_limit"] == 0
    # the solver reaches the same target within the limits, closer than the noisy joints do
    assert m["ik_feasibility"]["rms_pos_error_m"] < 0.003
    assert m["s_retarget"] > 0.95
    assert res.thresholds == CONFIG.ik.model_dump()
    print(f"\n{key[0]}: submitted FK vs target rms {m['rms_pos_error_m'] * 1000:.2f} mm, peak "
          f"{m['peak_pos_error_m'] * 1000:.2f} mm, orientation mean {m['orientation_error_deg']['mean']} deg; "
          f"IK feasibility rms {m['ik_feasibility']['rms_pos_error_m'] * 1000:.2f} mm in "
          f"{m['ik_feasibility']['solve_ms']} ms ({m['ik_feasibility']['iterations']} iterations); joint distance "
          f"rms {m['joint_distance_rad']['rms']} rad; s_retarget {m['s_retarget']}")


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
@pytest.mark.parametrize("variant", IK_VARIANTS)
def test_ik_variants_are_rejected_with_their_reason(samples, solvers, key, variant):
    res = _check(samples.path(key, variant), solvers(key))
    m = res.metrics
    assert (res.gate, res.passed, res.reason_code) == (GATE_ID, False, EXPECTED[variant][1]), m
    assert m["peak_pos_error_m"] > CONFIG.ik.max_peak_pos_error_m
    if variant == "ik_target_shift":
        assert m["rms_pos_error_m"] == pytest.approx(0.15, abs=0.01)
    else:
        assert m["rms_pos_error_m"] < CONFIG.ik.max_rms_pos_error_m  # a bump: the peak decides
    # the target is reachable: the retargeting is wrong, not the target
    assert m["ik_feasibility"]["rms_pos_error_m"] < 0.005
    assert m["s_retarget"] < 0.3


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
@pytest.mark.parametrize("variant", IK_VARIANTS)
def test_gates_a_to_e_accept_the_ik_variants(samples, key, variant):
    report = samples.outcome(key, variant).report
    assert report.verdict == "accepted", (report.failed_gate, report.reason_code, report.gates[-1].metrics)


def test_residual_is_not_trivially_zero(samples, solvers, tmp_path):
    """The genuine target agrees with the joints by construction (both come from one
    trajectory) but is measured independently: its residual is the tracking noise. A
    target computed from the submitted joints themselves gives ~0 — the stage never
    does that, and flags a bundle whose object stream was made that way."""
    key = PANDA
    ep = samples.episode(key)
    genuine = _check(samples.path(key), solvers(key)).metrics

    robot = get_robot(*key)
    link = ep.array_attributes[POSE]["grasp"]["link"]
    offset = pose7_to_matrix(np.array(ep.array_attributes[POSE]["grasp"]["offset"]))
    obj_t = ep.extra_arrays[TIMES].astype(np.float64)
    q = np.stack([np.interp(obj_t, ep.timestamps_ms, ep.joint_pos[:, j]) for j in range(robot.dof)], axis=1)
    hand = serial_kinematics_for(*key, link).link_poses(q)
    # made from the joints while grasped, at rest (as recorded) before and after: this
    # stream looks like a real object everywhere but agrees with the joints too well
    grasped = ep.extra_arrays[f"contacts/{link}"].astype(bool)
    from_joints = ep.extra_arrays[POSE].astype(np.float64).copy()
    from_joints[grasped] = matrix_to_pose7(hand @ invert(offset))[grasped]
    forged = replace(ep, extra_arrays=ep.extra_arrays | {POSE: from_joints})
    res = _check(_write(tmp_path, forged), solvers(key))
    m = res.metrics

    assert m["rms_pos_error_m"] < 1e-5  # what a joint-derived target gives
    assert genuine["rms_pos_error_m"] > 100 * max(m["rms_pos_error_m"], 1e-7)
    assert genuine["rms_pos_error_m"] == pytest.approx(NOISE["object_pos_m"], rel=0.5)
    assert res.passed and res.flags == ["ik_target_matches_joints"] and m["s_retarget"] <= 0.5


def test_the_solver_never_sees_the_submitted_joints(samples, solvers):
    """Genuine and ik_perturbed share their object stream but not their joints: the IK
    solution (and its residual) is the same, only the comparison with the joints differs."""
    a = _check(samples.path(PANDA), solvers(PANDA)).metrics
    b = _check(samples.path(PANDA, "ik_perturbed"), solvers(PANDA)).metrics
    strip = lambda f: {k: v for k, v in f.items() if k != "solve_ms"}  # noqa: E731
    assert strip(a["ik_feasibility"]) == strip(b["ik_feasibility"])
    assert a["joint_distance_rad"] != b["joint_distance_rad"]
    assert a["rms_pos_error_m"] < 0.005 < b["rms_pos_error_m"]


def test_solver_is_batched_over_1000_frames(solvers):
    robot = get_robot(*PANDA)
    link = grasp_link(robot)
    traj = random_trajectory(robot, 20_000.0, np.random.default_rng(5))
    t = np.linspace(0.0, 20_000.0, 1000)
    targets = serial_kinematics_for(*PANDA, link).link_poses(traj.at(t))
    solver = solvers(PANDA)
    solver.solve(link, targets[:10], CONFIG.ik)  # warm
    t0 = time.perf_counter()
    sol = solver.solve(link, targets, CONFIG.ik)
    ms = (time.perf_counter() - t0) * 1000.0
    assert sol.q.shape == (1000, 7) and sol.pos_error_m.shape == (1000,)
    assert np.all(sol.q >= robot.pos_lower[sol.joint_index] - 1e-9)
    assert np.all(sol.q <= robot.pos_upper[sol.joint_index] + 1e-9)
    assert float(np.sqrt(np.mean(sol.pos_error_m**2))) < 1e-3 and sol.rot_error_deg.max() < 1.0
    # same target, same answer: no state carried between solves
    np.testing.assert_array_equal(solver.solve(link, targets[:50], CONFIG.ik).q, solver.solve(link, targets[:50], CONFIG.ik).q)
    print(f"\nIK {robot.model_id}: {ms:.0f} ms per 1,000 frames ({sol.iterations} iterations, CPU, 1 thread)")
    assert ms < 30_000


def test_a_target_out_of_reach_is_infeasible(samples, solvers, tmp_path):
    ep = samples.episode(PANDA)
    pose = ep.extra_arrays[POSE].copy()
    pose[:, 0] += 3.0  # three metres further than the arm reaches
    res = _check(_write(tmp_path, replace(ep, extra_arrays=ep.extra_arrays | {POSE: pose})), solvers(PANDA))
    assert (res.passed, res.reason_code) == (False, "ik_target_infeasible"), res.metrics
    assert res.metrics["ik_feasibility"]["rms_pos_error_m"] > CONFIG.ik.max_rms_pos_error_m


def test_orientation_alone_can_exceed(samples, solvers, tmp_path):
    """A grasp offset turned 60 degrees about its own origin: same positions, wrong orientation."""
    ep = samples.episode(PANDA)
    attrs = {k: dict(v) for k, v in ep.array_attributes.items()}
    grasp = dict(attrs[POSE]["grasp"])
    offset = pose7_to_matrix(np.array(grasp["offset"]))
    offset[:3, :3] = offset[:3, :3] @ rotvec_to_matrix(np.array([np.radians(60.0), 0.0, 0.0]))
    grasp["offset"] = matrix_to_pose7(offset).tolist()
    attrs[POSE]["grasp"] = grasp
    res = _check(_write(tmp_path, replace(ep, array_attributes=attrs)), solvers(PANDA))
    m = res.metrics
    assert (res.passed, res.reason_code) == (False, "ik_orientation_exceeded"), m
    assert m["rms_pos_error_m"] < 0.005 and m["orientation_error_deg"]["fraction_above_limit"] > 0.9


def test_no_independent_target_is_not_applicable(samples, solvers, tmp_path):
    robot = get_robot(*PANDA)
    bare = make_episode(robot, seed=0, duration_ms=2000, with_object=False)
    assert bare.extra_arrays == {}
    res = _check(_write(tmp_path, bare, "bare"), solvers(PANDA))
    assert (res.passed, res.flags) == (True, ["ik_no_independent_target"])
    assert res.metrics["applicable"] is False and res.metrics["target_source"] is None
    # an object stream without a grasp declaration gives no target either: noted, not guessed
    ep = samples.episode(PANDA)
    attrs = {POSE: {k: v for k, v in ep.array_attributes[POSE].items() if k != "grasp"}}
    res = _check(_write(tmp_path, replace(ep, array_attributes=attrs), "no-grasp"), solvers(PANDA))
    assert res.flags == ["ik_no_independent_target"]
    assert "no grasp declared" in res.metrics["unused_streams"][0]["unused"]


@pytest.mark.parametrize("edit, expected", [
    ("drop", "object_motion"),
    ("kinematics_clock", "contacts_on_kinematics_timestamps"),
    ("wrong_length", "object_motion (contacts/panda_hand [7] uint8 fits neither timestamps)"),
])
def test_grasped_frames_from_contacts_or_object_motion(samples, solvers, tmp_path, edit, expected):
    ep = samples.episode(PANDA)
    link = grasp_link(get_robot(*PANDA))
    arrays = dict(ep.extra_arrays)
    contacts = arrays.pop(f"contacts/{link}")
    if edit == "kinematics_clock":
        t = ep.extra_arrays[TIMES]
        arrays[f"contacts/{link}"] = ((ep.timestamps_ms >= t[contacts == 1][0])
                                      & (ep.timestamps_ms <= t[contacts == 1][-1])).astype(np.uint8)
    elif edit == "wrong_length":
        arrays[f"contacts/{link}"] = np.ones(7, np.uint8)
    res = _check(_write(tmp_path, replace(ep, extra_arrays=arrays)), solvers(PANDA))
    [target] = res.metrics["targets"]
    assert target["grasp_frames_from"] == expected
    assert res.passed and res.metrics["rms_pos_error_m"] < 0.005, res.metrics
    if expected.startswith("object_motion"):  # only the moving part of the grasp
        assert 10 <= target["grasped_frames"] < int(contacts.sum())


def test_task_waypoints_are_the_fallback_target(samples, solvers, tmp_path):
    ep = samples.episode(PANDA)
    grasp = ep.array_attributes[POSE]["grasp"]
    sel = np.flatnonzero(ep.extra_arrays[f"contacts/{grasp['link']}"])[::8]
    link_pose = pose7_to_matrix(ep.extra_arrays[POSE][sel]) @ pose7_to_matrix(np.array(grasp["offset"]))
    waypoints = [{"t_ms": float(t), "link": grasp["link"], "pose": p.tolist()}
                 for t, p in zip(ep.extra_arrays[TIMES][sel], matrix_to_pose7(link_pose))]
    manifest = ep.manifest | {"task": {"task_id": "pick-place", "task_version": "1", "waypoints": waypoints}}
    res = _check(_write(tmp_path, replace(ep, manifest=manifest, extra_arrays={}, array_attributes={})), solvers(PANDA))
    m = res.metrics
    assert res.passed and m["target_source"] == "task_waypoints" and m["target_frames"] == len(waypoints), m
    assert m["rms_pos_error_m"] < 0.005
    shifted = [w | {"pose": [w["pose"][0] + 0.2] + w["pose"][1:]} for w in waypoints]
    manifest = manifest | {"task": manifest["task"] | {"waypoints": shifted}}
    res = _check(_write(tmp_path, replace(ep, manifest=manifest, extra_arrays={}, array_attributes={}), "shifted"),
                 solvers(PANDA))
    assert (res.passed, res.reason_code) == (False, "ik_rms_exceeded")


@pytest.mark.parametrize("arrays, attrs, unused", [
    ({POSE: np.zeros((5, 6))}, None, "shapes"),
    ({POSE: np.zeros((240, 7))}, None, "unit quaternions"),
    (None, {"grasp": {"link": "tail_link", "offset": [0, 0, 0, 1, 0, 0, 0]}}, "is not a link"),
    (None, {"grasp": {"link": "panda_hand", "offset": [0, 0, 0]}}, "invalid grasp"),
])
def test_malformed_object_streams_are_noted_never_a_crash(samples, solvers, tmp_path, arrays, attrs, unused):
    ep = samples.episode(PANDA)
    extra = ep.extra_arrays | (arrays or {})
    if arrays and arrays[POSE].shape[0] != len(ep.extra_arrays[TIMES]):
        extra[TIMES] = np.arange(arrays[POSE].shape[0], dtype=np.int64) * 33
    attributes = {POSE: ep.array_attributes[POSE] | (attrs or {})}
    res = _check(_write(tmp_path, replace(ep, extra_arrays=extra, array_attributes=attributes)), solvers(PANDA))
    assert (res.passed, res.flags) == (True, ["ik_no_independent_target"])
    assert unused in res.metrics["unused_streams"][0]["unused"]


def test_thresholds_come_from_config(samples, solvers):
    # between the solver's own residual (~1 mm) and the tracking noise the submission shows (~2.7 mm)
    strict = CONFIG.model_copy(update={"ik": CONFIG.ik.model_copy(update={"max_rms_pos_error_m": 0.002})})
    res = _check(samples.path(PANDA), solvers(PANDA), strict)
    assert (res.passed, res.reason_code) == (False, "ik_rms_exceeded"), res.metrics["ik_feasibility"]
    assert res.thresholds["max_rms_pos_error_m"] == 0.002
    relaxed = CONFIG.model_copy(update={"robots": {"franka_panda@fer-v1": {"ik": {"max_peak_pos_error_m": 0.5}}}})
    assert _check(samples.path(PANDA, "ik_perturbed"), solvers(PANDA), relaxed).passed


def test_a_solver_judges_only_its_robot(samples, solvers):
    with pytest.raises(ConfigError):
        _check(samples.path(("ur5", "joint-limited-v1")), solvers(PANDA))


@pytest.mark.parametrize("variant, reason", [("nan", "non_finite_values"), ("non_monotonic", "timestamps_not_increasing"),
                                             ("shape_mismatch", "shape_mismatch")])
def test_inputs_the_chain_rejects_are_reason_codes_here_too(samples, solvers, variant, reason):
    with pytest.raises(BundleError) as info:
        _check(samples.path(PANDA, variant), solvers(PANDA))
    assert info.value.reason_code == reason


def _riding_stream(ep, key, noise_m: float, seed: int = 0):
    """An object stream made from the joints on every frame: the grasp link's forward
    kinematics times a constant offset, plus ``noise_m`` of white tracking noise."""
    robot = get_robot(*key)
    link = ep.array_attributes[POSE]["grasp"]["link"]
    offset = pose7_to_matrix(np.array(ep.array_attributes[POSE]["grasp"]["offset"]))
    obj_t = ep.extra_arrays[TIMES].astype(np.float64)
    q = np.stack([np.interp(obj_t, ep.timestamps_ms, ep.joint_pos[:, j]) for j in range(robot.dof)], axis=1)
    pose = matrix_to_pose7(serial_kinematics_for(*key, link).link_poses(q) @ invert(offset))
    pose[:, :3] += np.random.default_rng(seed).normal(0.0, noise_m, (len(pose), 3))
    contacts = {k: np.ones_like(v) for k, v in ep.extra_arrays.items() if k.startswith("contacts/")}
    return replace(ep, extra_arrays=ep.extra_arrays | {POSE: pose} | contacts)


@pytest.mark.parametrize("noise_m", [0.0, 0.002, 0.005])
def test_object_stream_made_from_the_joints_is_no_target(samples, solvers, tmp_path, noise_m):
    """FK of the joints plus a constant offset (and noise that lifts it above the exact
    match floor) on every frame: refused as a target, flagged, S_retarget left neutral."""
    ep = samples.episode(PANDA)
    res = _check(_write(tmp_path, _riding_stream(ep, PANDA, noise_m)), solvers(PANDA))
    m = res.metrics
    assert res.passed and m["applicable"] is False and m["s_retarget"] is None, m
    assert res.flags == ["ik_object_derived_from_joints", "ik_no_independent_target"]
    [note] = [n for n in m["unused_streams"] if "derived_from_joints" in n]
    ev = note["derived_from_joints"]
    assert ev["object_in_link_spread_m"] <= CONFIG.ik.derived_max_spread_m
    assert ev["link_travel_m"] >= CONFIG.ik.derived_min_link_travel_m


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_a_real_object_at_rest_before_and_after_the_grasp_is_not_flagged(samples, solvers, key):
    res = _check(samples.path(key), solvers(key))
    assert "ik_object_derived_from_joints" not in res.flags and res.metrics["applicable"] is True


def test_rides_with_link_needs_the_link_to_travel():
    from gpu_consumers.ik import rides_with_link

    n = 50
    still = np.tile(np.eye(4), (n, 1, 1))
    obj = still.copy()
    obj[:, :3, 3] += [0.0, 0.0, 0.1]
    assert rides_with_link(still, obj, CONFIG.ik) is None  # a robot that never moves proves nothing
    moving = still.copy()
    moving[:, 0, 3] = np.linspace(0.0, 0.5, n)
    carried = moving.copy()
    carried[:, 2, 3] += 0.1
    assert rides_with_link(moving, carried, CONFIG.ik) is not None
    resting = carried.copy()
    resting[: n // 2, :3, 3] = carried[0, :3, 3]  # at rest until the hand arrives
    assert rides_with_link(moving, resting, CONFIG.ik) is None


# --- option 2: the pose-derived end-effector path --------------------------------------

def test_fit_hand_to_end_effector():
    from gpu_consumers.ik import fit_hand_to_end_effector

    t = np.linspace(0, 2 * np.pi, 60)
    ee = np.stack([200 + 80 * np.cos(t), 150 + 40 * np.sin(2 * t)], axis=1)
    a, c, res = fit_hand_to_end_effector(0.5 * ee + [30.0, -12.0], ee)  # a person half the robot's scale
    assert a == pytest.approx(2.0) and res.max() < 1e-9
    path = np.linalg.norm(ee - ee.mean(axis=0), axis=1)
    for other in (np.tile([100.0, 100.0], (60, 1)), 2 * ee.mean(axis=0) - ee):  # still; moving against it
        a, _, res = fit_hand_to_end_effector(other, ee)
        assert a == 0.0 and np.allclose(res, path)


class ReplayEstimator:
    """Plays back a given wrist track as a pose estimator would report it. A test double
    because no footage of a person with visible wrists is installed here: the installed
    portrait photos hide their hands, and MediaPipe's guess of a hidden wrist (mean
    confidence 0.39, measured) cannot check the geometry to the millimetre.
    ``test_real_estimator_on_the_human_sample`` runs the real estimator."""

    name = "replay"
    version = "replay-test"

    def __init__(self, wrist_px: np.ndarray, image_size: tuple[int, int], stride: int):
        from gpu_consumers.pose import MEDIAPIPE_POSE_KEYPOINTS

        self.keypoint_names = MEDIAPIPE_POSE_KEYPOINTS
        self.wrist_px, self.size, self.stride, self.at = wrist_px, image_size, stride, 0

    def estimate(self, frames):
        from gpu_consumers.pose import PoseTrack

        n, k = len(frames), len(self.keypoint_names)
        idx = np.minimum(np.arange(self.at, self.at + n) * self.stride, len(self.wrist_px) - 1)
        self.at += n
        kp = np.full((n, k, 2), np.nan, np.float32)
        conf = np.zeros((n, k), np.float32)
        right = self.keypoint_names.index("right_wrist")
        kp[:, right] = self.wrist_px[idx] * [frames.shape[2] / self.size[0], frames.shape[1] / self.size[1]]
        conf[:, right] = 0.9
        return PoseTrack(self.name, self.keypoint_names, (frames.shape[2], frames.shape[1]), kp, conf,
                         np.ones(n, bool))


def _human_without_objects(samples, key, seed=0):
    ep = samples.episode(key, "human_video", seed=seed)
    return replace(ep, extra_arrays={}, manifest={k: v for k, v in ep.manifest.items() if k != "task"})


def _hand_track(ep, key, px_noise=1.0, seed=0):
    """The demonstrator's hand in every video frame: the retargeted end effector drawn
    through the declared camera (as the sample video draws the person), at half scale,
    plus pixel noise."""
    from gpu_consumers.gate_f_pose import sample_indices
    from kibotos.synthetic.samples import hand_pixels

    robot = get_robot(*key)
    v = ep.manifest["video"]["primary"]
    t_kin = np.arange(v["frame_count"]) * 1000.0 / v["fps"] - ep.manifest["sync"]["sync_offset_ms_claimed"] \
        + ep.timestamps_ms[0]
    t_kin = np.clip(t_kin, ep.timestamps_ms[0], ep.timestamps_ms[-1])
    q = np.stack([np.interp(t_kin, ep.timestamps_ms, ep.joint_pos[:, j]) for j in range(robot.dof)], axis=1)
    cam = ep.manifest["camera"]["primary"]
    px = hand_pixels(robot, q, cam["intrinsics"], np.asarray(cam["extrinsics"]))
    px = 0.5 * (px - px.mean(axis=0)) + px.mean(axis=0)
    px += np.random.default_rng(seed).normal(0.0, px_noise, px.shape)
    stride, _ = sample_indices(v["frame_count"], v["fps"], CONFIG.gate_f)
    return px, (cam["intrinsics"]["width"], cam["intrinsics"]["height"]), stride


@pytest.mark.parametrize("px_noise, max_rms_m", [(0.0, 0.001), (1.0, 0.03)])
def test_pose_derived_target_agrees_with_the_genuine_trajectory(samples, solvers, tmp_path, px_noise, max_rms_m):
    """Noise-free, the hand path and the joints agree exactly (timing, camera, scale fit);
    1 px of keypoint noise is ~2 px on the robot's scale, ~1.5 cm at its depth."""
    ep = _human_without_objects(samples, PANDA)
    px, size, stride = _hand_track(ep, PANDA, px_noise=px_noise)
    with open_bundle(_write(tmp_path, ep)) as view:
        res = check_ik(view, CONFIG, solvers(PANDA), ReplayEstimator(px, size, stride))
    m = res.metrics
    assert res.passed and m["applicable"] is True and m["target_source"] == "pose_estimate", m
    assert "ik_target_from_pose" in res.flags
    [t] = m["targets"]
    assert t["hand_keypoint"] == "right_wrist" and t["hand_to_robot_scale"] == pytest.approx(2.0, rel=0.1)
    assert m["rms_pos_error_m"] < max_rms_m and m["s_retarget"] > 0.5
    assert m["orientation_error_deg"] is None  # one view sees no orientation


def test_pose_derived_target_rejects_joints_the_hand_did_not_make(samples, solvers, tmp_path):
    """The video's hand follows another episode's trajectory: the submitted joints are far
    from the path the estimator sees."""
    ep = _human_without_objects(samples, PANDA)
    other = _human_without_objects(samples, PANDA, seed=3)
    px, size, stride = _hand_track(other, PANDA)
    with open_bundle(_write(tmp_path, ep)) as view:
        res = check_ik(view, CONFIG, solvers(PANDA), ReplayEstimator(px, size, stride))
    m = res.metrics
    assert m["target_source"] == "pose_estimate" and m["rms_pos_error_m"] > 0.05, m
    assert m["s_retarget"] < 0.3
    assert res.passed is (not m["failed_checks"])


def test_real_estimator_on_the_human_sample(samples, solvers, tmp_path):
    """MediaPipe on the human sample (a photo moved with the retargeted hand): the genuine
    video passes with a pose-derived target; the same joints under another episode's video
    are further from what the estimator sees."""
    from gpu_consumers.pose import get_pose_estimator

    est = get_pose_estimator("mediapipe")
    ep = _human_without_objects(samples, PANDA)
    swapped = replace(ep, video_mp4=_human_without_objects(samples, PANDA, seed=3).video_mp4)
    results = {}
    for name, e in (("genuine", ep), ("swapped", swapped)):
        with open_bundle(_write(tmp_path, e, name)) as view:
            results[name] = check_ik(view, CONFIG, solvers(PANDA), est)
    good, bad = results["genuine"].metrics, results["swapped"].metrics
    assert results["genuine"].passed and good["target_source"] == "pose_estimate", good
    assert good["targets"][0]["frames"] >= CONFIG.ik.min_target_frames
    if bad["applicable"]:
        assert bad["rms_pos_error_m"] > good["rms_pos_error_m"] and bad["s_retarget"] < good["s_retarget"]
    else:  # the other video's wrist was not seen confidently enough: no target, never one from the joints
        assert any(n["source"] == "pose_estimate" for n in bad["unused_streams"])


def test_no_confident_wrist_gives_no_pose_target(samples, solvers, tmp_path):
    ep = _human_without_objects(samples, PANDA)
    px, size, stride = _hand_track(ep, PANDA)

    class Unsure(ReplayEstimator):
        def estimate(self, frames):
            track = super().estimate(frames)
            return replace(track, confidence=track.confidence * 0.3)

    with open_bundle(_write(tmp_path, ep)) as view:
        res = check_ik(view, CONFIG, solvers(PANDA), Unsure(px, size, stride))
    m = res.metrics
    assert res.passed and m["applicable"] is False and res.flags == ["ik_no_independent_target"]
    [note] = [n for n in m["unused_streams"] if n["source"] == "pose_estimate"]
    assert "wrist is seen confidently on 0 sampled frames" in note["unused"]


def test_robot_video_never_runs_the_pose_estimator(samples, solvers, tmp_path):
    ep = samples.episode(PANDA)
    bare = replace(ep, extra_arrays={}, manifest={k: v for k, v in ep.manifest.items() if k != "task"})

    class Refuses:
        name = version = "refuses"

        def estimate(self, frames):
            raise AssertionError("a robot video has no demonstrator")

    with open_bundle(_write(tmp_path, bare)) as view:
        res = check_ik(view, CONFIG, solvers(PANDA), Refuses())
    assert res.metrics["applicable"] is False
