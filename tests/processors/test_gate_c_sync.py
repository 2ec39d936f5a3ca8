"""Gate C — video/kinematics overlap and the sync offset estimator."""

from __future__ import annotations

import io
from dataclasses import replace

import av
import cv2
import numpy as np
import pytest

from kibotos.bundle import write_bundle
from kibotos.config.gates import load_config
from kibotos.synthetic.samples import EXPECTED
from processors.gate_c_sync import GATE_ID, estimate_offset
from tests.fixtures.episodes import PANDA, ROBOT_IDS, ROBOTS, run_gate_on, sync_set, variants_of

CONFIG = load_config()


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_genuine_passes(samples, key):
    ep = samples.episode(key)
    res = run_gate_on(GATE_ID, samples.path(key))
    assert res.passed, (res.reason_code, res.metrics)
    m = res.metrics
    assert m["claimed_offset_ms"] == ep.manifest["sync"]["sync_offset_ms_claimed"]
    assert m["frame_count_decoded"] == m["frame_count_declared"]
    assert min(m["overlap_fraction_kin"], m["overlap_fraction_video"]) >= CONFIG.gate_c.min_overlap_fraction
    assert 0.0 <= m["sync_confidence"] <= 1.0
    assert res.thresholds == CONFIG.gate_c.model_dump()
    assert m["wall_ms"] > 0


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
@pytest.mark.parametrize("variant", variants_of(GATE_ID))
def test_rejects_its_failure_classes(samples, key, variant):
    res = run_gate_on(GATE_ID, samples.path(key, variant))
    assert (res.passed, res.reason_code) == (False, EXPECTED[variant][1]), res.metrics


@pytest.fixture(scope="module")
def confident(samples):
    """A genuine episode whose estimate is high-confidence, and that estimate."""
    res = run_gate_on(GATE_ID, samples.path(PANDA))
    assert res.metrics["sync_confidence"] >= CONFIG.gate_c.high_confidence, res.metrics
    return res.metrics["estimated_offset_ms"]


@pytest.mark.parametrize("delta_ms, passes", [(-251, False), (-249, True), (249, True), (251, False)])
def test_claim_disagreement_boundary(samples, tmp_path, confident, delta_ms, passes):
    """A claim within 250 ms of a confident estimate is believed; beyond, it is a lie."""
    ep = samples.episode(PANDA)
    claimed = round(confident + delta_ms, 1)
    manifest = ep.manifest | {"sync": {"sync_offset_ms_claimed": claimed}}
    res = run_gate_on(GATE_ID, replace(ep, manifest=manifest).write(tmp_path / "e.zarr.zip"))
    assert res.metrics["estimated_offset_ms"] == confident  # the claim never moves the estimate
    assert res.passed is passes, res.metrics
    assert passes or res.reason_code == "sync_offset_mismatch"


def test_low_confidence_estimates_never_reject_a_claim(samples):
    never_confident = CONFIG.model_copy(update={"gate_c": CONFIG.gate_c.model_copy(update={"high_confidence": 1.01})})
    res = run_gate_on(GATE_ID, samples.path(PANDA, "sync_lie"), never_confident)
    assert res.passed, res.metrics
    assert res.flags == ["sync_low_confidence"]
    assert res.metrics["offset_used_ms"] == res.metrics["claimed_offset_ms"]


@pytest.mark.parametrize("update, reason", [({"max_sync_disagreement_ms": 0.0}, "sync_offset_mismatch"),
                                            ({"min_overlap_fraction": 0.999}, "insufficient_overlap")])
def test_tighter_config_rejects_a_genuine_sample(samples, update, reason):
    strict = CONFIG.model_copy(update={"gate_c": CONFIG.gate_c.model_copy(update=update)})
    res = run_gate_on(GATE_ID, samples.path(PANDA), strict)
    assert (res.passed, res.reason_code) == (False, reason), res.metrics
    assert all(res.thresholds[k] == v for k, v in update.items())


@pytest.mark.parametrize("extra_frames, passes", [(2, True), (12, False), (-12, False)])
def test_declared_frame_count_must_match_the_video(samples, tmp_path, extra_frames, passes):
    ep = samples.episode(PANDA)
    video = ep.manifest["video"]["primary"]
    manifest = ep.manifest | {"video": {"primary": video | {"frame_count": video["frame_count"] + extra_frames}}}
    res = run_gate_on(GATE_ID, replace(ep, manifest=manifest).write(tmp_path / "e.zarr.zip"))
    assert res.passed is passes, res.metrics
    assert passes or res.reason_code == "video_frame_count_mismatch"


def test_raw_frames_give_the_same_estimate_as_the_mp4(samples, tmp_path):
    """``video/primary/frames`` is the contract's alternative to ``encoded``."""
    ep = samples.episode(PANDA)
    with av.open(io.BytesIO(ep.video_mp4)) as container:
        frames = np.stack([cv2.resize(f.to_ndarray(format="rgb24"), (96, 72), interpolation=cv2.INTER_AREA)
                           for f in container.decode(video=0)])
    path = write_bundle(tmp_path / "frames.zarr.zip", ep.manifest, timestamps_ms=ep.timestamps_ms,
                        joint_pos=ep.joint_pos, joint_vel=ep.joint_vel, video_frames=frames)
    res = run_gate_on(GATE_ID, path)
    ref = run_gate_on(GATE_ID, samples.path(PANDA))
    assert res.passed, res.metrics
    assert abs(res.metrics["estimated_offset_ms"] - ref.metrics["estimated_offset_ms"]) <= 20


# --- the estimator alone ---------------------------------------------------------------


