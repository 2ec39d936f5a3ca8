"""Video encode/decode with PyAV (bundled FFmpeg, libx264) and OpenCV.

Decoding for the gates reads only the luma plane (Y of YUV 4:2:0) and downsizes it with
cv2: the sync gate needs motion energy, not colour, and skipping the RGB conversion is
several times faster than asking PyAV for rgb24.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

from kibotos.bundle.limits import Limits, ResourceLimitExceeded, active_limits, check, check_deadline
from kibotos.errors import BundleError, note_degraded
from kibotos.media.mp4probe import probe_mp4

# flag of a judgement made on the frames before a decode error (kibotos.errors.note_degraded)
DECODE_TRUNCATED = "video_decode_truncated"


def encode_mp4(frames: np.ndarray, fps: float, crf: int = 23) -> bytes:
    """Encode (N, H, W, 3) uint8 RGB frames as H.264 in an mp4 container."""
    n, h, w, _ = frames.shape
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = w - w % 2, h - h % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "g": "60"}
        rate = Fraction(fps).limit_denominator(1001)
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[: stream.height, : stream.width]), format="rgb24")
            vf.pts = i  # explicit presentation times: B-frames reorder packets, not frames
            vf.time_base = 1 / rate
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


MAX_SIDE = 8192  # open_video(check_size=True) refuses larger frames; decoders apply ``Limits``


@dataclass(frozen=True)
class VideoProbe:
    """What a container declares about its first video stream (nothing decoded)."""

    width: int
    height: int
    fps: float
    frames: int  # declared frame count (from the container's index, else duration x rate)
    codec: str


def check_video_dims(width: int, height: int, fps: float, frames: int, limits: Limits | None = None,
                     what: str = "video") -> None:
    """The video budgets on declared dimensions: side, pixels per frame, pixels per second,
    frames, frames x pixels. Raises ``ResourceLimitExceeded`` naming the first exceeded."""
    lim = limits or active_limits()
    check("max_video_side", max(width, height), lim.max_video_side, f"{what} side")
    check("max_frame_pixels", width * height, lim.max_frame_pixels, f"{what} pixels per frame")
    check("max_video_pixels_per_second", round(width * height * max(fps, 0.0)), lim.max_video_pixels_per_second,
          f"{what} pixels per second")
    check("max_video_frames", frames, lim.max_video_frames, f"{what} frames")
    check("max_video_total_pixels", frames * width * height, lim.max_video_total_pixels, f"{what} frames x pixels")


def probe_video(data: bytes, limits: Limits | None = None) -> VideoProbe:
    """Open the container, read its first video stream's declared size, rate and frame
    count, and check them against the video budgets — before any frame is decoded.

    A plain mp4 is read from its ``moov`` boxes alone (``kibotos.media.mp4probe``: the same
    numbers, without FFmpeg's format probe); any other file is opened with PyAV.

    :raises BundleError: ``video_unreadable`` (no container, no video stream, no size) or
        ``resource_limit_exceeded`` (a budget, named in ``metrics``).
    """
    plain = probe_mp4(data)
    probe = VideoProbe(*plain) if plain is not None else probe_container(data)
    check_video_dims(probe.width, probe.height, probe.fps, probe.frames, limits)
    return probe


def probe_container(data: bytes) -> VideoProbe:
    """``probe_video``'s numbers as PyAV reads them (any container), unchecked."""
    with open_video(data) as (container, stream):
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width <= 0 or height <= 0:
            raise BundleError(f"video stream declares no frame size ({width}x{height})", reason_code="video_unreadable")
        fps = float(stream.average_rate or stream.base_rate or 0) or 0.0
        frames = int(stream.frames or 0)
        if frames <= 0 and stream.duration is not None and stream.time_base is not None and fps > 0:
            frames = int(round(float(stream.duration * stream.time_base) * fps))
        if frames <= 0 and container.duration:
            frames = int(round(container.duration / 1_000_000 * max(fps, 1.0)))
        return VideoProbe(width, height, fps, max(frames, 0), stream.codec_context.name)


class DecodeBudget:
    """Checks while decoding, on every packet sent to the decoder and every frame it
    returns: the decoded frame's size (a stream may switch to a larger resolution than its
    header declares), frames, pixels, decode wall time and the gate's deadline. The time
    checks cost well under a microsecond, so they run on every packet and frame: a decoder
    buffering frames (frame threads) or a stream of huge frames overruns a budget by one
    packet's or one frame's decode at most, never by a batch of them."""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or active_limits()
        self.t0 = time.monotonic()
        self.frames = 0
        self.packets = 0
        self.pixels = 0

    def tick(self, where: str = "decoding video") -> None:
        """The time budgets: this decode's wall time and the gate's deadline."""
        lim = self.limits
        elapsed = time.monotonic() - self.t0
        if elapsed > lim.max_decode_seconds:
            raise ResourceLimitExceeded("max_decode_seconds", round(elapsed, 1), lim.max_decode_seconds,
                                        f"decoding took more than {lim.max_decode_seconds} s "
                                        f"({self.frames} frames, {self.packets} packets)")
        check_deadline(where)

    def packet(self) -> None:
        self.packets += 1
        self.tick()

    def frame(self, width: int, height: int) -> None:
        lim = self.limits
        self.frames += 1
        self.pixels += width * height
        check("max_video_side", max(width, height), lim.max_video_side, "decoded frame side")
        check("max_frame_pixels", width * height, lim.max_frame_pixels, "decoded frame pixels")
        check("max_video_frames", self.frames, lim.max_video_frames, "decoded frames")
        check("max_video_total_pixels", self.pixels, lim.max_video_total_pixels, "decoded pixels")
        self.tick()


def decode_frames(container, stream, budget: DecodeBudget) -> Iterator:
    """The frames of ``stream``, packet by packet under ``budget`` (``container.decode``
    checks nothing between the packets it feeds the decoder). The last, empty packet
    ``demux`` yields drains the decoder's buffered frames."""
    for packet in container.demux(stream):
        budget.packet()
        for frame in packet.decode():
            budget.frame(frame.width, frame.height)
            yield frame


@contextmanager
def open_video(data: bytes, *, check_size: bool = False) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """The container of an encoded video (an mp4 file's bytes) and its first video
    stream, set to decode with threads; closed on exit. ``check_size`` also refuses
    frames wider or taller than ``MAX_SIDE``.

    :raises BundleError: ``video_unreadable`` when the container cannot be opened or
        holds no (sane) video stream.
    """
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception as exc:  # av.error.* for garbage / truncated containers
        raise BundleError(f"video cannot be opened: {exc}", reason_code="video_unreadable") from exc
    with container:
        if not container.streams.video:
            raise BundleError("video has no video stream", reason_code="video_unreadable")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if check_size:
            w, h = stream.codec_context.width, stream.codec_context.height
            if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
                raise BundleError(f"video size {w}x{h} out of range", reason_code="video_unreadable")
        yield container, stream


def luma_plane(frame: av.VideoFrame) -> np.ndarray:
    """The frame's Y plane (height, width) uint8 as ``to_ndarray(format="yuv420p")`` gives
    it, which copies all three planes and stacks them: a yuv420p frame's first plane is
    read in place (a view of the decoder's buffer, no chroma); any other format takes the
    conversion (a full-range or 4:4:4 stream's luma is rescaled by it)."""
    if frame.format.name != "yuv420p":
        return frame.to_ndarray(format="yuv420p")[: frame.height]
    plane = frame.planes[0]
    return np.frombuffer(memoryview(plane), np.uint8).reshape(frame.height, plane.line_size)[:, : frame.width]


@dataclass(frozen=True)
class DecodedLuma:
    frames: np.ndarray  # (N, h, w) uint8
    fps: float
    width: int  # original
    height: int
    codec: str


# ``fast`` decoding: the decoder skips the in-loop deblocking filter (H.264/HEVC
# ``skip_loop_filter``; every frame is still decoded, ~25 % less decoder CPU, pixels move by
# a few grey levels near block edges), and a frame at least twice the target width is
# halved by an exact 2x2 box average before the area resize (a non-integer area resize of
# the full frame cost as much as decoding it; ~2.6x less). ``kibotos bench pipeline``
# reports what that does to gate C's estimate (``floor_fast``).
FAST_DECODER_OPTIONS = {"skip_loop_filter": "all"}


def _resize_fast(y: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = y.shape
    if w >= 2 * size[0] and h >= 2 * size[1]:
        y = cv2.resize(y, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(y, size, interpolation=cv2.INTER_AREA)


def decode_luma(data: bytes, target_width: int = 96, max_frames: int = 100_000, *, fast: bool = False) -> DecodedLuma:
    """Decode every frame's Y plane, downsized to ``target_width`` (aspect kept);
    ``fast``: without the loop filter, halved first (``FAST_DECODER_OPTIONS``)."""
    return decode_luma_widths(data, (target_width,), max_frames, fast=fast)[0]


def decode_luma_widths(data: bytes, widths: Sequence[int], max_frames: int = 100_000, *,
                       fast: bool = False) -> list[DecodedLuma]:
    """``decode_luma`` at each of ``widths`` from one decode of the video: each frame's Y
    plane is resized to every width, so each result equals its own ``decode_luma``.

    The container's declared stream is checked against the video budgets first
    (``probe_video``), every decoded frame again (``DecodeBudget``)."""
    probe_video(data)
    budget = DecodeBudget()
    with open_video(data, check_size=True) as (container, stream):
        if fast:
            stream.codec_context.options = dict(FAST_DECODER_OPTIONS)
        fps = float(stream.average_rate or stream.base_rate or 0) or 0.0
        w, h = stream.codec_context.width, stream.codec_context.height
        sizes = [(tw, max(1, round(h * tw / w))) for tw in (min(width, w) for width in widths)]
        out: list[list[np.ndarray]] = [[] for _ in sizes]
        try:
            for frame in decode_frames(container, stream, budget):
                if len(out[0]) >= max_frames:
                    raise BundleError(f"video has more than {max_frames} frames", reason_code="video_too_long")
                y = luma_plane(frame)
                for frames, size in zip(out, sizes):
                    frames.append(_resize_fast(y, size) if fast else cv2.resize(y, size, interpolation=cv2.INTER_AREA))
        except BundleError:
            raise
        except Exception as exc:
            if not out[0]:
                raise BundleError(f"video cannot be decoded: {exc}", reason_code="video_unreadable") from exc
            # a damaged tail: keep what decoded (the frame count check will notice), never silently
            note_degraded(DECODE_TRUNCATED, f"decode stopped after {len(out[0])} frames: {exc}")
        return [DecodedLuma(np.stack(frames) if frames else np.zeros((0, th, tw), np.uint8), fps, w, h,
                            stream.codec_context.name) for frames, (tw, th) in zip(out, sizes)]


def luma_from_frames(frames: np.ndarray, target_width: int = 96) -> np.ndarray:
    """Downsized luma for raw (N, H, W, C) frames, vectorized over frames: BT.601 weights,
    then an integer-factor box downscale (the area average cv2 would do)."""
    n, h, w = frames.shape[:3]
    k = max(1, w // max(target_width, 1))
    hh, ww = (h // k) * k, (w // k) * k
    out = np.empty((n, hh // k, ww // k), np.uint8)
    # a batch of frames at a time: float32 working copies of every frame at once would
    # cost 12 bytes per pixel of the whole video
    step = max(1, (32 << 20) // max(h * w * 12, 1))
    for a in range(0, n, step):
        part = frames[a:a + step]
        if part.ndim == 4 and part.shape[3] >= 3:
            gray = part[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        else:
            gray = part.reshape(part.shape[0], h, w, -1)[..., 0].astype(np.float32)
        small = gray[:, :hh, :ww].reshape(part.shape[0], hh // k, k, ww // k, k).mean(axis=(2, 4))
        out[a:a + step] = np.clip(np.rint(small), 0, 255).astype(np.uint8)
    return out


def decode_rgb_frames(data: bytes, indices, seek_gap_frames: int | None = None) -> dict[int, np.ndarray]:
    """RGB frames (H, W, 3) uint8 at the frame ``indices`` of an encoded video, decoding
    only what they need: targets are visited in order, and the decoder seeks to the key
    frame before a target whenever that target lies more than ``seek_gap_frames`` (default:
    two seconds of video) past the last decoded frame. A frame's index is its presentation
    time times the stream's frame rate (constant-rate video, as bundles declare it).
    Indices past the end of the video are absent from the result.

    :raises BundleError: ``video_unreadable`` when the container or stream cannot be read.
    """
    wanted = sorted({int(i) for i in indices if int(i) >= 0})
    out: dict[int, np.ndarray] = {}
    if not wanted:
        return out
    probe_video(data)
    budget = DecodeBudget()
    with open_video(data) as (container, stream):
        fps = float(stream.average_rate or stream.base_rate or 0)
        if fps <= 0 or stream.time_base is None:
            raise BundleError("video has no frame rate", reason_code="video_unreadable")
        tb = float(stream.time_base)
        start = stream.start_time or 0
        gap = seek_gap_frames if seek_gap_frames is not None else max(1, int(round(2 * fps)))
        k, last = 0, None
        try:
            while k < len(wanted):
                if last is None or wanted[k] - last > gap:
                    container.seek(start + int(wanted[k] / fps / tb), stream=stream, backward=True)
                for frame in decode_frames(container, stream, budget):
                    if frame.pts is None:
                        raise BundleError("video frames carry no timestamps", reason_code="video_unreadable")
                    idx = int(round((frame.pts - start) * tb * fps))
                    last = idx
                    if idx < wanted[k]:
                        continue  # decoded, never converted
                    while k < len(wanted) and wanted[k] < idx:
                        k += 1  # not in the stream (a gap in its timestamps)
                    if k < len(wanted) and wanted[k] == idx:
                        out[idx] = frame.to_ndarray(format="rgb24")
                        k += 1
                    if k >= len(wanted) or wanted[k] - idx > gap:
                        break
                else:
                    break  # end of stream: later targets do not exist
        except BundleError:
            raise
        except Exception as exc:
            if not out:
                raise BundleError(f"video cannot be decoded: {exc}", reason_code="video_unreadable") from exc
            note_degraded(DECODE_TRUNCATED, f"decode stopped after {len(out)} wanted frames: {exc}")
    return out
