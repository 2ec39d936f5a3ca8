"""``kibotos.media.mp4probe``: the moov-box probe reports what PyAV reports on the plain mp4
files muxers write, and leaves every other file to PyAV."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest

from kibotos.bundle.limits import Limits, ResourceLimitExceeded
from kibotos.media.mp4probe import probe_mp4
from kibotos.media.video import VideoProbe, encode_mp4, probe_container, probe_video
from tests.fixtures.hostile import big_black_mp4


def _frames(n: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(n + h + w)
    base = rng.integers(0, 255, size=(1, h, w, 3), dtype=np.uint8)
    return np.repeat(base, n, axis=0) + np.arange(n, dtype=np.uint8)[:, None, None, None]


# (frames, height, width, fps): sizes, odd sizes (the encoder crops to even), NTSC and
# fractional rates, one frame, long runs
CASES = [(30, 64, 96, 30.0), (1, 48, 64, 30.0), (45, 241, 321, 29.97), (50, 120, 160, 25.0), (12, 64, 64, 12.5),
         (120, 32, 48, 60.0), (90, 40, 40, 23.976), (10, 64, 96, 1.0), (200, 16, 16, 30.0)]


@pytest.mark.parametrize("n,h,w,fps", CASES)
def test_plain_mp4_reads_as_pyav_reads_it(n, h, w, fps):
    mp4 = encode_mp4(_frames(n, h, w), fps=fps)
    plain = probe_mp4(mp4)
    assert plain is not None, "an encode_mp4 file is the plain layout"
    assert VideoProbe(*plain) == probe_container(mp4)
    assert probe_video(mp4) == probe_container(mp4)


@pytest.mark.parametrize("w,h,n,fps", [(8192, 8192, 3, 30), (64, 64, 240, 30), (64, 64, 10, 240)])
def test_hostile_headers_read_the_same(w, h, n, fps):
    mp4 = big_black_mp4(w, h, n, fps=fps)
    assert probe_mp4(mp4) is not None
    assert VideoProbe(*probe_mp4(mp4)) == probe_container(mp4)
    with pytest.raises(ResourceLimitExceeded):
        probe_video(mp4, Limits(max_video_side=w - 1, max_video_frames=n - 1))


def _other_layouts() -> dict[str, bytes]:
    mp4 = encode_mp4(_frames(20, 64, 96), fps=30)
    out = {"truncated": mp4[:-100], "trailing_bytes": mp4 + b"\0" * 5, "garbage": b"\0" * 64, "empty": b""}
    buf = io.BytesIO()  # fragmented mp4
    with av.open(buf, mode="w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"}) as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, np.uint8), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    out["fragmented"] = buf.getvalue()
    # the sample description renamed (another codec): PyAV's to read
    at = mp4.find(b"avc1", mp4.find(b"stsd"))
    out["other_codec"] = mp4[:at] + b"xvid" + mp4[at + 4:]
    # two stts entries (a variable frame duration)
    at = mp4.find(b"stts")
    size = struct.unpack_from(">I", mp4, at - 4)[0]
    out["stts_two_entries"] = mp4[:at + 8] + struct.pack(">I", 2) + mp4[at + 12:at - 4 + size]
    return out


def test_other_layouts_are_left_to_pyav():
    for name, data in _other_layouts().items():
        assert probe_mp4(data) is None, name
