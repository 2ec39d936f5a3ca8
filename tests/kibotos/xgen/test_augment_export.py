import json

import mujoco
import numpy as np
import pytest
from typer.testing import CliRunner

from kibotos.xgen import g1
from kibotos.xgen.augment import augment, mirror
from kibotos.xgen.export import CLIP_KEYS, ExportRequest, export
from kibotos.xgen.interaction import box_bottom, face_distances
from kibotos.xgen.phases import PHASE_ID
from kibotos.xgen.pose import clean, estimate
from kibotos.xgen.skeleton import validate_motion

HELD = [PHASE_ID[p] for p in ("grasp", "lift", "carry", "place")]


@pytest.fixture(scope="module")
def variants(clip, xcfg):
    out, _ = augment(clip, xcfg)
    return out


def test_at_least_ten_physical_variants_with_parameters(variants, xcfg):
    assert len(variants) >= xcfg.augment.min_clips
    kinds = {v.params["kind"] for v in variants}
    assert {"base", "size", "yaw", "speed", "mirror", "base_offset", "mass"} <= kinds
    kin = g1.Kin()
    for v in variants:
        c = v.clip
        held = np.isin(c.phase, HELD)
        assert face_distances(kin, c.qpos[held], c.object_pose[held], c.anchors).max() < 0.02, v.params
        assert box_bottom(c.object_pose, c.box_size).min() >= -0.01, v.params
        assert "box_size_m" in v.params and "mass_kg" in v.params


def test_mirror_reflects_the_body_and_twice_is_identity(clip):
    once = mirror(clip)
    palms, _ = g1.Kin().palms(clip.qpos)
    mirrored, _ = g1.Kin().palms(once.qpos)
    # the mirrored right palm is where the left one was, reflected in the xz plane
    assert np.abs(mirrored[:, 1] - palms[:, 0] * np.array([1, -1, 1])).max() < 1e-4  # the model is symmetric to 10 um
    assert np.allclose(mirror(once).qpos, clip.qpos)


def test_speed_variant_changes_duration(variants, clip):
    for v in variants:
        if v.params["kind"] == "speed":
            assert len(v.clip) == pytest.approx(len(clip) / v.params["speed"], abs=1)


def test_export_writes_the_seed_keys_with_consistent_velocities(tmp_path, variants, xcfg):
    req = ExportRequest(variants=variants[:2], out_dir=tmp_path, source_sha256="ab" * 32, source_kind="keypoints",
                        uploader="miner-1", task_id="cargo_pickup", task_version="1", annotation={},
                        stage_metrics={"retarget": {"mean_residual_m": 0.01}})
    paths, _ = export(req, xcfg)
    data = np.load(paths[0] / "clip.npz")
    assert sorted(data.files) == sorted(CLIP_KEYS)
    n = len(variants[0].clip)
    assert data["robot_qpos"].shape == (n, 36) and data["robot_qvel"].shape == (n, 35)
    assert data["object_pose"].shape == (n, 7) and data["phase"].shape == (n,) and data["contact_graph"].shape == (n, 5)
    assert np.allclose(data["root_pose"], data["robot_qpos"][:, :7])
    # integrating qvel for one frame reaches the next qpos
    m = g1.model()
    q = data["robot_qpos"].astype(np.float64)
    nxt = q[10].copy()
    mujoco.mj_integratePos(m, nxt, data["robot_qvel"][10].astype(np.float64), 1.0 / variants[0].clip.fps)
    assert np.abs(nxt - q[11]).max() < 1e-3
    meta = json.loads((paths[0] / "metadata.json").read_text())
    assert meta["robot_model_id"] == "unitree_g1" and meta["uploader"] == "miner-1"
    assert meta["config_version"] == xcfg.config_version and meta["augmentation"]["kind"] == "base"


def test_pose_cleaning_fills_short_gaps_and_refuses_long_ones(pickup, xcfg):
    kp = pickup.motion.keypoints.copy()
    kp[10:13, 15] = np.nan  # 0.1 s of the left wrist
    cleaned, metrics = clean(validate_motion(kp, None, 30.0, source="t"), xcfg.pose)
    assert np.isfinite(cleaned.keypoints).all()
    assert np.abs(cleaned.keypoints[11, 15] - pickup.motion.keypoints[11, 15]).max() < 0.03
    kp[10:40, 15] = np.nan  # 1 s
    from kibotos.xgen.result import XGenError

    with pytest.raises(XGenError) as exc:
        clean(validate_motion(kp, None, 30.0, source="t"), xcfg.pose)
    assert exc.value.reason_code == "xgen_pose_gaps"


def test_video_without_a_person_is_refused(xcfg):
    from kibotos.xgen.result import XGenError

    frames = np.full((6, 128, 128, 3), 90, np.uint8)
    with pytest.raises(XGenError) as exc:
        estimate(frames, 30.0, xcfg)
    assert exc.value.reason_code == "xgen_no_person"


def test_cli_refuses_two_sources(tmp_path):
    from kibotos.cli.main import app

    result = CliRunner().invoke(app, ["xgen", "run", "--video", "a.mp4", "--keypoints", "b.npz", "--out", str(tmp_path)])
    assert result.exit_code == 2


def test_cli_runs_every_stage_from_a_keypoints_file(tmp_path, pickup):
    from kibotos.cli.main import app
    from kibotos.xgen.skeleton import write_keypoints

    kp = write_keypoints(tmp_path / "kp.npz", pickup.motion)
    result = CliRunner().invoke(app, ["xgen", "run", "--keypoints", str(kp), "--out", str(tmp_path / "clips"),
                                      "--uploader", "miner-7"])
    assert result.exit_code == 0, result.output
    folders = sorted((tmp_path / "clips").iterdir())
    assert len(folders) >= 10
    meta = json.loads((folders[0] / "metadata.json").read_text())
    assert meta["uploader"] == "miner-7" and set(meta["stage_metrics"]) == {"pose", "retarget", "interaction", "augment"}
    assert sorted(np.load(folders[-1] / "clip.npz").files) == sorted(CLIP_KEYS)


def test_cli_reports_a_refusal_with_its_reason_code(tmp_path):
    from kibotos.cli.main import app

    bad = tmp_path / "kp.npz"
    np.savez(bad, keypoints=np.zeros((5, 10, 3)), fps=30.0)
    result = CliRunner().invoke(app, ["xgen", "run", "--keypoints", str(bad), "--out", str(tmp_path / "clips")])
    assert result.exit_code == 1 and "xgen_keypoints_invalid" in result.output


def test_unreadable_video_is_a_reason_code_not_a_crash(tmp_path):
    from kibotos.cli.main import app

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    result = CliRunner().invoke(app, ["xgen", "run", "--video", str(bad), "--out", str(tmp_path / "clips")])
    assert result.exit_code == 1 and "xgen_video_unreadable" in result.output


def test_cli_refuses_an_unregistered_task_version(tmp_path, pickup):
    from kibotos.cli.main import app
    from kibotos.xgen.skeleton import write_keypoints

    kp = write_keypoints(tmp_path / "kp.npz", pickup.motion)
    result = CliRunner().invoke(app, ["xgen", "run", "--keypoints", str(kp), "--task-version", "99",
                                      "--out", str(tmp_path / "clips")])
    assert result.exit_code == 2 and "unknown_task" in result.output
