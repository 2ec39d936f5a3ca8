"""Secondary cameras in the align job: each one's quality (motion vs joint speed, the
kinematics drawn through its declared pose vs its video, coverage), what the decision's
multi-angle multiplier sums.

Real components: sample bundles (``kibotos.synthetic.samples`` with a secondary camera), PyAV
decoding, forward kinematics, ``check_alignment``. No playback job runs (image evidence
is missing; the secondary measurement does not use it).
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import yaml

from gpu_consumers.alignment import GATE_ID, check_alignment
from kibotos.bundle import open_bundle
from kibotos.config.alignment import DEFAULT_PATH, load_alignment_config, parse_alignment_config
from kibotos.objectstore import LocalObjectStore
from kibotos.robots import get_robot
from kibotos.synthetic.samples import Episode, make_episode
from tests.fixtures.episodes import PANDA

CONFIG = load_alignment_config()
SIDE = "secondary_side"


def event(name: str, offset_ms: float) -> dict:
    """A ``submission_in_flight`` event as the align job receives it (no playback result)."""
    return {"submission_id": f"sub-{name}", "miner_id": "miner-sample", "bundle_uri": f"file:///{name}",
            "bundle_sha256": "0" * 64, "bundle_size_bytes": 1, "received_at": int(time.time() * 1000),
            "robot_model_id": PANDA[0], "robot_model_revision": PANDA[1], "task_id": None,
            "config_version": "gates-test", "gate_results": [],
            "sync": {"claimed_offset_ms": offset_ms, "estimated_offset_ms": None, "sync_confidence": None}}


def with_manifest(ep: Episode, **entries: tuple[dict, dict]) -> Episode:
    """``ep`` with its manifest's ``camera`` / ``video`` entries set: ``key=(camera, video)``."""
    manifest = {**ep.manifest, "camera": dict(ep.manifest["camera"]), "video": dict(ep.manifest["video"])}
    for key, (cam, video) in entries.items():
        manifest["camera"][key], manifest["video"][key] = cam, video
    return replace(ep, manifest=manifest)


@pytest.fixture(scope="module")
def episodes() -> dict[str, Episode]:
    robot = get_robot(*PANDA)
    genuine = make_episode(robot, seed=0, secondary_cameras=("side",))
    other = make_episode(robot, seed=1, secondary_cameras=("side",))
    primary = (genuine.manifest["camera"]["primary"], genuine.manifest["video"]["primary"])
    return {
        "genuine": genuine,
        "mono": make_episode(robot, seed=0),
        # its secondary video is another episode's (same robot, task and camera pose)
        "unrelated": replace(genuine, secondary_mp4={SIDE: other.secondary_mp4[SIDE]}),
        "two_views": make_episode(robot, seed=0, secondary_cameras=("side", "far_side")),
        # the primary video again, declared with the primary's pose
        "copy_of_primary": with_manifest(replace(genuine, secondary_mp4={SIDE: genuine.video_mp4}),
                                         secondary_side=primary),
        "garbage": replace(genuine, secondary_mp4={SIDE: b"\x00\x00\x00\x18ftypmp42" + bytes(4000)}),
        "no_manifest_entry": replace(genuine, manifest={
            **genuine.manifest, "camera": {"primary": primary[0]}, "video": {"primary": primary[1]}}),
    }


