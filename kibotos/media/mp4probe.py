"""The declared size, rate and frame count of a plain mp4, read from its ``moov`` boxes.

Opening the container with PyAV to read four numbers costs 1-10 ms per video (FFmpeg
probes the format and decodes the first frames to fill in the stream parameters): more
than every other check of gate A together on a short episode (issue 17). For the plain
file an mp4 muxer writes -- one ``moov`` with one video track, no fragments, one ``avc1``
sample description, a constant frame duration (one ``stts`` entry) -- the numbers FFmpeg
reports follow directly from those boxes:

* width, height: the ``avc1`` sample entry's;
* frames: the ``stts`` sample count (FFmpeg's ``nb_frames``);
* fps: ``timescale / sample duration`` (FFmpeg's ``avg_frame_rate``: ``time_scale x
  frames / duration`` of the ``stts``, reduced);
* codec: ``h264``.

Anything else -- another layout, box or codec, a size that does not add up -- returns
``None`` and the caller opens the file with PyAV as before. ``tests/kibotos/media/
test_mp4probe.py`` compares both on encoded videos of several sizes, rates and lengths.
Nothing here decodes; the decoders check every decoded frame's real size
(``kibotos.media.video.DecodeBudget``) whatever a header declares.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

_INT31 = 1 << 31


class _NotPlain(Exception):
    """Not the plain layout: PyAV reads it."""


def _boxes(data, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, box end)`` of each box in ``data[start:end]``; the boxes
    must tile the range exactly."""
    p = start
    while p < end:
        if p + 8 > end:
            raise _NotPlain
        size, kind = struct.unpack_from(">I4s", data, p)
        header = 8
        if size == 1:
            if p + 16 > end:
                raise _NotPlain
            (size,) = struct.unpack_from(">Q", data, p + 8)
            header = 16
        elif size == 0:
            size = end - p
        if size < header or p + size > end:
            raise _NotPlain
        yield kind, p + header, p + size
        p += size


def _children(data, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    out: dict[bytes, list[tuple[int, int]]] = {}
    for kind, a, b in _boxes(data, start, end):
        out.setdefault(kind, []).append((a, b))
    return out


def _one(boxes: dict[bytes, list[tuple[int, int]]], kind: bytes) -> tuple[int, int]:
    found = boxes.get(kind, [])
    if len(found) != 1:
        raise _NotPlain
    return found[0]


def probe_mp4(data) -> tuple[int, int, float, int, str] | None:
    """``(width, height, fps, frames, codec)`` of a plain mp4 (bytes-like), else ``None``."""
    try:
        return _probe(data)
    except (_NotPlain, struct.error):
        return None


def _probe(data) -> tuple[int, int, float, int, str]:
    n = len(data)
    top = list(_boxes(data, 0, n))
    kinds = [k for k, _, _ in top]
    if not kinds or kinds[0] != b"ftyp" or kinds.count(b"moov") != 1 or b"moof" in kinds or b"mfra" in kinds:
        raise _NotPlain
    moov = _children(data, *next((a, b) for k, a, b in top if k == b"moov"))
    if b"mvex" in moov:  # fragmented
        raise _NotPlain
    trak = _children(data, *_one(moov, b"trak"))
    mdia = _children(data, *_one(trak, b"mdia"))
    hdlr, _ = _one(mdia, b"hdlr")
    if bytes(data[hdlr + 8:hdlr + 12]) != b"vide":
        raise _NotPlain
    mdhd, mdhd_end = _one(mdia, b"mdhd")
    version = data[mdhd]
    if version == 0:
        (timescale,) = struct.unpack_from(">I", data, mdhd + 12)
    elif version == 1:
        (timescale,) = struct.unpack_from(">I", data, mdhd + 20)
    else:
        raise _NotPlain
    stbl = _children(data, *_one(_children(data, *_one(mdia, b"minf")), b"stbl"))
    stsd, stsd_end = _one(stbl, b"stsd")
    (entries,) = struct.unpack_from(">I", data, stsd + 4)
    sample_entries = list(_boxes(data, stsd + 8, stsd_end))
    if entries != 1 or len(sample_entries) != 1 or sample_entries[0][0] != b"avc1":
        raise _NotPlain
    _, entry, entry_end = sample_entries[0]
    if entry + 28 > entry_end:
        raise _NotPlain
    width, height = struct.unpack_from(">HH", data, entry + 24)
    stts, stts_end = _one(stbl, b"stts")
    (count,) = struct.unpack_from(">I", data, stts + 4)
    if count != 1 or stts + 16 != stts_end:
        raise _NotPlain
    frames, duration = struct.unpack_from(">II", data, stts + 8)
    if not (0 < frames < _INT31 and 0 < duration < _INT31 and 0 < timescale < _INT31 and width > 0 and height > 0):
        raise _NotPlain
    return width, height, timescale / duration, frames, "h264"
