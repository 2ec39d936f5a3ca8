"""Fingerprint parts without a database: trajectory and motion signatures, masking, config."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from kibotos.errors import ConfigError
from kibotos.novelty.config import DEFAULT_PATH, load_novelty_config, parse_novelty_config
from kibotos.novelty.fingerprint import frame_hashes, mask_box, motion_signature, trajectory_fingerprint, variant_names
from kibotos.robots import get_robot
from kibotos.synthetic import perturb
from kibotos.synthetic.samples import make_episode
from tests.fixtures.episodes import PANDA
from tests.kibotos.novelty.reference import motion_corr, trajectory_corr

CFG = load_novelty_config().novelty
T = CFG.trajectory
TRAJ_LAG = round(T.max_lag_s * T.rate_hz)


def fp(ts, q):
    return trajectory_fingerprint(ts, q, T.rate_hz, T.max_samples, T.min_samples, T.min_motion)


def corr(a, b):
    return trajectory_corr(a, b, TRAJ_LAG, T.min_samples, T.min_overlap_fraction)


@pytest.fixture(scope="module")
def episodes():
    robot = get_robot(*PANDA)
    return [make_episode(robot, seed=s, with_object=False) for s in (40, 41, 42, 43)]


def test_trajectory_fingerprint_is_joint_major_centred_unit_rms(episodes):
    ep = episodes[0]
    f = fp(ep.timestamps_ms, ep.joint_pos)
    assert f.dtype == np.float32 and f.shape == (ep.joint_pos.shape[1], 40)  # 8 s at 5 Hz
    np.testing.assert_allclose(f.mean(axis=1), 0.0, atol=1e-5)
    assert np.sqrt((f.astype(np.float64) ** 2).mean()) == pytest.approx(1.0, abs=1e-5)


def test_trajectory_fingerprint_is_empty_when_nothing_moves_or_data_is_bad(episodes):
    ep = episodes[0]
    still = np.repeat(ep.joint_pos[:1], len(ep.joint_pos), axis=0)
    assert fp(ep.timestamps_ms, still).size == 0
    assert fp(ep.timestamps_ms[:5], ep.joint_pos[:5]).size == 0  # shorter than min_samples bins
    assert fp(ep.timestamps_ms, ep.joint_pos[:, :, None]).size == 0  # wrong rank
    nan = ep.joint_pos.copy()
    nan[10:20, 2] = np.nan
    assert fp(ep.timestamps_ms, nan).shape == fp(ep.timestamps_ms, ep.joint_pos).shape  # NaN rows dropped


@pytest.mark.parametrize("kind", ["shift", "delay", "noise", "trim", "resample"])
def test_trajectory_copies_correlate_above_the_ramp(episodes, kind):
    ep = episodes[0]
    ts, q = ep.timestamps_ms, ep.joint_pos
    if kind == "shift":
        ts, q = perturb.shifted_trajectory(ep, 1300)
    elif kind == "delay":
        ts = ts + 4321  # kinematics starting later on the clock
    elif kind == "noise":
        q = perturb.noisy_trajectory(ep, 0.03)
    elif kind == "trim":
        ts, q = ts[60:-40], q[60:-40]
    elif kind == "resample":  # 50 Hz -> 30 Hz
        t30 = np.arange(ts[0], ts[-1], 1000 / 30).astype(np.int64)
        q = np.stack([np.interp(t30, ts, q[:, j]) for j in range(q.shape[1])], axis=1)
        ts = t30
    assert corr(fp(ts, q), fp(ep.timestamps_ms, ep.joint_pos)) >= T.corr_hi


def test_different_trajectories_correlate_below_the_ramp(episodes):
    fps = [fp(ep.timestamps_ms, ep.joint_pos) for ep in episodes]
    for i in range(len(fps)):
        for j in range(i + 1, len(fps)):
            assert corr(fps[i], fps[j]) < T.corr_lo, (i, j)


def test_motion_signature_variants_and_invariances(episodes):
    ep = episodes[0]
    grey = perturb.decode_all(ep.video_mp4)[::8, :, :, 1]  # any channel will do here
    mc = CFG.motion
    sig = motion_signature(grey, mc.width, mc.height, mc.crop_variants)
    assert [s.shape for s in sig] == [(len(grey), mc.width * mc.height)] * len(variant_names(mc.crop_variants))
    assert all(s.dtype == np.int8 for s in sig)
    # centred in time: what moves, not the scene
    assert np.abs(sig[0].astype(np.float64).mean(axis=0)).max() <= 0.5 + 1e-9
    # the mirror variant is the signature of the mirrored frames
    flipped = motion_signature(np.ascontiguousarray(grey[:, :, ::-1]), mc.width, mc.height, ())[0]
    assert np.abs(flipped.astype(int) - sig[1].astype(int)).max() <= 1
    # a brightness offset cancels exactly (away from clipping)
    brighter = motion_signature(np.clip(grey.astype(int) + 20, 0, 255).astype(np.uint8), mc.width, mc.height, ())[0]
    assert motion_corr(brighter, sig[0], 0, 1, 1.0) > 0.999


def test_motion_signature_separates_episodes_and_matches_trims(episodes):
    mc = CFG.motion
    lag = round(mc.max_lag_s * CFG.frames.sample_fps)

    def sig(ep, start=0):
        grey = perturb.decode_all(ep.video_mp4)[start::8, :, :, 1]
        return motion_signature(grey, mc.width, mc.height, ())[0]

    sigs = [sig(ep) for ep in episodes]
    for i in range(len(sigs)):
        for j in range(i + 1, len(sigs)):
            assert motion_corr(sigs[i], sigs[j], lag, mc.min_overlap_samples, mc.min_overlap_fraction) < mc.corr_lo
    trimmed = sig(episodes[0], start=40)  # the first 1.3 s cut off, a different sampling phase too
    assert motion_corr(trimmed, sigs[0], lag, mc.min_overlap_samples, mc.min_overlap_fraction) > mc.corr_hi


def test_mask_box_fills_the_box_with_the_median():
    img = np.full((100, 200), 50, np.uint8)
    img[0:10, 150:200] = 255
    out = mask_box(img, (0.75, 0.0, 0.25, 0.1))
    assert (out == 50).all() and (img[0:10, 150:200] == 255).all()  # the input is left alone
    rgb = np.dstack([img, img, img])
    assert (mask_box(rgb, (0.75, 0.0, 0.25, 0.1)) == 50).all()
    assert mask_box(img, None) is img


def test_frame_hashes_include_the_mirror_image():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (3, 60, 80), dtype=np.uint8)
    hashes, mirrored = frame_hashes(grey)
    assert len(hashes) == len(mirrored) == 3
    again, _ = frame_hashes(np.ascontiguousarray(grey[:, :, ::-1]))
    assert again == mirrored


def raw_config():
    return yaml.safe_load(DEFAULT_PATH.read_text())


def test_packaged_config_is_versioned_and_valid():
    cfg = load_novelty_config()
    assert cfg.config_version.startswith("novelty-")
    assert cfg.novelty.penalties.same_miner > cfg.novelty.penalties.cross_miner


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["novelty"]["motion"].update(corr_lo=0.95, corr_hi=0.9), "motion.corr"),
    (lambda r: r["novelty"]["trajectory"].update(corr_lo=0.99), "trajectory.corr"),
    (lambda r: r["novelty"]["artifacts"]["weights"].pop("static_overlay"), "static_overlay"),
    (lambda r: r["novelty"]["motion"].update(crop_variants=[1.2]), "crop_variants"),
    (lambda r: r["novelty"]["penalties"].update(same_miner=1.5), "same_miner"),
    (lambda r: r.pop("config_version"), "config_version"),
])
def test_invalid_config_is_refused(edit, message):
    raw = copy.deepcopy(raw_config())
    edit(raw)
    with pytest.raises(ConfigError, match=message):
        parse_novelty_config(raw)