@pytest.fixture(scope="module")
def results(episodes, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("secondary")
    store = LocalObjectStore(root / "store")
    out = {}
    for name, ep in episodes.items():
        with open_bundle(ep.write(root / f"{name}.zarr.zip")) as view:
            out[name] = check_alignment(view, event(name, ep.true_offset_ms), store, CONFIG, None)
    return out


def test_a_genuine_secondary_camera_has_a_high_quality(results):
    res = results["genuine"]
    assert res.gate == GATE_ID and res.passed
    [(name, cam)] = res.metrics["secondary_cameras"].items()
    assert name == "side" and cam["flags"] == [], cam
    assert cam["quality"] > 0.5 and res.metrics["angle_quality_sum"] == cam["quality"]
    assert cam["motion_corr"] >= 0.6 and cam["view_match"] >= CONFIG.secondary.view_hi
    assert cam["coverage"] == pytest.approx(1.0, abs=0.01) and cam["frames"] == cam["frame_count_declared"]
    assert cam["quality"] == pytest.approx(cam["terms"]["motion"] * cam["terms"]["view"] * cam["coverage"], abs=1e-3)
    assert cam["view_angle_deg"]["primary"] > CONFIG.secondary.min_view_angle_deg
    assert not any(f.startswith("secondary_") for f in res.flags)
    assert res.metrics["config_version"] == CONFIG.config_version
    assert res.thresholds["secondary"]["view_lo"] == CONFIG.secondary.view_lo


def test_another_episodes_video_earns_almost_nothing_and_is_not_rejected(results):
    res = results["unrelated"]
    cam = res.metrics["secondary_cameras"]["side"]
    assert res.passed and cam["quality"] < 0.2, cam
    assert res.metrics["angle_quality_sum"] == cam["quality"]
    assert "secondary_view_mismatch" in cam["flags"] and "secondary_view_mismatch" in res.flags
    # the motion correlation alone would have paid it: the same task shares its rhythm
    assert cam["terms"]["motion"] > 0.5
    assert cam["view_match"] < results["genuine"].metrics["secondary_cameras"]["side"]["view_match"] - 0.5


def test_a_mono_bundle_has_no_secondary_cameras(results):
    res = results["mono"]
    assert res.passed and res.metrics["secondary_cameras"] == {} and res.metrics["angle_quality_sum"] == 0
    assert not any(f.startswith("secondary_") for f in res.flags)
    # the primary's evidence does not depend on a secondary camera
    assert res.metrics["motion"] == results["genuine"].metrics["motion"]
    assert res.metrics["s_align"] == results["genuine"].metrics["s_align"]


def test_every_genuine_view_counts(results):
    cams = results["two_views"].metrics["secondary_cameras"]
    assert sorted(cams) == ["far_side", "side"]
    assert all(c["quality"] > 0.5 and c["flags"] == [] for c in cams.values()), cams
    assert results["two_views"].metrics["angle_quality_sum"] == pytest.approx(sum(c["quality"] for c in cams.values()),
                                                                              abs=1e-3)
    # the other view was measured first: the second one's angle to it is recorded
    assert cams["side"]["view_angle_deg"]["secondary_far_side"] > 100


@pytest.mark.parametrize("name, flag", [
    ("copy_of_primary", "secondary_same_viewpoint"),
    ("garbage", "secondary_video_unreadable"),
    ("no_manifest_entry", "secondary_manifest_missing"),
])
def test_a_camera_that_cannot_count_gets_zero_and_a_flag_never_a_reject(results, name, flag):
    res = results[name]
    cam = res.metrics["secondary_cameras"]["side"]
    assert res.passed and res.reason_code is None
    assert cam["quality"] == 0.0 and flag in cam["flags"] and flag in res.flags and cam["reason"]
    assert res.metrics["angle_quality_sum"] == 0.0
    assert res.metrics["motion"] == results["genuine"].metrics["motion"]


def test_the_copy_of_the_primary_would_otherwise_look_genuine(results):
    """Without the viewpoint rule, a copy of the primary video would earn the bonus: it is
    consistent with the kinematics through the pose it declares."""
    cam = results["copy_of_primary"].metrics["secondary_cameras"]["side"]
    assert cam["view_angle_deg"]["primary"] < 1.0
    assert cam["terms"]["motion"] > 0.5 and cam["terms"]["view"] > 0.5


def test_cameras_past_the_cap_are_listed_with_zero(episodes, tmp_path):
    config = CONFIG.model_copy(update={"secondary": CONFIG.secondary.model_copy(update={"max_cameras": 1})})
    ep = episodes["two_views"]
    with open_bundle(ep.write(tmp_path / "b.zarr.zip")) as view:
        res = check_alignment(view, event("capped", ep.true_offset_ms), LocalObjectStore(tmp_path / "s"), config, None)
    cams = res.metrics["secondary_cameras"]
    assert cams["far_side"]["quality"] > 0.5  # measured first, by name
    assert cams["side"]["quality"] == 0.0 and cams["side"]["flags"] == ["secondary_cameras_capped"]


def test_config_refuses_unordered_secondary_thresholds():
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["secondary"]["view_hi"] = raw["secondary"]["view_lo"]
    with pytest.raises(Exception, match="view_hi"):
        parse_alignment_config(raw)
    del raw["secondary"]
    with pytest.raises(Exception, match="secondary"):
        parse_alignment_config(raw)
