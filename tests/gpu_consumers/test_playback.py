"""Genesis playback: the renderer (kinematic replay through the manifest camera) and the
playback job (keyframes, real/sim PNG pairs, metrics).

The renderer tests share one renderer whose Franka Panda scene is built once per session
(``import genesis`` and the build: 20-40 s on two busy cores, more with a cold kernel
cache); the registry smoke test adds one scene per other model. The pure helpers are
tested without Genesis.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpu_consumers.keyframes import select_keyframes
from gpu_consumers.playback import (
    GATE_ID,
    genesis_camera_pose,
    joints_at,
    pinhole_warp,
    resolved_urdf,
    run_playback,
    scaled_intrinsics,
    task_phase_boundaries,
)
from kibotos.bundle import open_bundle
from kibotos.bundle.kinematics import computed_joint_velocity
from kibotos.config.gates import load_config
from kibotos.errors import KibotosError
from kibotos.media.camera import look_at, project_points
from kibotos.objectstore import LocalObjectStore
from kibotos.robots import get_robot
from kibotos.robots.kinematics import kinematics_for
from kibotos.synthetic.samples import default_camera
from tests.fixtures.episodes import PANDA, ROBOT_IDS, ROBOTS

W, H = 320, 240


# --- pure helpers -----------------------------------------------------------------------

def test_genesis_camera_pose_from_opencv_axes():
    eye, target = np.array([1.5, -0.8, 1.2]), np.array([0.0, 0.1, 0.4])
    pose = look_at(eye, target)  # OpenCV: z towards the target, y down
    pos, lookat, up = genesis_camera_pose(pose)
    assert np.allclose(pos, eye)
    forward = (lookat - pos) / np.linalg.norm(lookat - pos)
    assert np.allclose(forward, (target - eye) / np.linalg.norm(target - eye))
    assert np.allclose(up, -pose[:3, 1])
    assert up[2] > 0  # a level camera's image "up" is world up


def test_pinhole_warp_is_identity_for_a_centred_camera():
    fov, warp = pinhole_warp({"fx": 260.0, "fy": 260.0, "cx": W / 2, "cy": H / 2}, W, H)
    assert warp is None
    assert fov == pytest.approx(np.degrees(2 * np.arctan(H / 2 / 260.0)))


def test_pinhole_warp_maps_genesis_pixels_to_the_manifest_camera():
    intr = {"fx": 300.0, "fy": 250.0, "cx": 150.0, "cy": 130.0}
    fov, warp = pinhole_warp(intr, W, H)
    f = H / 2 / np.tan(np.radians(fov) / 2)
    assert f == pytest.approx(250.0)
    pts = np.array([[0.1, -0.2, 1.5], [-0.3, 0.05, 2.0], [0.0, 0.0, 1.0]])  # camera frame
    genesis = np.c_[f * pts[:, 0] / pts[:, 2] + W / 2, f * pts[:, 1] / pts[:, 2] + H / 2, np.ones(3)]
    manifest = np.c_[intr["fx"] * pts[:, 0] / pts[:, 2] + intr["cx"], intr["fy"] * pts[:, 1] / pts[:, 2] + intr["cy"]]
    assert np.allclose(genesis @ warp.T, manifest)


def test_scaled_intrinsics():
    s = scaled_intrinsics({"fx": 500.0, "fy": 520.0, "cx": 320.0, "cy": 240.0, "width": 640, "height": 480}, W, H)
    assert s == {"fx": 250.0, "fy": 260.0, "cx": 160.0, "cy": 120.0, "width": W, "height": H}


def test_joints_at_interpolates_linearly_and_clamps():
    ts = np.array([0, 20, 40], dtype=np.int64)
    q = np.array([[0.0, 1.0], [1.0, 1.0], [3.0, 0.0]])
    out = joints_at(ts, q, np.array([-5.0, 10.0, 30.0, 40.0, 99.0]))
    assert np.allclose(out, [[0, 1], [0.5, 1], [2, 0.5], [3, 0], [3, 0]])


def test_resolved_urdf_has_absolute_existing_meshes(tmp_path):
    import xml.etree.ElementTree as ET

    path = resolved_urdf(get_robot(*PANDA), tmp_path)
    meshes = [m.get("filename") for m in ET.parse(path).getroot().iter("mesh")]
    assert meshes and all(Path(m).is_absolute() and Path(m).is_file() for m in meshes)
    assert resolved_urdf(get_robot(*PANDA), tmp_path) == path  # written once


# --- the renderer (one Panda scene per session: panda_renderer, tests/fixtures/renderers.py) --


def _camera():
    intr, pose = default_camera(get_robot(*PANDA))
    return intr, pose


def _pose_rows(n: int = 3, seed: int = 0) -> np.ndarray:
    robot = get_robot(*PANDA)
    rng = np.random.default_rng(seed)
    span = robot.pos_upper - robot.pos_lower
    rows = robot.home_qpos + rng.uniform(-0.25, 0.25, (n, robot.dof)) * span
    return np.clip(rows, robot.pos_lower + 0.05 * span, robot.pos_upper - 0.05 * span)


def test_renders_the_robot(panda_renderer):
    robot = panda_renderer.robot
    intr, pose = _camera()
    res = panda_renderer.render_frames(robot.home_qpos[None], robot.joint_names, intr, pose)
    assert res.rgb.shape == (1, H, W, 3) and res.rgb.dtype == np.uint8
    mask = res.mask[0]
    assert 500 < mask.sum() < 0.5 * W * H
    background = np.median(res.rgb[0][~mask], axis=0)
    robot_px = np.abs(res.rgb[0][mask].astype(int) - background).max(axis=1)
    assert np.mean(robot_px > 30) > 0.9  # robot pixels differ from the background
    assert res.wall_s[0] > 0
    assert np.array_equal(panda_renderer.render(robot.home_qpos[None], robot.joint_names, intr, pose), res.rgb)


def test_silhouette_moves_with_the_joints_and_repeats_exactly(panda_renderer):
    robot = panda_renderer.robot
    intr, pose = _camera()
    moved = robot.home_qpos.copy()
    moved[0] += 0.8  # base yaw
    moved[3] += 0.6  # elbow
    rows = np.stack([robot.home_qpos, moved, robot.home_qpos])
    res = panda_renderer.render_frames(rows, robot.joint_names, intr, pose)
    assert (res.mask[0] ^ res.mask[1]).sum() > 0.2 * res.mask[0].sum()
    assert np.array_equal(res.mask[0], res.mask[2])
    assert np.array_equal(res.rgb[0], res.rgb[2])


@pytest.mark.parametrize("camera", ["sample", "offcentre_behind"])
def test_camera_convention_links_project_onto_robot_pixels(panda_renderer, camera):
    robot = panda_renderer.robot
    intr, pose = _camera()
    if camera == "offcentre_behind":  # another side, another size, unequal focals, shifted centre
        intr = {"fx": 560.0, "fy": 520.0, "cx": 300.0, "cy": 260.0, "width": 640, "height": 480}
        pose = look_at(np.array([-1.4, -1.1, 1.3]), np.array([0.1, 0.0, 0.45]))
    rows = _pose_rows(3, seed=1)
    res = panda_renderer.render_frames(rows, robot.joint_names, intr, pose)
    links = kinematics_for(*PANDA).link_positions(rows)  # (K, L, 3) in the base frame
    pix = project_points(links, intr, pose) * np.array([W / intr["width"], H / intr["height"]])
    for k in range(len(rows)):
        mask = cv2.dilate(res.mask[k].astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert res.mask[k].sum() < 0.4 * W * H  # hits are not trivially everywhere
        u, v = np.round(pix[k]).astype(int).T
        inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
        assert inside.sum() >= 6
        assert mask[v[inside], u[inside]].all(), (camera, k, pix[k][inside][~mask[v[inside], u[inside]]])


def test_manifest_joint_order_and_subsets(panda_renderer):
    robot = panda_renderer.robot
    intr, pose = _camera()
    rows = _pose_rows(2, seed=2)
    rows[:, 7:] = robot.home_qpos[7:]  # fingers at home
    canonical = panda_renderer.render(rows, robot.joint_names, intr, pose)
    order = np.random.default_rng(0).permutation(robot.dof)
    permuted = panda_renderer.render(rows[:, order], [robot.joint_names[i] for i in order], intr, pose)
    assert np.array_equal(canonical, permuted)
    arm_only = panda_renderer.render(rows[:, :7], robot.joint_names[:7], intr, pose)  # fingers left at home
    assert np.array_equal(canonical, arm_only)


def test_bad_rows_fail_with_playback_failed(panda_renderer):
    robot = panda_renderer.robot
    intr, pose = _camera()
    with pytest.raises(KibotosError) as err:
        panda_renderer.render(np.zeros((1, 2)), ["panda_joint1", "no_such_joint"], intr, pose)
    assert err.value.reason_code == "playback_failed"
    with pytest.raises(KibotosError):
        panda_renderer.render(np.full((1, robot.dof), np.nan), robot.joint_names, intr, pose)


def test_scene_is_built_once_per_model(panda_renderer):
    key = panda_renderer.robot.key
    scene = panda_renderer._scenes[key]
    assert panda_renderer.warm_up() == 0.0
    panda_renderer.render(panda_renderer.robot.home_qpos[None], panda_renderer.robot.joint_names, *_camera())
    assert panda_renderer._scenes[key] is scene and panda_renderer.build_seconds[key] > 0


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_every_registered_robot_renders_where_its_links_project(panda_renderer, key):
    # other models get their own scene in the same renderer (a few seconds each once the
    # kernels are compiled)
    robot = get_robot(*key)
    intr, pose = default_camera(robot)
    res = panda_renderer.render_frames(robot.home_qpos[None], robot.joint_names, intr, pose, robot=robot)
    mask = cv2.dilate(res.mask[0].astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert 0 < res.mask[0].mean() < 0.4
    pix = project_points(kinematics_for(*key).link_positions(robot.home_qpos[None])[0], intr, pose)
    u, v = np.round(pix).astype(int).T
    assert ((u >= 0) & (u < W) & (v >= 0) & (v < H)).all()
    assert mask[v, u].all()


# --- the playback job ---------------------------------------------------------------------

def _run(renderer, path: Path, offset_ms: float, store_root: Path):
    store = LocalObjectStore(store_root)
    with open_bundle(path) as view:
        return run_playback(view, offset_ms, renderer, store, "keyframes/sub-1"), store


def test_run_playback_stores_pairs_and_reports_keyframes(panda_renderer, samples, tmp_path):
    ep = samples.episode(PANDA)
    res, store = _run(panda_renderer, samples.path(PANDA), ep.true_offset_ms, tmp_path / "store")
    assert res.gate == GATE_ID and res.passed and res.reason_code is None, res.metrics
    m = res.metrics
    with open_bundle(samples.path(PANDA)) as view:
        bounds, sources = task_phase_boundaries(view)
    expected = select_keyframes(ep.timestamps_ms, ep.joint_pos, 30.0, ep.manifest["video"]["primary"]["frame_count"],
                                ep.true_offset_ms, phase_boundaries_ms=bounds)
    assert m["keyframe_indices"] == [k.video_frame_index for k in expected]
    assert m["phase_boundary_sources"] == sources
    assert res.thresholds["n_uniform"] == load_config().keyframes.n_uniform
    assert [e["strategy"] for e in m["keyframes"]] == [k.strategy for k in expected]
    assert m["keyframe_strategies"]["uniform"] == 6 and m["keyframe_strategies"]["motion_peak"] >= 1
    assert m["keyframe_strategies"]["phase_boundary"] >= 1
    assert m["sync_offset_ms"] == pytest.approx(ep.true_offset_ms, abs=1e-3)
    assert m["empty_render_frames"] == 0 and m["missing_real_frames"] == 0
    for entry in m["keyframes"]:
        assert entry["render_ms"] > 0
        for side in ("sim_uri", "real_uri"):
            png = store.local_path(entry[side]).read_bytes()
            img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            assert img.shape == (H, W, 3)
            assert entry[side].endswith(f"{entry['frame']:06d}-{side[:-4]}.png")
        assert 0.0 <= entry["silhouette_iou"] <= 1.0
    # the sample video draws the robot's links through the same camera at the true offset:
    # what moves in the real frames lies on the simulated robot
    assert np.median([e["real_foreground_in_sim"] for e in m["keyframes"]]) > 0.6


def test_run_playback_camera_looking_away_is_an_empty_render(panda_renderer, samples, tmp_path):
    ep = samples.episode(PANDA)
    pose = np.asarray(ep.manifest["camera"]["primary"]["extrinsics"])
    away = pose.copy()
    away[:3, 0], away[:3, 2] = -pose[:3, 0], -pose[:3, 2]  # turned around, still right-handed
    manifest = {**ep.manifest, "camera": {"primary": {**ep.manifest["camera"]["primary"], "extrinsics": away.tolist()}}}
    path = replace(ep, manifest=manifest).write(tmp_path / "away.zarr.zip")
    res, _ = _run(panda_renderer, path, ep.true_offset_ms, tmp_path / "store")
    assert not res.passed and res.reason_code == "playback_empty_render"
    assert res.metrics["empty_render_frames"] == len(res.metrics["keyframe_indices"])


def test_run_playback_unknown_joint_is_playback_failed(panda_renderer, samples, tmp_path):
    ep = samples.episode(PANDA)
    names = list(ep.manifest["joint_names"])
    names[0] = "not_a_panda_joint"
    path = replace(ep, manifest={**ep.manifest, "joint_names": names}).write(tmp_path / "bad.zarr.zip")
    res, _ = _run(panda_renderer, path, ep.true_offset_ms, tmp_path / "store")
    assert not res.passed and res.reason_code == "playback_failed"
    assert "not_a_panda_joint" in res.metrics["error"]


def test_task_phase_boundaries_come_from_contacts_and_task_phases(samples):
    """The sample episodes carry a contact stream and a declared task: keyframes land on the
    grasp and the release, and on the task's phase events (design §6)."""
    ep = samples.episode(PANDA)
    contact_paths = [k for k in ep.extra_arrays if k.startswith("contacts/")]
    assert contact_paths and ep.manifest.get("task")
    with open_bundle(samples.path(PANDA)) as view:
        bounds, sources = task_phase_boundaries(view)
    on = ep.extra_arrays[contact_paths[0]].astype(bool)
    obj_t = next(v for k, v in ep.extra_arrays.items() if k.endswith("/timestamps_ms")).astype(np.float64)
    switch = np.flatnonzero(on[1:] != on[:-1]) + 1
    assert sources[contact_paths[0]] == switch.size >= 2  # grasp made, grasp released
    for i in switch:
        assert np.min(np.abs(bounds - (obj_t[i - 1] + obj_t[i]) / 2)) < 1e-6
    assert any(k.startswith("task:") for k in sources)


