"""Keyframe selection: the three strategies, sync alignment, deduplication, bounds."""

from __future__ import annotations

import time

import numpy as np
import pytest

from gpu_consumers.keyframes import STRATEGIES, joint_speed, moving_mask, phase_boundaries, select_keyframes

FPS = 30.0
# (start_ms, end_ms, amplitude): three min-jerk moves separated by pauses
MOVES = ((1000.0, 2500.0, 0.6), (3500.0, 5000.0, 1.0), (6500.0, 8000.0, 0.4))
PEAKS_MS = [(s + e) / 2 for s, e, _ in MOVES]  # a min-jerk move is fastest half-way
TRANSITIONS_MS = [x for s, e, _ in MOVES for x in (s, e)]


def trajectory(rate_hz: float = 100.0, duration_ms: float = 10_000.0, moves=MOVES, joints: int = 7,
               noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(0.0, duration_ms + 1e-9, 1000.0 / rate_hz)
    direction = np.linspace(1.0, 0.3, joints)
    q = np.zeros((t.size, joints))
    current = np.zeros(joints)
    starts = [m[0] for m in moves[1:]] + [np.inf]
    for (start, end, amp), next_start in zip(moves, starts):  # a move, then the hold after it
        a, b, c = np.searchsorted(t, [start, end, next_start])
        tau = ((t[a:b] - start) / (end - start))[:, None]
        target = current + amp * direction
        q[a:b] = current + (target - current) * (10 * tau**3 - 15 * tau**4 + 6 * tau**5)
        q[b:c] = target
        current = target
    q += np.random.default_rng(seed).normal(0.0, noise, q.shape)
    return t.astype(np.int64), q.astype(np.float32)


def frames_of(keyframes, strategy: str) -> np.ndarray:
    return np.array([k.video_frame_index for k in keyframes if k.strategy == strategy])


def frame_at(kin_ms: float, offset_ms: float) -> int:
    return int(np.floor((kin_ms + offset_ms) * FPS / 1000.0 + 0.5))


def test_uniform_spacing_over_the_overlap():
    ts, q = trajectory()
    kfs = select_keyframes(ts, q, FPS, 400, 0.0, n_uniform=6, n_peaks=0, phase_boundaries_ms=[])
    assert [k.strategy for k in kfs] == ["uniform"] * 6
    idx = frames_of(kfs, "uniform")
    assert idx[0] == 0 and idx[-1] == 300  # the kinematics end at 10 s = frame 300
    assert np.all(np.abs(np.diff(idx) - 60) <= 1)


@pytest.mark.parametrize("noise", [0.0, 0.001])
def test_motion_peaks_at_the_speed_maxima(noise):
    ts, q = trajectory(rate_hz=50.0, noise=noise)
    kfs = select_keyframes(ts, q, FPS, 400, 0.0, n_uniform=0, n_peaks=3, phase_boundaries_ms=[])
    peaks = frames_of(kfs, "motion_peak")
    expected = [frame_at(p, 0.0) for p in PEAKS_MS]
    assert len(peaks) == 3
    assert np.all(np.abs(np.sort(peaks) - expected) <= 2), (peaks, expected)


def test_motion_peaks_keep_their_minimum_gap():
    ts, q = trajectory()
    kfs = select_keyframes(ts, q, FPS, 400, 0.0, n_uniform=0, n_peaks=10, phase_boundaries_ms=[],
                           min_peak_gap_ms=500.0)
    peaks = np.sort(frames_of(kfs, "motion_peak"))
    # one maximum per move: a smooth move has no second peak 500 ms away from its first
    assert len(peaks) == 3
    assert np.all(np.diff(peaks) * 1000.0 / FPS >= 500.0)


@pytest.mark.parametrize("noise", [0.0, 0.001])
def test_detected_phase_boundaries_at_move_pause_transitions(noise):
    ts, q = trajectory(rate_hz=50.0, noise=noise)
    found = phase_boundaries(ts, moving_mask(ts, joint_speed(ts, q)))
    assert len(found) == len(TRANSITIONS_MS)
    # thresholds cut a min-jerk move's slow start and end: within 150 ms of the truth
    assert np.all(np.abs(found - TRANSITIONS_MS) <= 150.0), found
    kfs = select_keyframes(ts, q, FPS, 400, 0.0, n_uniform=0, n_peaks=0)
    assert np.array_equal(frames_of(kfs, "phase_boundary"), [frame_at(x, 0.0) for x in found])


def test_explicit_phase_boundaries_replace_detection():
    ts, q = trajectory()
    kfs = select_keyframes(ts, q, FPS, 400, 100.0, n_uniform=0, n_peaks=0,
                           phase_boundaries_ms=[2000.0, 6000.0, 50_000.0])  # the last is past the end
    assert frames_of(kfs, "phase_boundary").tolist() == [frame_at(2000.0, 100.0), frame_at(6000.0, 100.0)]


def test_a_still_trajectory_has_no_peaks_and_no_boundaries():
    ts, q = trajectory(moves=(), noise=0.001)
    kfs = select_keyframes(ts, q, FPS, 400, 0.0)
    assert {k.strategy for k in kfs} == {"uniform"}


def test_sync_offset_shifts_every_index_by_offset_times_fps():
    ts, q = trajectory(noise=0.001)
    offset_ms = 200.0  # 6 frames at 30 fps; the 12 s video covers the kinematics either way
    base = select_keyframes(ts, q, FPS, 360, 0.0)
    shifted = select_keyframes(ts, q, FPS, 360, offset_ms)
    assert [k.strategy for k in base] == [k.strategy for k in shifted]
    assert [k.video_frame_index + 6 for k in base] == [k.video_frame_index for k in shifted]
    # the kinematic time of a frame is the frame's video time minus the offset
    for k in shifted:
        assert k.kin_time_ms == pytest.approx(k.video_frame_index * 1000.0 / FPS - offset_ms, abs=1e-3)


@pytest.mark.parametrize("offset_ms", [-1500.0, -10.0, 0.0, 250.0, 3000.0])
def test_indices_stay_inside_the_video_and_the_overlap(offset_ms):
    ts, q = trajectory(noise=0.001)
    frame_count = 250  # 8.3 s of video for 10 s of kinematics
    kfs = select_keyframes(ts, q, FPS, frame_count, offset_ms)
    idx = np.array([k.video_frame_index for k in kfs])
    assert idx.size > 0
    assert idx.min() >= 0 and idx.max() < frame_count
    kin = np.array([k.kin_time_ms for k in kfs])
    assert kin.min() >= ts[0] - 1e-6 and kin.max() <= ts[-1] + 1e-6


def test_deduplicated_sorted_and_most_specific_strategy_wins():
    ts, q = trajectory()
    # a boundary placed exactly on a uniform frame and on a motion peak
    kfs = select_keyframes(ts, q, FPS, 400, 0.0, n_uniform=6, n_peaks=3,
                           phase_boundaries_ms=[2000.0, PEAKS_MS[1]])
    idx = [k.video_frame_index for k in kfs]
    assert idx == sorted(set(idx))
    by_frame = {k.video_frame_index: k.strategy for k in kfs}
    assert by_frame[frame_at(2000.0, 0.0)] == "phase_boundary"
    assert by_frame[frame_at(PEAKS_MS[1], 0.0)] == "phase_boundary"
    assert {k.strategy for k in kfs} <= set(STRATEGIES)


def test_no_overlap_no_keyframes():
    ts, q = trajectory()
    assert select_keyframes(ts, q, FPS, 30, 5000.0) == []  # 1 s of video, kinematics start at 5 s
    assert select_keyframes(ts, q, FPS, 0, 0.0) == []


def test_selection_is_vectorized_over_samples():
    # one hour at 100 Hz, a move every 3 s: 360k samples, 1200 motions
    moves = [(s, s + 1500.0, 0.5) for s in np.arange(1000.0, 3_590_000.0, 3000.0)]
    ts, q = trajectory(duration_ms=3_600_000.0, moves=moves, noise=0.001)
    t0 = time.perf_counter()
    kfs = select_keyframes(ts, q, FPS, 108_001, 0.0)
    assert time.perf_counter() - t0 < 5.0  # ~0.2 s on an idle core
    assert len(frames_of(kfs, "phase_boundary")) == 8  # capped, evenly spread
