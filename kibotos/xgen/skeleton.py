"""Human keypoints as XGen reads them: MediaPipe's 33 pose landmarks in its *world*
convention, and the keypoints file of ``kibotos xgen run --keypoints FILE``.

MediaPipe world landmarks are metres in a body-centred, camera-aligned frame: origin
midway between the hips, x to the image right, y down the image, z away from the camera
(OpenCV camera axes). They carry no global position. ``mp_world_to_zup`` turns them into
XGen's z-up body frame for a level camera: x = image right, y = away from the camera
(horizontal), z = up.

Keypoints file (``.npz``)::

    keypoints   (T, 33, 3) float  metres, MediaPipe world convention, landmark order
                                  ``MEDIAPIPE_POSE_KEYPOINTS``; NaN where not seen
    fps         ()        float   frames per second
    confidence  (T, 33)   float   optional, [0, 1] (default 1 where finite)
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu_consumers.pose import MEDIAPIPE_POSE_KEYPOINTS
from kibotos.xgen.result import XGenError

NAMES = MEDIAPIPE_POSE_KEYPOINTS
IDX = {name: i for i, name in enumerate(NAMES)}
N_LANDMARKS = len(NAMES)

# MediaPipe world (x right, y down, z away) -> z-up (x right, y away, z up); det = +1
MP_TO_ZUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class HumanMotion:
    """One person's keypoints over time, MediaPipe world convention (see module docstring)."""

    keypoints: np.ndarray  # (T, 33, 3) float64 metres
    confidence: np.ndarray  # (T, 33) float64 in [0, 1]
    fps: float
    source: str = "keypoints"  # "keypoints" (file) or the pose estimator's version

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


def mp_world_to_zup(keypoints: np.ndarray) -> np.ndarray:
    """(..., 3) MediaPipe world -> z-up body frame (level camera)."""
    return np.asarray(keypoints, float) @ MP_TO_ZUP.T


def zup_to_mp_world(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, float) @ MP_TO_ZUP


def validate_motion(keypoints: np.ndarray, confidence: np.ndarray | None, fps: float, *, source: str,
                    min_frames: int = 2) -> HumanMotion:
    """A ``HumanMotion`` from raw arrays, or ``XGenError xgen_keypoints_invalid``."""
    kp = np.asarray(keypoints)
    if kp.ndim != 3 or kp.shape[1:] != (N_LANDMARKS, 3) or kp.shape[0] < min_frames:
        raise XGenError(f"keypoints must be (T>={min_frames}, {N_LANDMARKS}, 3), got {kp.shape}",
                        reason_code="xgen_keypoints_invalid")
    if not np.issubdtype(kp.dtype, np.number):
        raise XGenError(f"keypoints must be numeric, got {kp.dtype}", reason_code="xgen_keypoints_invalid")
    kp = kp.astype(np.float64)
    if not (np.isfinite(fps) and 1.0 <= fps <= 1000.0):
        raise XGenError(f"fps must be in [1, 1000], got {fps}", reason_code="xgen_keypoints_invalid")
    finite = np.isfinite(kp).all(axis=2)
    if np.nanmax(np.abs(np.where(np.isfinite(kp), kp, 0.0))) > 5.0:
        # world landmarks are body-centred: a body spans ~2 m; 5 m means centimetres or pixels
        raise XGenError("keypoints exceed 5 m from the hip centre: not metres in MediaPipe's world convention",
                        reason_code="xgen_keypoints_units")
    if confidence is None:
        conf = finite.astype(np.float64)
    else:
        conf = np.asarray(confidence, dtype=np.float64)
        if conf.shape != kp.shape[:2]:
            raise XGenError(f"confidence must be {kp.shape[:2]}, got {conf.shape}", reason_code="xgen_keypoints_invalid")
        conf = np.where(finite & np.isfinite(conf), np.clip(conf, 0.0, 1.0), 0.0)
    return HumanMotion(keypoints=kp, confidence=conf, fps=float(fps), source=source)


def read_keypoints(path: Path | str) -> HumanMotion:
    """The keypoints file at ``path`` (format in the module docstring)."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            if "keypoints" not in data or "fps" not in data:
                raise XGenError(f"{path}: needs arrays 'keypoints' and 'fps'", reason_code="xgen_keypoints_invalid")
            kp = data["keypoints"]
            fps = float(np.asarray(data["fps"]).reshape(-1)[0])
            conf = data["confidence"] if "confidence" in data else None
    except XGenError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise XGenError(f"cannot read keypoints file {path}: {exc}", reason_code="xgen_keypoints_invalid") from exc
    return validate_motion(kp, conf, fps, source="keypoints")


def write_keypoints(path: Path | str, motion: HumanMotion) -> Path:
    path = Path(path)
    np.savez_compressed(path, keypoints=motion.keypoints.astype(np.float32), fps=np.float64(motion.fps),
                        confidence=motion.confidence.astype(np.float32))
    return path
