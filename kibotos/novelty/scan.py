"""One pass over a bundle's primary video for everything novelty needs.

Packets are demuxed (sizes, key flags: compression statistics) and frames decoded in
presentation order; only the frames sampled at ``sample_fps`` (by presentation time, so
a copy at another frame rate samples the same instants) are converted: a downsized grey
copy (hashes, overlay detection), an RGB copy for the keyframes (embeddings) and a few
full-resolution grey frames (spectral recapture cues). Decoding stops after
``max_samples`` samples; demuxing goes on to the end (it costs next to nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import av
import cv2
import numpy as np

from kibotos.bundle.reader import VIDEO_ENCODED, VIDEO_FRAMES, BundleView
from kibotos.errors import BundleError
from kibotos.media.video import open_video
from kibotos.novelty.config import NoveltySection


@dataclass(frozen=True)
class ContainerInfo:
    """What the container and the encoder say about themselves, and packet statistics."""

    format_name: str
    codec: str
    profile: str | None
    pix_fmt: str | None
    metadata: dict[str, str]  # container and stream tags, "stream:" prefixed for the latter
    packet_sizes: np.ndarray  # (P,) bytes, decode order
    packet_key: np.ndarray  # (P,) bool
    pict_types: list[str]  # per decoded frame, presentation order: "I", "P", "B", ...
    frame_sizes: np.ndarray  # (F,) packet size of each decoded frame, presentation order (0: unknown)


@dataclass(frozen=True)
class VideoScan:
    fps: float
    width: int
    height: int
    frame_count: int  # frames seen (decoded, or raw)
    sample_times_s: np.ndarray  # (M,) presentation time of each sample
    grey: np.ndarray  # (M, h, w) uint8, width <= analysis_width
    keyframes: list[np.ndarray] = field(default_factory=list)  # RGB, longer side <= keyframe_max_side
    full_grey: list[np.ndarray] = field(default_factory=list)  # full-resolution grey frames
    container: ContainerInfo | None = None  # None for raw frames


def _downsize(img: np.ndarray, width: int) -> np.ndarray:
    h, w = img.shape[:2]
    if w <= width:
        return img
    return cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def _limit_side(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    # YUV planes + cv2 conversion is several times faster than PyAV's rgb24 (kibotos.media.video)
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)
    return frame.to_ndarray(format="rgb24")


_PICT_TYPES = {0: "?", 1: "I", 2: "P", 3: "B", 4: "S", 5: "SI", 6: "SP", 7: "BI"}


def _pict_type(frame: av.VideoFrame) -> str:
    value = frame.pict_type
    return _PICT_TYPES.get(int(value), "?") if not isinstance(value, str) else value


class _Sampler:
    """Collects samples; the keyframes are chosen among them once their count is known,
    so RGB copies of every sample are held (bounded by ``keyframe_max_side``)."""

    def __init__(self, cfg: NoveltySection, full_grey_every: int):
        self.cfg = cfg
        self.times: list[float] = []
        self.grey: list[np.ndarray] = []
        self.rgb: list[np.ndarray] = []
        self.full_grey: list[np.ndarray] = []
        self._full_every = full_grey_every

    @property
    def full(self) -> bool:
        return len(self.times) >= self.cfg.frames.max_samples

    def wants(self, t_s: float) -> bool:
        # sample k is the first frame at or after k / sample_fps
        return not self.full and t_s >= len(self.times) / self.cfg.frames.sample_fps - 1e-6

    def add(self, t_s: float, rgb: np.ndarray) -> None:
        grey_full = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        k = len(self.times)
        if k % self._full_every == 0 and len(self.full_grey) < self.cfg.artifacts.recapture.frames:
            self.full_grey.append(grey_full)
        self.times.append(t_s)
        self.grey.append(_downsize(grey_full, self.cfg.frames.analysis_width))
        self.rgb.append(_limit_side(rgb, self.cfg.frames.keyframe_max_side))

    def keyframes(self) -> list[np.ndarray]:
        if not self.rgb:
            return []
        k = min(self.cfg.frames.keyframes, len(self.rgb))
        return [self.rgb[i] for i in np.linspace(0, len(self.rgb) - 1, k).round().astype(int)]


def _full_grey_every(cfg: NoveltySection, duration_s: float | None) -> int:
    """Spread the full-resolution frames over the (expected) sampled span."""
    span = min(duration_s or 0.0, cfg.frames.max_samples / cfg.frames.sample_fps)
    samples = max(1, int(span * cfg.frames.sample_fps))
    return max(1, samples // max(1, cfg.artifacts.recapture.frames))


def scan_encoded(data: bytes, cfg: NoveltySection, declared_fps: float | None = None) -> VideoScan:
    """Scan an encoded video (an mp4 file's bytes).

    :raises BundleError: ``video_unreadable`` when the container or stream cannot be read.
    """
    with open_video(data) as (container, stream):
        ctx = stream.codec_context
        fps = float(stream.average_rate or stream.base_rate or 0) or float(declared_fps or 0)
        if fps <= 0:
            raise BundleError("video has no frame rate", reason_code="video_unreadable")
        tb = float(stream.time_base) if stream.time_base is not None else 1.0 / fps
        start = stream.start_time or 0
        duration_s = float(stream.duration * tb) if stream.duration else (stream.frames / fps if stream.frames else None)
        sampler = _Sampler(cfg, _full_grey_every(cfg, duration_s))
        sizes: list[int] = []
        keys: list[bool] = []
        size_by_pts: dict[int, int] = {}
        decoded: list[tuple[int | None, str]] = []  # (pts, picture type), presentation order
        n_frames = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    sizes.append(packet.size)
                    keys.append(bool(packet.is_keyframe))
                    if packet.pts is not None:
                        size_by_pts[int(packet.pts)] = packet.size
                if sampler.full:
                    continue  # statistics only from here on
                for frame in packet.decode():
                    t_s = (frame.pts - start) * tb if frame.pts is not None else n_frames / fps
                    n_frames += 1
                    decoded.append((frame.pts, _pict_type(frame)))
                    if sampler.wants(t_s):
                        sampler.add(t_s, _rgb(frame))
        except Exception as exc:
            if not sampler.times:
                raise BundleError(f"video cannot be decoded: {exc}", reason_code="video_unreadable") from exc
            # a damaged tail: keep what decoded
        metadata = {str(k): str(v) for k, v in container.metadata.items()}
        metadata.update({f"stream:{k}": str(v) for k, v in stream.metadata.items()})
        info = ContainerInfo(
            format_name=container.format.name,
            codec=ctx.name,
            profile=getattr(ctx, "profile", None),
            pix_fmt=getattr(ctx, "pix_fmt", None),
            metadata=metadata,
            packet_sizes=np.asarray(sizes, dtype=np.int64),
            packet_key=np.asarray(keys, dtype=bool),
            pict_types=[t for _, t in decoded],
            frame_sizes=np.asarray([size_by_pts.get(p, 0) if p is not None else 0 for p, _ in decoded], dtype=np.int64),
        )
        return VideoScan(fps=fps, width=ctx.width, height=ctx.height, frame_count=n_frames,
                         sample_times_s=np.asarray(sampler.times), grey=_stack(sampler.grey),
                         keyframes=sampler.keyframes(), full_grey=sampler.full_grey, container=info)


def scan_raw(frames: np.ndarray, fps: float, cfg: NoveltySection) -> VideoScan:
    """Scan raw ``(N, H, W, C)`` uint8 frames (the bundle's ``frames`` alternative)."""
    if frames.ndim != 4 or frames.shape[3] not in (1, 3, 4) or frames.dtype != np.uint8:
        raise BundleError(f"raw video frames have shape {frames.shape} dtype {frames.dtype}",
                          reason_code="video_unreadable")
    sampler = _Sampler(cfg, _full_grey_every(cfg, len(frames) / fps))
    for i, frame in enumerate(frames):
        t_s = i / fps
        if sampler.full:
            break
        if sampler.wants(t_s):
            rgb = frame[..., :3] if frame.shape[2] >= 3 else np.repeat(frame, 3, axis=2)
            sampler.add(t_s, np.ascontiguousarray(rgb))
    return VideoScan(fps=fps, width=frames.shape[2], height=frames.shape[1], frame_count=len(frames),
                     sample_times_s=np.asarray(sampler.times), grey=_stack(sampler.grey),
                     keyframes=sampler.keyframes(), full_grey=sampler.full_grey, container=None)


def _stack(grey: list[np.ndarray]) -> np.ndarray:
    if not grey:
        return np.zeros((0, 1, 1), np.uint8)
    return np.stack(grey)


def scan_bundle(view: BundleView, cfg: NoveltySection) -> VideoScan | None:
    """Scan the primary video of ``view`` (None when the bundle has none)."""
    fps = None
    video = view.manifest_raw.get("video")
    if isinstance(video, dict) and isinstance(video.get("primary"), dict):
        declared = video["primary"].get("fps")
        fps = float(declared) if isinstance(declared, (int, float)) and declared > 0 else None
    if view.has(VIDEO_ENCODED):
        return scan_encoded(view.read(VIDEO_ENCODED).tobytes(), cfg, declared_fps=fps)
    if view.has(VIDEO_FRAMES):
        if fps is None:
            raise BundleError("raw video frames need video.primary.fps", reason_code="video_unreadable")
        return scan_raw(view.read(VIDEO_FRAMES), fps, cfg)
    return None
