"""The clip quality check: an honest XGen clip passes the verifier's chain as a submission
bundle; a clip broken in a physical way (the box jumps, the hands leave the box, a joint
beyond its limit) is rejected with the reason code of the check that catches it.

Each judgement renders a video and runs gates A-E, the IK residual and the task
evaluation (~10-25 s on a loaded CPU); clips are judged once per module."""

from __future__ import annotations

import json
import shutil

import mujoco
import numpy as np
import pytest

from kibotos.bundle import open_bundle
from kibotos.bundle.reader import JOINT_POS
from kibotos.robots import get_robot
from kibotos.robots.kinematics import serial_kinematics_for
from kibotos.xgen import g1
from kibotos.xgen.augment import Variant
from kibotos.xgen.export import ExportRequest, export
from kibotos.xgen.quality import FLOATING_REVISION, GRASP_LINKS, floating_joint_rows, judge_clip


@pytest.fixture(scope="module")
def clip(xcfg):
    """A 5 s pickup: the session's 3 s one squeezes walk, squat, lift and place into 3 s,
    faster than a person moves (its knee jerk exceeds gate E's bound: jerk_exceeded)."""
    from kibotos.xgen.interaction import interact
    from kibotos.xgen.retarget import retarget
    from kibotos.xgen.synth import cargo_pickup

    motion, _ = retarget(cargo_pickup(duration_s=5.0, fps=30.0).motion, xcfg)
    return interact(motion, xcfg)[0]


