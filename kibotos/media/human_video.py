"""Human-video bundles for gate F (tests and ``kibotos bench``): real photos of people
shipped inside installed packages, filmed by a virtual camera that pans and zooms over
them, encoded as H.264.

Photos: matplotlib's ``grace_hopper.jpg`` (always installed: MediaPipe depends on
matplotlib) and, when the wheel that ships it is installed, scikit-image's
``astronaut.png`` (a dependency of genesis-world). Both are head-and-shoulders portraits.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import uuid
from pathlib import Path

import cv2
import numpy as np

from kibotos.bundle import write_bundle
from kibotos.bundle.manifest import SCHEMA_VERSION
from kibotos.media.video import encode_mp4
from kibotos.robots import get_robot

PANDA = ("franka_panda", "fer-v1")

WIDTH, HEIGHT = 384, 448  # portrait frames, like the photos
FOCAL = 1.2 * WIDTH  # a ~50 degree horizontal field of view


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def person_photos() -> dict[str, np.ndarray]:
    """``{name: (H, W, 3) uint8 RGB}`` of the person photos installed here."""
    import matplotlib.cbook

    photos = {"grace_hopper": _read_rgb(Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))}
    spec = importlib.util.find_spec("skimage")
    if spec is not None and spec.submodule_search_locations:
        astronaut = Path(list(spec.submodule_search_locations)[0]) / "data" / "astronaut.png"
        if astronaut.is_file():
            photos["astronaut"] = _read_rgb(astronaut)
    return photos


def camera_motion_video(photo: np.ndarray, n_frames: int, *, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """(n, height, width, 3) frames of a camera panning and zooming over ``photo``: a crop
    window of 80-95 % of the photo height drifting sideways and vertically, smoothly."""
    h, w = photo.shape[:2]
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for i in range(n_frames):
        phase = 2 * np.pi * i / max(n_frames, 1)
        zoom = 0.875 + 0.075 * np.sin(phase)
        ch = int(h * zoom)
        cw = min(w, int(ch * width / height))
        x0 = int(np.clip((w - cw) / 2 * (1 + 0.8 * np.sin(1.3 * phase)), 0, w - cw))
        y0 = int(np.clip((h - ch) / 2 * (1 + 0.8 * np.cos(phase)), 0, h - ch))
        frames[i] = cv2.resize(photo[y0:y0 + ch, x0:x0 + cw], (width, height), interpolation=cv2.INTER_AREA)
    return frames


def scramble_blocks(frames: np.ndarray, block: int = 16, seed: int = 0) -> np.ndarray:
    """The same frames with their ``block``-pixel tiles shuffled (one fixed permutation):
    every pixel value and the camera motion survive, the person does not."""
    n, h, w, c = frames.shape
    gh, gw = h // block, w // block
    tiles = frames[:, : gh * block, : gw * block].reshape(n, gh, block, gw, block, c).transpose(0, 1, 3, 2, 4, 5)
    tiles = tiles.reshape(n, gh * gw, block, block, c)
    perm = np.random.default_rng(seed).permutation(gh * gw)
    out = tiles[:, perm].reshape(n, gh, gw, block, block, c).transpose(0, 1, 3, 2, 4, 5)
    result = frames.copy()
    result[:, : gh * block, : gw * block] = out.reshape(n, gh * block, gw * block, c)
    return result


def human_video_bundle(path: Path, frames: np.ndarray, fps: float, *, subject: str = "human") -> Path:
    """A valid bundle (Panda kinematics at 50 Hz spanning the video) whose primary video is
    ``frames``, encoded as H.264, with a camera matching the frames (``FOCAL``)."""
    robot = get_robot(*PANDA)
    n, h, w, _ = frames.shape
    duration_ms = (n - 1) * 1000.0 / fps
    ts = np.arange(0, duration_ms + 1, 20, dtype=np.int64)
    t = ts[:, None] / 1000.0
    q = (robot.home_qpos + 0.05 * np.sin(2 * np.pi * 0.5 * t + np.arange(robot.dof))).astype(np.float32)
    intrinsics = {"fx": FOCAL * w / WIDTH, "fy": FOCAL * w / WIDTH, "cx": w / 2, "cy": h / 2, "width": w, "height": h}
    manifest = {
        "schema_version": SCHEMA_VERSION, "bundle_version": "1.0.0", "submission_id": str(uuid.uuid4()),
        "episode_id": str(uuid.uuid4()), "miner_id": "miner-human-video",
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "robot_model_id": robot.model_id, "robot_model_revision": robot.revision,
        "joint_names": list(robot.joint_names), "sampling_rate_hz": 50.0, "time_base": "relative",
        "time_units": "ms", "units": {"joint_pos": "rad", "joint_vel": "rad/s"},
        "camera": {"primary": {"intrinsics": intrinsics, "extrinsics": np.eye(4).tolist()}},
        "video": {"primary": {"fps": fps, "frame_count": n, "subject": subject}},
        "sync": {"sync_offset_ms_claimed": 0.0},
    }
    return write_bundle(path, manifest, timestamps_ms=ts, joint_pos=q, video_mp4=encode_mp4(frames, fps))
