"""Bounded decompression for the compressing codecs a bundle may use (``zstd``, ``gzip``).

zarr's own codecs decompress whatever a chunk holds: a zstd frame without a content size
or a gzip stream of a few KB can expand to gigabytes before zarr notices that the result
does not fit the chunk. These subclasses stop at the chunk's declared size (shape x
itemsize, plus a little room for checksums) and raise ``ResourceLimitExceeded`` — never
allocating more. Encoding is zarr's, unchanged. Importing this module installs them as
zarr's implementation of ``zstd`` and ``gzip`` for this process (``zarr.config``), so every
read of a bundle goes through them.
"""

from __future__ import annotations

import zlib
from math import prod

import numpy as np
import zarr
import zstandard
from zarr.codecs.gzip import GzipCodec
from zarr.codecs.zstd import ZstdCodec
from zarr.registry import register_codec

from kibotos.bundle.limits import ResourceLimitExceeded

SLACK_BYTES = 1024  # crc32c (4 bytes) and anything else a bytes->bytes codec may add
_BLOCK = 1 << 20


def expected_bytes(chunk_spec) -> int:
    """The most a chunk of ``chunk_spec`` may decode to."""
    try:
        itemsize = int(chunk_spec.dtype.to_native_dtype().itemsize)
    except Exception:  # a dtype without a fixed size: its own codec bounds it
        itemsize = 8
    return prod(chunk_spec.shape) * max(itemsize, 1) + SLACK_BYTES


def _too_big(codec: str, bound: int) -> ResourceLimitExceeded:
    return ResourceLimitExceeded("chunk_decoded_bytes", None, bound,
                                 f"a {codec} chunk decodes to more than its declared {bound} bytes")


def zstd_bounded(data: bytes | memoryview, bound: int) -> bytes:
    """Every zstd frame of ``data`` decompressed, refusing output beyond ``bound`` bytes."""
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True, read_size=_BLOCK)
    out = bytearray()
    with reader:
        while block := reader.read(min(_BLOCK, bound + 1 - len(out))):
            out += block
            if len(out) > bound:
                raise _too_big("zstd", bound)
    return bytes(out)


def gzip_bounded(data: bytes | memoryview, bound: int) -> bytes:
    """Every gzip member of ``data`` decompressed, refusing output beyond ``bound`` bytes."""
    out = bytearray()
    rest = bytes(data)
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = rest
        while pending and not d.eof:
            out += d.decompress(pending, bound + 1 - len(out))
            if len(out) > bound:
                raise _too_big("gzip", bound)
            pending = d.unconsumed_tail
        if not d.eof:
            raise ValueError("truncated gzip stream")
        rest = d.unused_data
    return bytes(out)


class BoundedZstdCodec(ZstdCodec):
    def _decode_sync(self, chunk_bytes, chunk_spec):
        raw = np.ascontiguousarray(chunk_bytes.as_numpy_array()).view(np.uint8)
        return chunk_spec.prototype.buffer.from_bytes(zstd_bounded(memoryview(raw), expected_bytes(chunk_spec)))


class BoundedGzipCodec(GzipCodec):
    def _decode_sync(self, chunk_bytes, chunk_spec):
        raw = np.ascontiguousarray(chunk_bytes.as_numpy_array()).view(np.uint8)
        return chunk_spec.prototype.buffer.from_bytes(gzip_bounded(memoryview(raw), expected_bytes(chunk_spec)))


def install() -> None:
    """Make these zarr's ``zstd`` and ``gzip`` implementations in this process (idempotent)."""
    updates = {}
    for name, cls in (("zstd", BoundedZstdCodec), ("gzip", BoundedGzipCodec)):
        register_codec(name, cls)
        updates[f"codecs.{name}"] = f"{cls.__module__}.{cls.__qualname__}"
    zarr.config.set(updates)


install()
