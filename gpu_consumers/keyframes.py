"""Keyframe selection for simulator playback (design §6, "Keyframe Selection Strategy").

Three strategies pick the video frames at which the submitted trajectory is replayed in
simulation and compared with the real video:

* ``uniform`` — evenly spaced over the overlap of video and kinematics (baseline coverage);
* ``motion_peak`` — local maxima of the joint speed, at least ``min_peak_gap_ms`` apart,
  strongest first (high-activity moments);
* ``phase_boundary`` — task-phase boundaries given by the caller (the playback job passes
  the transitions of the bundle's contact streams and the declared task's phase events,
  ``gpu_consumers.playback.task_phase_boundaries``), or, when it has none, the transitions
  between moving and still segments of the joint speed (a grasp or a release usually
  happens where the arm stops or starts).

The counts (``n_uniform``, ``n_peaks``, ``min_peak_gap_ms``, ``max_phase_boundaries``) come
from the versioned gate config (``keyframes`` in ``kibotos/config/gates.yaml``).

Every keyframe is a video frame index: kinematic time ``t`` maps to video time
``(t - ts_ms[0]) + sync_offset_ms`` (the bundle's sync convention), and frame ``i`` shows
video time ``i * 1000 / fps``. Frames are kept inside the video and inside the span both
streams cover, deduplicated (a frame chosen by several strategies keeps the most specific
one: phase boundary, then motion peak, then uniform) and sorted. The chosen indices are
stored in the verification report for auditability.

Everything is vectorized over samples; the only loops run over the few keyframes chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from kibotos.config.gates import KeyframeConfig, load_config

Strategy = Literal["uniform", "motion_peak", "phase_boundary"]
# dedup priority: the first strategy listed wins a frame chosen by several
STRATEGIES: tuple[Strategy, ...] = ("phase_boundary", "motion_peak", "uniform")


@dataclass(frozen=True)
class Keyframe:
    """One video frame to replay. ``kin_time_ms`` is the frame's time on the kinematic
    clock (the time base of ``ts_ms``): interpolate the joints there."""

    video_frame_index: int
    kin_time_ms: float
    strategy: Strategy


@dataclass(frozen=True)
class MotionParams:
    """How joint speed is turned into motion peaks and move/pause transitions.

    ``smooth_ms``: moving-average window of the speed (sensor noise differentiates badly).
    A segment is *moving* when its speed rises above ``high`` and lasts until it falls
    below ``low`` (hysteresis), with ``low = max(min_speed / 2, rel_low * p95, 2 * p5)``
    and ``high = max(min_speed, rel_high * p95, 2 * low)``, ``p5``/``p95`` percentiles of
    the speed (``p5`` stands for the noise floor: most demonstrations pause).
    Motions shorter than ``min_motion_ms`` are noise; pauses shorter than ``min_pause_ms``
    inside a motion are not phase boundaries.
    """

    smooth_ms: float = 100.0
    min_speed: float = 0.05  # rad/s (norm over joints); below it the robot is still
    rel_high: float = 0.2
    rel_low: float = 0.05
    min_pause_ms: float = 200.0
    min_motion_ms: float = 100.0


def joint_speed(ts_ms: np.ndarray, joint_pos: np.ndarray, smooth_ms: float = 100.0) -> np.ndarray:
    """(T,) joint-space speed ``|dq/dt|`` in rad/s, the velocity vector averaged over
    ``smooth_ms`` before its norm is taken (the norm of noise is biased upwards; its
    average is not). Non-finite positions count as 0."""
    t = np.asarray(ts_ms, dtype=np.float64)
    q = np.nan_to_num(np.asarray(joint_pos, dtype=np.float64).reshape(t.size, -1))
    if t.size < 2:
        return np.zeros(t.size)
    vel = np.asarray(np.gradient(q, t / 1000.0, axis=0))  # one axis: one array
    dt = float(np.median(np.diff(t)))
    width = min(int(round(smooth_ms / dt)) if dt > 0 else 1, t.size)
    if width > 1:
        padded = np.pad(vel, ((width // 2, width - 1 - width // 2), (0, 0)), mode="edge")
        csum = np.vstack([np.zeros((1, vel.shape[1])), np.cumsum(padded, axis=0)])
        vel = (csum[width:] - csum[:-width]) / width
    return np.nan_to_num(np.linalg.norm(vel, axis=1))


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of the runs of equal values of ``mask``."""
    change = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    return np.r_[0, change], np.r_[change, mask.size]


