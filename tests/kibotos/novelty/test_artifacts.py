"""Synthetic-artifact heuristics on real encoded videos (PyAV / libx264)."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from kibotos.media.video import encode_mp4
from kibotos.novelty.artifacts import analyze_artifacts
from kibotos.novelty.config import load_novelty_config
from kibotos.novelty.scan import scan_encoded, scan_raw
from kibotos.robots import get_robot
from kibotos.synthetic import perturb
from kibotos.synthetic.samples import make_episode
from tests.fixtures.episodes import ROBOT_IDS, ROBOTS

CFG = load_novelty_config().novelty


def encode(frames: np.ndarray, options: dict[str, str], metadata: dict[str, str] | None = None, fps: int = 30) -> bytes:
    """H.264 with explicit encoder options and container tags."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        for k, v in (metadata or {}).items():
            container.metadata[k] = v
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = options
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = i, 1 / Fraction(fps)
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def artifacts_of(mp4: bytes) -> dict:
    return analyze_artifacts(scan_encoded(mp4, CFG), CFG.artifacts)


@pytest.fixture(scope="module")
def frames():
    """A 12 s genuine sample video, decoded (long enough for the compression statistics)."""
    ep = make_episode(get_robot("ur5", "joint-limited-v1"), seed=3, duration_ms=12000, with_object=False)
    return perturb.decode_all(ep.video_mp4)


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_genuine_sample_videos_raise_no_cue(key):
    ep = make_episode(get_robot(*key), seed=5)
    result = artifacts_of(ep.video_mp4)
    assert result["flags"] == [] and result["artifact_score"] == 0.0, result
    assert result["cues"]["static_overlay"]["applicable"] is True


@pytest.mark.parametrize("corner", ["top_right", "bottom_left"])
def test_burned_in_logo_is_detected_as_a_static_overlay(frames, corner):
    result = artifacts_of(encode_mp4(perturb.burn_logo(corner=corner)(frames), 30))
    cue = result["cues"]["static_overlay"]
    assert cue["strength"] == 1.0 and "artifact_static_overlay" in result["flags"]
    x, y, w, h = cue["overlay"]["box"]
    centre_x, centre_y = x + w / 2, y + h / 2
    assert (centre_x > 0.5) == corner.endswith("right") and (centre_y < 0.5) == corner.startswith("top")
    assert w * h < 0.1
    assert result["artifact_score"] == pytest.approx(CFG.artifacts.weights["static_overlay"], abs=1e-3)


def test_a_still_video_is_not_judged_for_overlays(frames):
    still = np.repeat(perturb.burn_logo()(frames[:1]), 40, axis=0)
    cue = artifacts_of(encode_mp4(still, 30))["cues"]["static_overlay"]
    assert cue["applicable"] is False and cue["strength"] == 0.0


def test_screen_recapture_moire_is_detected(frames):
    clean = artifacts_of(encode_mp4(frames, 30))["cues"]["screen_recapture"]
    moire = artifacts_of(encode_mp4(perturb.moire()(frames), 30))["cues"]["screen_recapture"]
    assert clean["strength"] == 0.0 and clean["peak_ratio"] < CFG.artifacts.recapture.peak_ratio
    assert moire["strength"] > 0.5, moire
    fx, fy = moire["peak_frequency"]
    # the pattern: period 3.7 px at 27 degrees (up to the sign of the spectrum's mirror peak)
    assert np.hypot(fx, fy) == pytest.approx(1 / 3.7, abs=0.01)


def test_double_compression_shows_the_first_gop(frames):
    first = perturb.decode_all(encode(frames, {"crf": "30", "g": "9", "bf": "0"}))
    double = artifacts_of(encode_mp4(first, 30))["cues"]["double_compression"]
    single = artifacts_of(encode_mp4(frames, 30))["cues"]["double_compression"]
    assert single["applicable"] and single["strength"] == 0.0, single
    assert double["strength"] > 0.0 and double["period_frames"] == pytest.approx(9.0, abs=0.3), double


def test_encoder_signature_of_a_screen_recorder_is_flagged(frames):
    # (the mp4 muxer writes its own "encoder" tag; recorders also sign other tags)
    result = artifacts_of(encode(frames[:60], {"crf": "23"}, metadata={"comment": "Recorded with OBS Studio 30.1"}))
    assert result["cues"]["encoder_signature"]["signatures"] == {"obs": {"category": "screen_capture",
                                                                         "tag": "comment"}}
    assert {"artifact_encoder_signature", "encoder_screen_capture"} <= set(result["flags"])
    # a word merely containing a signature is not one
    plain = artifacts_of(encode(frames[:60], {"crf": "23"}, metadata={"comment": "jobs done"}))
    assert plain["cues"]["encoder_signature"]["signatures"] == {}


def test_intra_only_stream_is_flagged(frames):
    result = artifacts_of(encode(frames[:60], {"crf": "23", "g": "1"}))
    assert result["cues"]["intra_only"]["i_fraction"] == 1.0 and "artifact_intra_only" in result["flags"]
    assert result["artifact_score"] == pytest.approx(CFG.artifacts.weights["intra_only"], abs=1e-3)


def test_cues_combine_into_the_artifact_score(frames):
    logo = perturb.burn_logo()(frames[:90])
    result = artifacts_of(encode(logo, {"crf": "23", "g": "1"}))  # an overlay in an all-intra stream
    w = CFG.artifacts.weights
    assert {"artifact_static_overlay", "artifact_intra_only"} <= set(result["flags"])
    expected = 1 - (1 - w["static_overlay"]) * (1 - w["intra_only"])
    assert result["artifact_score"] == pytest.approx(expected, abs=1e-3)


def test_raw_frames_have_no_container_cues(frames):
    result = analyze_artifacts(scan_raw(frames[:60], 30.0, CFG), CFG.artifacts)
    assert result["cues"]["encoder_signature"]["applicable"] is False
    assert result["cues"]["double_compression"]["applicable"] is False
    assert result["cues"]["static_overlay"]["applicable"] is True
