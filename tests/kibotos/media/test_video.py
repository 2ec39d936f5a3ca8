"""Video helpers: frame-accurate decoding of a few frames with seeks."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from kibotos.errors import BundleError
from kibotos.media.video import decode_luma, decode_luma_widths, decode_rgb_frames, encode_mp4


@pytest.fixture(scope="module")
def video() -> tuple[bytes, list[np.ndarray]]:
    """10 s at 30 fps, every frame distinct (a moving bar and its index in the pixels);
    key frames every 2 s (``encode_mp4``'s GOP of 60) and B-frames."""
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(40, 200, (1, 96, 128, 3), dtype=np.uint8), 300, axis=0)
    for i in range(300):
        frames[i, :, (i * 3) % 120: (i * 3) % 120 + 8] = 250
        frames[i, :16, :16] = i % 250
    data = encode_mp4(frames, 30.0)
    with av.open(io.BytesIO(data)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 300
    return data, decoded


@pytest.mark.parametrize("gap", [None, 0, 5, 10_000])
def test_frames_equal_a_full_decode(video, gap):
    data, full = video
    wanted = [0, 1, 59, 60, 61, 119, 150, 151, 240, 299]
    got = decode_rgb_frames(data, wanted[::-1] + [60], seek_gap_frames=gap)  # any order, duplicates
    assert sorted(got) == wanted
    for i in wanted:
        assert np.array_equal(got[i], full[i]), i


def test_indices_past_the_end_are_absent(video):
    data, full = video
    got = decode_rgb_frames(data, [298, 299, 300, 5000, -1])
    assert sorted(got) == [298, 299]


def test_garbage_is_unreadable():
    with pytest.raises(BundleError) as err:
        decode_rgb_frames(b"not a video", [0])
    assert err.value.reason_code == "video_unreadable"
    assert decode_rgb_frames(b"not a video", []) == {}


def test_one_decode_at_several_widths_equals_a_decode_per_width(video):
    data, _ = video
    both = decode_luma_widths(data, (64, 32))
    for width, got in zip((64, 32), both):
        alone = decode_luma(data, target_width=width)
        assert got.frames.shape[2] == width and got.frames.shape[0] == alone.frames.shape[0] > 0
        assert np.array_equal(got.frames, alone.frames) and got.fps == alone.fps


def test_the_luma_plane_read_in_place_equals_the_converted_one(video):
    from kibotos.media.video import luma_plane

    data, _ = video
    with av.open(io.BytesIO(data)) as c:
        for k, frame in enumerate(c.decode(video=0)):
            assert np.array_equal(luma_plane(frame), frame.to_ndarray(format="yuv420p")[: frame.height])
            if k == 20:
                break


def test_the_fast_decode_keeps_every_frame_and_stays_close(video):
    # no loop filter and a 2x box average before the resize: the same frames, a few grey
    # levels apart (gate C's estimate on it is measured by kibotos bench pipeline)
    data, _ = video
    full, fast = decode_luma(data, target_width=32), decode_luma(data, target_width=32, fast=True)
    assert fast.frames.shape == full.frames.shape
    diff = np.abs(fast.frames.astype(np.int16) - full.frames.astype(np.int16))
    assert 0 < diff.mean() < 3.0