def moving_mask(ts_ms: np.ndarray, speed: np.ndarray, params: MotionParams = MotionParams()) -> np.ndarray:
    """(T,) bool: samples inside a motion segment (hysteresis on the speed, short pauses merged)."""
    if speed.size == 0:
        return np.zeros(0, bool)
    p5, p95 = (float(v) for v in np.percentile(speed, [5, 95]))
    low = max(0.5 * params.min_speed, params.rel_low * p95, 2.0 * p5)
    high = max(params.min_speed, params.rel_high * p95, 2.0 * low)
    above = speed > low
    starts, ends = _runs(above)
    run_id = np.repeat(np.arange(starts.size), ends - starts)
    has_high = np.maximum.reduceat(speed > high, starts)
    moving = above & has_high[run_id]
    t = np.asarray(ts_ms, dtype=np.float64)
    # blips (edge effects of the derivative, glitches) are not motions ...
    moving &= ~_short_runs(t, moving, True, params.min_motion_ms, inner_only=False)
    # ... and short pauses between two motions belong to the motion
    return moving | _short_runs(t, moving, False, params.min_pause_ms, inner_only=True)


def _short_runs(t: np.ndarray, mask: np.ndarray, value: bool, min_ms: float, inner_only: bool) -> np.ndarray:
    """(T,) bool: samples of the runs of ``mask == value`` lasting less than ``min_ms``."""
    starts, ends = _runs(mask)
    duration = t[np.minimum(ends, mask.size - 1)] - t[np.maximum(starts - 1, 0)]
    short = (mask[starts] == value) & (duration < min_ms)
    if inner_only:
        short &= (starts > 0) & (ends < mask.size)
    return short[np.repeat(np.arange(starts.size), ends - starts)]


