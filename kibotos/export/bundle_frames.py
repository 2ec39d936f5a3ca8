"""What an exporter reads from a submission bundle, once per episode: kinematics at the
video's frame times, the mp4 as stored, the object pose and contact streams."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kibotos.bundle import open_bundle
from kibotos.bundle.reader import JOINT_POS, JOINT_VEL, TIMESTAMPS, VIDEO_ENCODED
from kibotos.errors import KibotosError


class ExportError(KibotosError):
    reason_code = "export_failed"


@dataclass
class BundleEpisode:
    robot_model_id: str
    joint_names: list[str]
    task: str
    fps: float
    timestamps_ms: np.ndarray         # (T,) kinematic clock
    joint_pos: np.ndarray             # (T, J) float64
    joint_vel: np.ndarray | None      # (T, J)
    mp4: bytes | None
    frame_count: int
    sync_offset_ms: float
    object_pose: np.ndarray | None    # (T, 7) on the kinematic clock, first object
    object_name: str | None
    contacts: dict[str, np.ndarray]   # link -> (T,) uint8 on the kinematic clock

    def frame_times_kin(self) -> np.ndarray:
        """The kinematic time of each video frame (``t_kin = t_video - sync offset + t0``)."""
        return self.timestamps_ms[0] + np.arange(self.frame_count) * 1000.0 / self.fps - self.sync_offset_ms


def interp_rows(t: np.ndarray, ts: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Columns of ``x`` (sampled at ``ts``) linearly interpolated at ``t``, held at the ends."""
    return np.stack([np.interp(t, ts, x[:, j]) for j in range(x.shape[1])], axis=1) if x.shape[1] else \
        np.zeros((len(t), 0))


def read_bundle(path: Path) -> BundleEpisode:
    try:
        with open_bundle(path) as view:
            m = view.manifest
            ts = view.read(TIMESTAMPS).astype(np.float64)
            q = view.read(JOINT_POS).astype(np.float64)
            vel = view.read(JOINT_VEL).astype(np.float64) if view.has(JOINT_VEL) else None
            mp4 = view.read(VIDEO_ENCODED).tobytes() if view.has(VIDEO_ENCODED) else None
            paths = [a.path for a in view.arrays()]
            obj_name, obj = None, None
            for p in sorted(paths):
                if p.startswith("objects/") and p.endswith("/pose"):
                    obj_name = p.split("/")[1]
                    ots = view.read(f"objects/{obj_name}/timestamps_ms").astype(np.float64)
                    obj = interp_rows(ts, ots, view.read(p).astype(np.float64))
                    break
            contacts = {}
            for p in sorted(paths):
                if p.startswith("contacts/"):
                    c = view.read(p).astype(np.float64)
                    if len(c) != len(ts) and obj_name is not None:
                        ots = view.read(f"objects/{obj_name}/timestamps_ms").astype(np.float64)
                        c = np.interp(ts, ots, c) if len(c) == len(ots) else np.zeros(len(ts))
                    elif len(c) != len(ts):
                        c = np.zeros(len(ts))
                    contacts[p.split("/", 1)[1]] = (c >= 0.5).astype(np.uint8)
            video = m.video["primary"]
            return BundleEpisode(m.robot_model_id, list(m.joint_names), m.task.task_id if m.task else "demonstration",
                                 float(video.fps), ts, q, vel, mp4, int(video.frame_count),
                                 float(m.sync.sync_offset_ms_claimed), obj, obj_name, contacts)
    except KibotosError:
        raise
    except Exception as exc:  # a bundle that passed the gates should read; say which one did not
        raise ExportError(f"cannot read bundle {path}: {type(exc).__name__}: {exc}") from exc
