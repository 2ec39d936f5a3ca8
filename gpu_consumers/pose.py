"""Human pose estimators for gate F: a registry of named estimators, and MediaPipe's.

An estimator is built once — it is the warm model a GPU-consumer actor holds — and then
called once per video: ``estimate(frames_rgb) -> PoseTrack``. Every call is a new
stream: tracking state never carries over from one submission's video to the next, so
a result depends only on its own frames. Estimators are not thread-safe; an actor calls
its estimator from one thread.

>>> est = get_pose_estimator("mediapipe")            # doctest: +SKIP
>>> track = est.estimate(frames)                     # (N, H, W, 3) uint8 RGB
>>> track.keypoints_px.shape, track.present.mean()   # ((N, 33, 2), 0.97)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kibotos.errors import KibotosError


@dataclass(frozen=True)
class HandTrack:
    """Both hands per frame, index 0 = the person's left, 1 = their right (for a camera
    that does not mirror its image). Keypoints are NaN and scores 0 where a hand was not
    found."""

    keypoints_px: np.ndarray  # (N, 2, 21, 2) float32, pixels of the frames given
    score: np.ndarray  # (N, 2) float32 handedness confidence


@dataclass(frozen=True)
class PoseTrack:
    """One person's body keypoints over the frames given to ``estimate``.

    ``keypoints_px`` are pixel coordinates of those frames (x right, y down); NaN on
    frames without a person. ``confidence`` is the per-keypoint probability that the
    keypoint is visible in the image (MediaPipe: ``visibility``), 0 without a person.
    ``world`` is the estimator's metric 3D body (metres, its own body-centred frame),
    ``None`` for estimators that have no 3D output.
    """

    estimator: str
    keypoint_names: tuple[str, ...]
    image_size: tuple[int, int]  # (width, height) of the frames given
    keypoints_px: np.ndarray  # (N, K, 2) float32
    confidence: np.ndarray  # (N, K) float32 in [0, 1]
    present: np.ndarray  # (N,) bool: a person was detected
    world: np.ndarray | None = None  # (N, K, 3) float32
    hands: HandTrack | None = None

    def __len__(self) -> int:
        return int(self.present.shape[0])


def concat_tracks(tracks: list[PoseTrack]) -> PoseTrack:
    """One track from consecutive pieces of the same video (same estimator, same size)."""
    first = tracks[0]
    hands = None
    if first.hands is not None:
        pieces = [t.hands for t in tracks if t.hands is not None]
        if len(pieces) != len(tracks):
            raise ValueError("hand tracks on some pieces of the video only")
        hands = HandTrack(np.concatenate([h.keypoints_px for h in pieces]), np.concatenate([h.score for h in pieces]))
    return PoseTrack(
        estimator=first.estimator, keypoint_names=first.keypoint_names, image_size=first.image_size,
        keypoints_px=np.concatenate([t.keypoints_px for t in tracks]),
        confidence=np.concatenate([t.confidence for t in tracks]),
        present=np.concatenate([t.present for t in tracks]),
        world=None if first.world is None else np.concatenate([t.world for t in tracks]),
        hands=hands)


class PoseEstimator(Protocol):
    name: str
    version: str
    keypoint_names: tuple[str, ...]

    def estimate(self, frames_rgb: np.ndarray) -> PoseTrack: ...

    def close(self) -> None: ...


EstimatorFactory = Callable[..., PoseEstimator]
_ESTIMATORS: dict[str, EstimatorFactory] = {}


def register_pose_estimator(name: str) -> Callable[[EstimatorFactory], EstimatorFactory]:
    """Register a factory (usually the class) under a stable name."""

    def deco(factory: EstimatorFactory) -> EstimatorFactory:
        if name in _ESTIMATORS:
            raise ValueError(f"pose estimator {name!r} registered twice")
        _ESTIMATORS[name] = factory
        return factory

    return deco


def list_pose_estimators() -> list[str]:
    return sorted(_ESTIMATORS)


def get_pose_estimator(name: str, **options) -> PoseEstimator:
    """Build the estimator registered as ``name`` (a new, warm instance: keep it).

    :raises KibotosError: ``unknown_pose_estimator``, naming the registered ones.
    """
    if name not in _ESTIMATORS:
        known = ", ".join(list_pose_estimators()) or "none"
        raise KibotosError(f"unknown pose estimator {name!r}; known: {known}", reason_code="unknown_pose_estimator")
    return _ESTIMATORS[name](**options)


def _check_frames(frames_rgb: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames_rgb)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise KibotosError(f"frames must be (N, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}",
                           reason_code="pose_input_invalid")
    return frames


MEDIAPIPE_POSE_KEYPOINTS = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)


@register_pose_estimator("mediapipe")
class MediaPipePoseEstimator:
    """MediaPipe Pose (BlazePose, ``model_complexity=1``: the model shipped in the
    ``mediapipe==0.10.21`` wheel; other complexities download at run time), optionally
    MediaPipe Hands.

    By default every frame is detected on its own (``tracking=False``): gate F samples at
    most 10 frames per second, too far apart for tracking to help, and a tracker carries
    a person through frames that show none (measured: a portrait video with 0.4 s of
    scrambled frames in the middle passes gate F in tracking mode, fails with
    ``pose_missing_frames`` per frame). ``tracking=True`` gives MediaPipe's video mode
    (detection, then tracking with landmark smoothing) for dense frame sequences.

    ``confidence`` is MediaPipe's per-landmark ``visibility``; ``world`` its
    ``pose_world_landmarks`` (metres, origin between the hips).
    """

    name = "mediapipe"

    def __init__(self, *, hands: bool = False, tracking: bool = False, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5):
        import mediapipe as mp  # heavy (TFLite runtime): imported when an estimator is built

        self.keypoint_names: tuple[str, ...] = MEDIAPIPE_POSE_KEYPOINTS
        self.version = (f"mediapipe-{mp.__version__}/pose-complexity-1" + ("/tracking" if tracking else "/per-frame")
                        + ("+hands" if hands else ""))
        self._pose = mp.solutions.pose.Pose(
            static_image_mode=not tracking, model_complexity=1, smooth_landmarks=tracking, enable_segmentation=False,
            min_detection_confidence=min_detection_confidence, min_tracking_confidence=min_tracking_confidence)
        self._hands = mp.solutions.hands.Hands(
            static_image_mode=not tracking, max_num_hands=2, model_complexity=1,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence) if hands else None

    def estimate(self, frames_rgb: np.ndarray) -> PoseTrack:
        frames = _check_frames(frames_rgb)
        n, h, w, _ = frames.shape
        k = len(self.keypoint_names)
        kp = np.full((n, k, 2), np.nan, np.float32)
        conf = np.zeros((n, k), np.float32)
        world = np.full((n, k, 3), np.nan, np.float32)
        present = np.zeros(n, bool)
        hand_kp = np.full((n, 2, 21, 2), np.nan, np.float32)
        hand_score = np.zeros((n, 2), np.float32)
        # a new stream per video: no tracking state from the previous submission
        self._pose.reset()
        if self._hands is not None:
            self._hands.reset()
        for i in range(n):
            frame = np.ascontiguousarray(frames[i])
            res = self._pose.process(frame)
            if res.pose_landmarks is not None:
                present[i] = True
                lms = res.pose_landmarks.landmark
                kp[i] = [(lm.x * w, lm.y * h) for lm in lms]
                conf[i] = [lm.visibility for lm in lms]
                if res.pose_world_landmarks is not None:
                    world[i] = [(lm.x, lm.y, lm.z) for lm in res.pose_world_landmarks.landmark]
            if self._hands is not None:
                hres = self._hands.process(frame)
                for lms, handed in zip(hres.multi_hand_landmarks or [], hres.multi_handedness or []):
                    label = handed.classification[0]
                    # MediaPipe labels hands as seen in a mirrored (selfie) image; a
                    # demonstration camera does not mirror, so its "Left" is the right hand
                    side = 1 if label.label.lower() == "left" else 0
                    if label.score > hand_score[i, side]:
                        hand_score[i, side] = label.score
                        hand_kp[i, side] = [(lm.x * w, lm.y * h) for lm in lms.landmark]
        return PoseTrack(
            estimator=self.version, keypoint_names=self.keypoint_names, image_size=(w, h),
            keypoints_px=kp, confidence=np.clip(conf, 0.0, 1.0), present=present, world=world,
            hands=HandTrack(hand_kp, hand_score) if self._hands is not None else None)

    def close(self) -> None:
        self._pose.close()
        if self._hands is not None:
            self._hands.close()