def phase_boundaries(ts_ms: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Kinematic times (time base of ``ts_ms``) where ``moving`` (``moving_mask``) changes:
    the robot starts or stops moving."""
    change = np.flatnonzero(moving[1:] != moving[:-1]) + 1
    t = np.asarray(ts_ms, dtype=np.float64)
    return (t[change - 1] + t[change]) / 2.0


def motion_peaks(ts_ms: np.ndarray, speed: np.ndarray, moving: np.ndarray, n_peaks: int, min_gap_ms: float,
                 window_ms: tuple[float, float]) -> np.ndarray:
    """Kinematic times of up to ``n_peaks`` local speed maxima inside motion segments and
    inside ``window_ms``, strongest first, at least ``min_gap_ms`` apart."""
    t = np.asarray(ts_ms, dtype=np.float64)
    if speed.size < 3 or n_peaks <= 0:
        return np.zeros(0)
    left = np.r_[-np.inf, speed[:-1]]
    right = np.r_[speed[1:], -np.inf]
    available = (speed >= left) & (speed > right) & moving & (t >= window_ms[0]) & (t <= window_ms[1])
    chosen: list[float] = []
    for _ in range(n_peaks):  # one vectorized pass per peak chosen
        if not available.any():
            break
        i = int(np.argmax(np.where(available, speed, -np.inf)))
        chosen.append(float(t[i]))
        available &= np.abs(t - t[i]) >= min_gap_ms
    return np.asarray(chosen)


def _spread(values: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of ``values`` (sorted), evenly spread, first and last kept."""
    values = np.sort(values)
    if values.size <= limit:
        return values
    return values[np.unique(np.round(np.linspace(0, values.size - 1, limit)).astype(int))]


def select_keyframes(
    ts_ms: np.ndarray,
    joint_pos: np.ndarray,
    video_fps: float,
    video_frame_count: int,
    sync_offset_ms: float,
    *,
    config: KeyframeConfig | None = None,
    n_uniform: int | None = None,
    n_peaks: int | None = None,
    phase_boundaries_ms: np.ndarray | list[float] | None = None,
    min_peak_gap_ms: float | None = None,
    max_phase_boundaries: int | None = None,
    params: MotionParams = MotionParams(),
) -> list[Keyframe]:
    """The keyframes of one episode, sorted by video frame index.

    :param ts_ms: (T,) kinematic timestamps in ms, increasing.
    :param joint_pos: (T, J) joint positions.
    :param video_fps: frame rate of the video; ``video_frame_count`` its number of frames.
    :param sync_offset_ms: video time of kinematic time ``ts_ms[0]`` (``t_video = t_kin + offset``).
    :param config: the counts below (default: the packaged gate config's ``keyframes``);
        an explicit keyword overrides its field.
    :param n_uniform: evenly spaced frames over the overlap, both ends included.
    :param n_peaks: motion-peak frames (fewer when the episode has fewer distinct peaks).
    :param phase_boundaries_ms: task-phase boundaries in the time base of ``ts_ms``; when
        ``None``, move/pause transitions detected from the joint speed are used (at most
        ``max_phase_boundaries``, evenly spread). Boundaries outside the overlap are dropped.
    :param min_peak_gap_ms: minimum kinematic time between two motion peaks.
    :returns: deduplicated keyframes, every index in ``[0, video_frame_count)``; empty when
        video and kinematics do not overlap.
    """
    cfg = config or load_config().keyframes
    n_uniform = cfg.n_uniform if n_uniform is None else n_uniform
    n_peaks = cfg.n_peaks if n_peaks is None else n_peaks
    min_peak_gap_ms = cfg.min_peak_gap_ms if min_peak_gap_ms is None else min_peak_gap_ms
    max_phase_boundaries = cfg.max_phase_boundaries if max_phase_boundaries is None else max_phase_boundaries
    ts = np.asarray(ts_ms, dtype=np.float64).ravel()
    if ts.size == 0 or video_frame_count <= 0 or not video_fps > 0:
        return []
    t0 = float(ts[0])
    frame_ms = 1000.0 / float(video_fps)
    # overlap on the video clock, then as whole frames
    lo_ms = max(0.0, sync_offset_ms)
    hi_ms = min((video_frame_count - 1) * frame_ms, float(ts[-1]) - t0 + sync_offset_ms)
    first = int(np.ceil(lo_ms * video_fps / 1000.0 - 1e-9))
    last = int(np.floor(hi_ms * video_fps / 1000.0 + 1e-9))
    if first > last:
        return []

    def to_frames(kin_ms: np.ndarray) -> np.ndarray:
        # half up (not half even), so that shifting the offset by whole frames shifts every index
        video_ms = np.asarray(kin_ms, dtype=np.float64) - t0 + sync_offset_ms
        return np.floor(video_ms * float(video_fps) / 1000.0 + 0.5).astype(np.int64)

    window = (t0 + first * frame_ms - sync_offset_ms, t0 + last * frame_ms - sync_offset_ms)
    uniform = np.round(np.linspace(first, last, max(n_uniform, 0))).astype(np.int64)
    speed = joint_speed(ts, joint_pos, params.smooth_ms)
    moving = moving_mask(ts, speed, params)
    peaks = to_frames(motion_peaks(ts, speed, moving, n_peaks, min_peak_gap_ms, window))
    if phase_boundaries_ms is None:
        bounds_ms = phase_boundaries(ts, moving)
    else:
        bounds_ms = np.asarray(phase_boundaries_ms, dtype=np.float64).ravel()
    bounds_ms = bounds_ms[np.isfinite(bounds_ms) & (bounds_ms >= window[0] - frame_ms / 2)
                          & (bounds_ms <= window[1] + frame_ms / 2)]
    bounds = to_frames(_spread(bounds_ms, max_phase_boundaries))

    by_strategy = {"phase_boundary": bounds, "motion_peak": peaks, "uniform": uniform}
    frames = np.concatenate([by_strategy[s] for s in STRATEGIES])
    codes = np.concatenate([np.full(by_strategy[s].size, k) for k, s in enumerate(STRATEGIES)])
    frames = np.clip(frames, first, last)
    # np.unique keeps the first occurrence: the highest-priority strategy of each frame
    unique, where = np.unique(frames, return_index=True)
    kin = t0 + unique * frame_ms - sync_offset_ms
    return [Keyframe(int(f), round(float(k), 3), STRATEGIES[int(c)])
            for f, k, c in zip(unique, kin, codes[where])]