def _bursts(t_ms: np.ndarray, starts_ms, width_ms: float = 600.0) -> np.ndarray:
    out = np.zeros_like(t_ms)
    for s in starts_ms:
        out += np.exp(-0.5 * ((t_ms - s - width_ms / 2) / (width_ms / 5)) ** 2)
    return out


@pytest.mark.parametrize("true_offset_ms", [-300.0, 0.0, 137.0, 900.0])
def test_estimator_finds_the_lag_of_irregular_bursts(true_offset_ms):
    kin_t = np.arange(0.0, 10_000.0, 20.0)
    starts = [400.0, 1900.0, 2700.0, 4800.0, 6100.0, 8300.0]
    kin = _bursts(kin_t, starts)
    vid_t = np.arange(0.0, 10_000.0 + max(true_offset_ms, 0.0) + 200, 1000.0 / 30)
    vid = _bursts(vid_t - true_offset_ms, starts)
    offset, confidence, details = estimate_offset(kin_t, kin, vid_t, vid, CONFIG.gate_c)
    assert offset == pytest.approx(true_offset_ms, abs=CONFIG.gate_c.grid_ms)
    assert confidence >= CONFIG.gate_c.high_confidence
    assert details["peak_corr"] > 0.9


def test_estimator_is_not_confident_about_periodic_motion():
    """A 1 Hz oscillation matches itself every 1000 ms: the lag is ambiguous."""
    kin_t = np.arange(0.0, 10_000.0, 20.0)
    vid_t = np.arange(0.0, 10_200.0, 1000.0 / 30)
    kin = np.sin(2 * np.pi * kin_t / 1000.0) ** 2
    vid = np.sin(2 * np.pi * (vid_t - 120.0) / 1000.0) ** 2
    _, confidence, details = estimate_offset(kin_t, kin, vid_t, vid, CONFIG.gate_c)
    assert confidence < CONFIG.gate_c.high_confidence
    assert details["second_corr"] > 0.9


def test_estimator_with_no_overlap_has_no_confidence():
    kin_t = np.arange(0.0, 1000.0, 20.0)
    vid_t = np.arange(0.0, 200.0, 1000.0 / 30)
    _, confidence, _ = estimate_offset(kin_t, np.ones_like(kin_t), vid_t, np.ones_like(vid_t),
                                       CONFIG.gate_c.model_copy(update={"max_lag_ms": 100.0}))
    assert confidence == 0.0


# --- accuracy on genuine samples ----------------------------------------------------------


def test_sync_estimator_accuracy_on_genuine_samples(samples):
    """Genuine samples with known injected offsets: how far is the estimate from the truth?

    Bounds (measured: see the printed figures with ``pytest -s``): median |error| <= 35 ms,
    >= 85 % of high-confidence estimates within 50 ms, >= 80 % of samples high-confidence.
    """
    errors, confidences, rows = [], [], []
    for key, seed, offset in sync_set():
        ep = samples.episode(key, seed=seed, offset_ms=offset)
        sync = samples.outcome(key, seed=seed, offset_ms=offset).report.sync
        assert ep.true_offset_ms == offset
        errors.append(abs(sync.estimated_offset_ms - ep.true_offset_ms))
        confidences.append(sync.sync_confidence)
        rows.append(f"{key[0]:>14} seed {seed} offset {offset:5.0f}: est {sync.estimated_offset_ms:7.1f} "
                    f"conf {sync.sync_confidence:.2f} |err| {errors[-1]:5.1f}")
    errors, confidences = np.array(errors), np.array(confidences)
    high = confidences >= CONFIG.gate_c.high_confidence
    within = float(np.mean(errors[high] <= 50.0)) if high.any() else 0.0
    print("\n" + "\n".join(rows))
    print(f"sync estimator over {errors.size} genuine samples: mean |err| {errors.mean():.1f} ms, "
          f"median {np.median(errors):.1f} ms, p90 {np.percentile(errors, 90):.1f} ms, max {errors.max():.1f} ms; "
          f"high-confidence {high.mean():.0%}, of which within 50 ms {within:.0%}")
    assert np.median(errors) <= 35.0
    assert within >= 0.85
    assert high.mean() >= 0.80


@pytest.mark.parametrize("variant", ["video_static", "video_blank"])
def test_a_still_video_of_a_person_fails_too(tmp_path, variant):
    """Low sync confidence never waves a video through that shows nothing moving while the
    robot's links move: whatever the video's subject."""
    from kibotos.robots import get_robot
    from kibotos.synthetic.samples import make_episode

    ep = make_episode(get_robot(*PANDA), variant, seed=0, subject="human")
    res = run_gate_on(GATE_ID, ep.write(tmp_path / "v.zarr.zip"))
    assert (res.passed, res.reason_code) == (False, "video_kinematics_mismatch"), res.metrics
    assert res.metrics["mismatch"] == ["video_static"] and res.metrics["video_max_changed_fraction"] == 0.0
    # the thresholds decide: a robot barely moving in the camera would not be a mismatch
    lenient = CONFIG.model_copy(update={"gate_c": CONFIG.gate_c.model_copy(
        update={"static_min_image_speed_px_s": res.metrics["image_speed_p95_px_s"] + 1.0})})
    again = run_gate_on(GATE_ID, tmp_path / "v.zarr.zip", lenient)
    assert again.reason_code != "video_kinematics_mismatch", again.metrics


def test_a_genuine_video_changes_well_above_the_still_threshold(samples):
    for key in ROBOTS:
        res = run_gate_on(GATE_ID, samples.path(key))
        assert res.metrics["video_max_changed_fraction"] > 5 * CONFIG.gate_c.static_max_changed_fraction, key
