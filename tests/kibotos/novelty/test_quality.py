"""S_novel's video quality and viewpoint compliance (design §7.1) and the render-likeness
heuristic (§11): measured on real encoded videos, each term able to fail."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from kibotos.bundle import open_bundle
from kibotos.media.human_video import camera_motion_video, person_photos
from kibotos.media.video import encode_mp4
from kibotos.novelty.checker import _video_factors
from kibotos.novelty.config import load_novelty_config
from kibotos.novelty.fingerprint import fingerprint_bundle
from kibotos.novelty.quality import noise_sigma, render_likeness, video_quality
from kibotos.novelty.scan import scan_encoded
from kibotos.synthetic.perturb import decode_all
from tests.fixtures.episodes import PANDA

CFG = load_novelty_config().novelty


def _measure(path: Path) -> dict:
    with open_bundle(path) as view:
        _, artifacts = fingerprint_bundle(view, CFG)
    return artifacts


def _with_frames(ep, fn, tmp_path: Path, name: str) -> Path:
    frames = fn(decode_all(ep.video_mp4))
    return replace(ep, video_mp4=encode_mp4(frames, ep.manifest["video"]["primary"]["fps"])).write(
        tmp_path / f"{name}.zarr.zip")


def test_the_sample_video_has_full_quality_and_looks_rendered(samples):
    a = _measure(samples.path(PANDA))
    q = a["video_quality"]
    assert q["applicable"] and q["quality"] == 1.0 and set(q["terms"]) == {"sharpness", "exposure", "resolution",
                                                                             "viewpoint"}
    assert q["in_view_fraction"] == 1.0 and q["viewpoint_of"] == "end_effectors"
    r = a["render_like"]
    assert r["strength"] >= CFG.render_like.flag_strength and 0 < r["confidence"] <= 1
    quality_factor, render_factor, flags = _video_factors(a, CFG)
    assert quality_factor == 1.0 and "render_like_video" in flags
    assert render_factor == 1.0 - CFG.penalties.render_like * r["strength"] * r["confidence"]


def test_a_video_of_a_photograph_does_not_look_rendered():
    """Camera-like frames: a real photograph's sensor noise and texture survive H.264."""
    frames = camera_motion_video(person_photos()["grace_hopper"], 40)
    scan = scan_encoded(encode_mp4(frames, 30.0), CFG)
    r = render_likeness(scan, CFG.render_like)
    assert r["strength"] < CFG.render_like.flag_strength and r["noise_sigma"] > CFG.render_like.noise_hi
    assert r["confidence"] > 0.5


def test_noise_sigma_reads_added_white_noise():
    rng = np.random.default_rng(0)
    flat = np.tile(np.linspace(50, 200, 320, dtype=np.float32), (240, 1))  # a smooth gradient: no noise
    assert noise_sigma(flat) < 0.05
    noisy = flat + rng.normal(0, 3.0, flat.shape).astype(np.float32)
    assert noise_sigma(noisy) == pytest.approx(3.0, rel=0.1)


def test_a_camera_that_does_not_see_the_work_fails_the_viewpoint(samples, tmp_path):
    ep = samples.episode(PANDA)
    pose = np.asarray(ep.manifest["camera"]["primary"]["extrinsics"])
    away = pose.copy()
    away[:3, 0], away[:3, 2] = -pose[:3, 0], -pose[:3, 2]  # turned around, still right-handed
    manifest = {**ep.manifest, "camera": {"primary": {**ep.manifest["camera"]["primary"], "extrinsics": away.tolist()}}}
    a = _measure(replace(ep, manifest=manifest).write(tmp_path / "away.zarr.zip"))
    q = a["video_quality"]
    assert q["in_view_fraction"] == 0.0 and q["terms"]["viewpoint"] == 0.0 and q["quality"] < 0.1
    quality_factor, _, flags = _video_factors(a, CFG)
    assert quality_factor == pytest.approx(1.0 - CFG.penalties.quality * (1.0 - q["quality"]))
    assert "video_low_viewpoint" in flags


@pytest.mark.parametrize("name, edit, term", [
    ("blurred", lambda f: np.stack([cv2.GaussianBlur(x, (0, 0), 6) for x in f]), "sharpness"),
    ("blown_out", lambda f: np.where(f > 40, 255, 0).astype(np.uint8), "exposure"),
    ("tiny", lambda f: np.stack([cv2.resize(x, (80, 60), interpolation=cv2.INTER_AREA) for x in f]), "resolution"),
])
def test_each_quality_term_can_fail(samples, tmp_path, name, edit, term):
    ep = samples.episode(PANDA)
    q = _measure(_with_frames(ep, edit, tmp_path, name))["video_quality"]
    assert q["terms"][term] < 0.5, q
    assert q["quality"] < 0.75


def test_rows_without_quality_measurements_are_neutral():
    assert _video_factors({"artifact_score": 0.0}, CFG) == (1.0, 1.0, [])


def test_render_likeness_is_never_a_hard_reject_and_weighs_as_configured():
    artifacts = {"render_like": {"strength": 1.0, "confidence": 1.0}, "artifact_score": 0.0}
    weighted = CFG.model_copy(update={"penalties": CFG.penalties.model_copy(update={"render_like": 0.1})})
    assert _video_factors(artifacts, weighted)[1] == pytest.approx(0.9)
    assert _video_factors(artifacts, CFG)[1] == 1.0 - CFG.penalties.render_like


def test_video_quality_without_a_video():
    assert video_quality(None, None, CFG.quality) == {"applicable": False, "reason": "no readable video",
                                                      "quality": None}