def test_task_phase_boundaries_fall_back_when_the_bundle_has_none(samples, tmp_path):
    ep = samples.episode(PANDA)
    bare = replace(ep, extra_arrays={}, manifest={k: v for k, v in ep.manifest.items() if k != "task"})
    with open_bundle(bare.write(tmp_path / "bare.zarr.zip")) as view:
        assert task_phase_boundaries(view) == (None, {})


def test_computed_joint_velocity_is_the_derivative_on_the_real_timestamps():
    t = np.cumsum(np.r_[0, np.full(99, 20.0)])
    t[50:] += 7.0  # an uneven step: the real timestamps count, not a nominal rate
    q = np.stack([np.sin(t / 1000.0), 0.5 * (t / 1000.0) ** 2], axis=1)
    v = computed_joint_velocity(t, q)
    assert v.dtype == np.float32 and v.shape == q.shape
    truth = np.stack([np.cos(t / 1000.0), t / 1000.0], axis=1)
    assert np.abs(v[1:-1] - truth[1:-1]).max() < 0.01
    assert not computed_joint_velocity(np.array([0.0, 0.0, 1.0]), np.zeros((3, 2))).any()  # no derivative


def test_run_playback_stores_the_computed_joint_velocity(panda_renderer, samples, tmp_path):
    ep = samples.episode(PANDA)
    no_vel = replace(ep, joint_vel=None).write(tmp_path / "novel.zarr.zip")
    res, store = _run(panda_renderer, no_vel, ep.true_offset_ms, tmp_path / "store")
    assert res.passed, res.metrics
    stored = np.load(store.local_path(res.metrics["joint_vel_computed_uri"]), allow_pickle=False)
    assert np.array_equal(stored, computed_joint_velocity(ep.timestamps_ms, ep.joint_pos))
    with_vel, _ = _run(panda_renderer, samples.path(PANDA), ep.true_offset_ms, tmp_path / "store2")
    assert "joint_vel_computed_uri" not in with_vel.metrics  # a submitted stream is not replaced
