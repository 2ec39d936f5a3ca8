"""Object streams as task evidence: reading them safely and describing what the object did.

``read_tracks`` loads every ``objects/<name>/{timestamps_ms, pose}`` pair that is usable
(strictly increasing times, (T, 7) finite poses with unit quaternions) and notes why any
other was not — a malformed stream is evidence left out, never a crash. ``describe``
turns one track into the facts task predicates and ``S_object`` read: where the object
rested at the start and at the end, when it was in transit (away from both rest poses by
more than the rest radius), which frames were grasped (``contacts/<link>`` streams, else
the transit frames) and, with the submitted joints, how close an end-effector link was
and how rigidly the object moved with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kibotos.bundle.reader import BundleView
from kibotos.media.poses import invert, pose7_to_matrix

REST_FRAMES = 5  # frames averaged (median) for the starting and final rest positions


@dataclass(frozen=True)
class Track:
    """One object stream: kinematic-clock times (ms) and poses in the robot base frame."""

    name: str
    t_ms: np.ndarray  # (N,)
    pose: np.ndarray  # (N, 4, 4)
    grasp_link: str | None  # declared in the pose array's attributes, if any

    @property
    def pos(self) -> np.ndarray:
        return self.pose[:, :3, 3]


def read_tracks(view: BundleView) -> tuple[list[Track], list[dict]]:
    """Every usable object stream, and ``{source, unused}`` notes on the others."""
    names = sorted({info.path.split("/")[1] for info in view.arrays()
                    if info.path.startswith("objects/") and info.path.count("/") == 2
                    and info.path.endswith("/pose")})
    tracks, notes = [], []
    for name in names:
        base = f"objects/{name}"
        if not view.has(f"{base}/timestamps_ms"):
            notes.append({"source": base, "unused": "no timestamps_ms"})
            continue
        t = view.read(f"{base}/timestamps_ms").astype(np.float64)
        pose = view.read(f"{base}/pose").astype(np.float64)
        if t.ndim != 1 or pose.shape != (t.shape[0], 7) or t.shape[0] < 2 * REST_FRAMES:
            notes.append({"source": base, "unused": f"shapes {list(t.shape)} / {list(pose.shape)}, "
                                                    f"expected (T,) / (T, 7) with T >= {2 * REST_FRAMES}"})
            continue
        norms = np.linalg.norm(pose[:, 3:], axis=1)
        if not (np.all(np.isfinite(t)) and np.all(np.diff(t) > 0) and np.all(np.isfinite(pose))
                and np.all((norms > 0.5) & (norms < 2.0))):
            notes.append({"source": base, "unused": "timestamps not increasing or poses not finite unit quaternions"})
            continue
        grasp = view.node_attrs(f"{base}/pose").get("grasp")
        link = grasp.get("link") if isinstance(grasp, dict) and isinstance(grasp.get("link"), str) else None
        tracks.append(Track(name, t, pose7_to_matrix(pose), link))
    return tracks, notes


def contact_mask(view: BundleView, track: Track, kin_t: np.ndarray) -> tuple[np.ndarray | None, list[str]]:
    """Union of the ``contacts/<link>`` streams on the track's frames (None: no usable
    stream), and the links they name. A stream is on the object's or the kinematics'
    timestamps (nearest kinematic sample); others are ignored."""
    mask, links = None, []
    for info in view.arrays():
        parts = info.path.split("/")
        if len(parts) != 2 or parts[0] != "contacts" or len(info.shape) != 1:
            continue
        c = view.read(info.path)
        if not (np.issubdtype(c.dtype, np.number) or c.dtype == bool) or not np.all(np.isfinite(c)):
            continue
        if c.shape[0] == track.t_ms.shape[0]:
            on = c.astype(bool)
        elif c.shape[0] == kin_t.shape[0] and kin_t.shape[0] >= 2:
            after = np.clip(np.searchsorted(kin_t, track.t_ms), 1, len(kin_t) - 1)
            nearest = np.where(track.t_ms - kin_t[after - 1] <= kin_t[after] - track.t_ms, after - 1, after)
            on = c.astype(bool)[nearest]
        else:
            continue
        mask = on if mask is None else (mask | on)
        links.append(parts[1])
    return mask, links


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[(first, last), ...]`` index ranges (inclusive) of the True stretches of ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def longest_run_ms(t_ms: np.ndarray, mask: np.ndarray) -> tuple[float, int | None]:
    """Duration (ms, first to last frame) of the longest True stretch, and its first index."""
    best, start = 0.0, None
    for a, b in runs(mask):
        if start is None or t_ms[b] - t_ms[a] > best:
            best, start = float(t_ms[b] - t_ms[a]), int(a)
    return best, start


@dataclass(frozen=True)
class Motion:
    """What one object did (positions in the robot base frame, times in kinematic ms)."""

    start: np.ndarray  # (3,) starting rest position
    end: np.ndarray  # (3,) final rest position
    in_transit: np.ndarray  # (N,) away from both rest positions by more than the rest radius
    place_index: int | None  # first frame of the final rest (None: never in transit)
    max_displacement_m: float  # farthest from the start, over the whole stream
    tracking_noise_m: float  # RMS distance from the rest position over the rest frames
    max_step_speed_m_s: float  # largest frame-to-frame speed


def motion(track: Track, rest_radius_m: float) -> Motion:
    pos = track.pos
    start = np.median(pos[:REST_FRAMES], axis=0)
    end = np.median(pos[-REST_FRAMES:], axis=0)
    d_start = np.linalg.norm(pos - start, axis=1)
    d_end = np.linalg.norm(pos - end, axis=1)
    transit = (d_start > rest_radius_m) & (d_end > rest_radius_m)
    away = np.flatnonzero(d_end > rest_radius_m)
    place = int(away[-1]) + 1 if transit.any() and away.size and away[-1] + 1 < len(pos) else None
    first_departure = int(np.argmax(d_start > rest_radius_m)) if (d_start > rest_radius_m).any() else len(pos)
    rest_dev = np.concatenate([d_start[:first_departure], d_end[place:] if place is not None else []])
    speeds = np.linalg.norm(np.diff(pos, axis=0), axis=1) / (np.diff(track.t_ms) / 1000.0)
    return Motion(start, end, transit, place, float(d_start.max()),
                  float(np.sqrt(np.mean(rest_dev**2))) if rest_dev.size else float("nan"), float(speeds.max()))


@dataclass(frozen=True)
class Attachment:
    """How an end-effector link relates to the object over a set of frames."""

    link: str
    near_fraction: float  # frames with the link within ``near_m`` of the object
    median_distance_m: float
    rigid_drift_m: float  # p95 distance of the object from its median position in the link frame


def attachment(track: Track, frames: np.ndarray, link_poses: dict[str, np.ndarray], near_m: float
               ) -> Attachment | None:
    """The end-effector link closest to the object over ``frames`` (bool (N,)), described;
    ``link_poses[link]`` are (N, 4, 4) poses at the track's times. None: no frame or link."""
    if not frames.any() or not link_poses:
        return None
    best = None
    for link, poses in sorted(link_poses.items()):
        rel = (invert(poses[frames]) @ track.pose[frames])[:, :3, 3]
        dist = np.linalg.norm(rel, axis=1)
        drift = np.linalg.norm(rel - np.median(rel, axis=0), axis=1)
        cand = Attachment(link, float(np.mean(dist <= near_m)), float(np.median(dist)),
                          float(np.percentile(drift, 95)))
        if best is None or cand.median_distance_m < best.median_distance_m:
            best = cand
    return best