@pytest.fixture(scope="module")
def clip_dir(clip, xcfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("quality")
    req = ExportRequest(variants=[Variant(clip=clip, params={"kind": "base"})], out_dir=out, source_sha256="ab" * 32,
                        source_kind="keypoints", uploader="tester", task_id="cargo_pickup", task_version="1",
                        annotation={}, stage_metrics={})
    (folder,), _ = export(req, xcfg)
    return folder


@pytest.fixture(scope="module")
def honest(clip_dir):
    return judge_clip(clip_dir)


def _broken(clip_dir, tmp_path_factory, name, edit):
    folder = tmp_path_factory.mktemp(name) / clip_dir.name
    shutil.copytree(clip_dir, folder)
    for leftover in ("bundle.zarr.zip", "quality.json"):
        (folder / leftover).unlink(missing_ok=True)
    with np.load(folder / "clip.npz") as z:
        arrays = {k: z[k].copy() for k in z.files}
    meta = json.loads((folder / "metadata.json").read_text())
    edit(arrays, meta)
    np.savez_compressed(folder / "clip.npz", **arrays)
    return folder


def test_honest_clip_passes_the_verifier(honest, xcfg):
    assert honest.passed, (honest.reason_code, honest.metrics)
    assert honest.verdict == "accepted" and honest.reason_code is None
    assert honest.score is not None and honest.score >= xcfg.quality.min_score
    gates = [g["gate"] for g in honest.report["gates"]]
    assert gates[:5] == ["gate_a_integrity", "gate_b_timestamps", "gate_c_sync", "gate_d_limits",
                         "gate_e_plausibility"]
    assert gates[5:] == ["ik_residual", "task_completion"]
    ik = honest.report["gates"][5]["metrics"]
    # both wrists judged against the object stream: the box's grasp and the waypoints
    assert {t["link"] for t in ik["targets"]} == set(GRASP_LINKS)
    assert ik["rms_pos_error_m"] < 0.01
    task = honest.report["gates"][6]["metrics"]
    assert task["grasp_evidence"] == "contacts" and task["checklist_fraction"] == 1.0
    lifted = next(p for p in task["predicates"] if p["kind"] == "object_lifted")
    assert lifted["value"]["max_height_m"] > 0.04


def test_result_is_stored_with_the_clip(honest, clip_dir):
    stored = json.loads((clip_dir / "quality.json").read_text())
    assert stored["passed"] is True and stored["score"] == honest.score
    assert (clip_dir / "bundle.zarr.zip").is_file()


def test_bundle_kinematics_put_the_wrists_where_the_clip_has_them(honest, clip_dir):
    """The floating-base rows through the registry's URDF give the same wrist positions as
    the clip's MuJoCo model (the world frame is the clip's)."""
    robot = get_robot("unitree_g1", FLOATING_REVISION)
    with np.load(clip_dir / "clip.npz") as z:
        qpos = z["robot_qpos"].astype(float)
    with open_bundle(honest.bundle_path) as view:
        rows = view.read(JOINT_POS).astype(float)
    np.testing.assert_allclose(rows, floating_joint_rows(qpos), atol=1e-5)
    m, d = g1.model(), mujoco.MjData(g1.model())
    for link in GRASP_LINKS:
        urdf = serial_kinematics_for(robot.model_id, robot.revision, link).link_poses(rows)[:, :3, 3]
        mj = np.empty_like(urdf)
        for t, q in enumerate(qpos):
            d.qpos[:] = q
            mujoco.mj_kinematics(m, d)
            mj[t] = d.xpos[m.body(link).id]
        assert np.abs(urdf - mj).max() < 2e-3


def test_box_teleport_is_rejected(clip, clip_dir, tmp_path_factory):
    mid = (clip.hold.carry + clip.hold.place) // 2

    def teleport(arrays, meta):
        arrays["object_pose"][mid:mid + 6, 0] += 0.4  # the box jumps 40 cm away from the hands and back

    result = judge_clip(_broken(clip_dir, tmp_path_factory, "teleport", teleport))
    assert not result.passed and result.verdict == "rejected"
    assert result.reason_code in {"ik_peak_exceeded", "ik_rms_exceeded", "ik_target_infeasible"}


def test_hands_far_from_the_box_are_rejected(clip, clip_dir, tmp_path_factory):
    arms = [7 + i for i, n in enumerate(g1.joint_names()) if "shoulder" in n or "elbow" in n or "wrist" in n]
    home = g1.home_qpos()

    def drop_arms(arrays, meta):
        held = slice(clip.hold.start, clip.hold.end + 1)
        arrays["robot_qpos"][held, arms] = home[arms]  # arms hang while the box floats along

    result = judge_clip(_broken(clip_dir, tmp_path_factory, "hands", drop_arms))
    assert not result.passed
    assert result.reason_code in {"ik_peak_exceeded", "ik_rms_exceeded", "ik_target_infeasible", "teleport_detected"}


def test_one_hand_off_the_box_is_rejected(clip, clip_dir, tmp_path_factory):
    """The right arm alone hangs: the box's stream declares the left wrist's grasp, so this
    is caught only because the check judges both hands."""
    arm = [7 + i for i, n in enumerate(g1.joint_names()) if n.startswith("right_") and
           ("shoulder" in n or "elbow" in n or "wrist" in n)]
    home = g1.home_qpos()

    def drop_right(arrays, meta):
        held = slice(clip.hold.start, clip.hold.end + 1)
        arrays["robot_qpos"][held, arm] = home[arm]

    result = judge_clip(_broken(clip_dir, tmp_path_factory, "right", drop_right))
    assert not result.passed
    if result.report.get("failed_gate") == "ik_residual":
        hands = result.report["gates"][-1]["metrics"]["hands"]
        assert hands["left_wrist_yaw_link"]["passed"] and not hands["right_wrist_yaw_link"]["passed"]


def test_joint_beyond_its_limit_is_rejected(clip_dir, tmp_path_factory):
    knee = 7 + g1.joint_names().index("left_knee_joint")
    _, upper = g1.joint_limits()

    def overbend(arrays, meta):
        q = arrays["robot_qpos"]
        q[: len(q) // 3, knee] = upper[knee - 7] + 0.4  # a third of the clip 0.4 rad past the knee's limit

    result = judge_clip(_broken(clip_dir, tmp_path_factory, "limits", overbend))
    assert not result.passed and result.reason_code == "joint_limit_violation"
    assert result.report["failed_gate"] == "gate_d_limits"


def test_missing_clip_files_are_a_reason_code(tmp_path):
    result = judge_clip(tmp_path)
    assert not result.passed and result.reason_code == "xgen_clip_invalid"


def test_nan_in_a_clip_is_a_reason_code_not_a_crash(clip_dir, tmp_path_factory):
    def poison(arrays, meta):
        arrays["robot_qpos"][5, 10] = np.nan

    result = judge_clip(_broken(clip_dir, tmp_path_factory, "nan", poison))
    assert not result.passed and result.reason_code == "xgen_clip_invalid"
