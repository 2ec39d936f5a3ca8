"""Resource budgets of one submission: every bound that applies before something is read,
decoded or computed, and the error that names the bound a bundle exceeded.

The values live in the versioned gate config (``limits:`` in ``kibotos/config/gates.yaml``);
the defaults below are the packaged values (a test keeps them equal). ``Limits`` is what
``open_bundle`` and the video decoders check:

* archive: entry count, names, uncompressed sizes, compression ratios, metadata sizes;
* arrays: declared bytes per array and per chunk, chunk count, codecs allowed (every codec
  output is bounded by its chunk's declared size, whatever a zip header or a compressed
  frame claims: ``kibotos.bundle.codecs``), bytes that only the fill value backs, the
  total decoded by one bundle view;
* video: side, pixels per frame, pixels per second, frames, frames x pixels, decode wall
  time — checked on the container's declared stream before the first frame is decoded,
  and again on every decoded frame;
* time: a wall-clock budget per gate, checked cooperatively (between array reads and
  decoded frames) through ``gate_deadline``.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

from pydantic import ConfigDict

from kibotos.errors import BundleError

RESOURCE_LIMIT = "resource_limit_exceeded"


@dataclass(frozen=True)
class Limits:
    """Upper bounds applied before anything is read (see the module docstring)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # as the ``limits`` section of the gate config

    # archive
    max_archive_bytes: int = 2 << 30  # sum of uncompressed entry sizes
    max_entries: int = 20_000
    max_compression_ratio: float = 200.0  # per entry over 1 MiB
    max_metadata_bytes: int = 1 << 20  # any zarr.json (manifest attributes included)
    max_key_length: int = 1024  # characters in one entry name
    max_key_depth: int = 64  # path segments in one entry name
    # arrays
    max_array_bytes: int = 256 << 20  # one array, declared shape x itemsize
    max_chunks: int = 100_000  # per array
    max_chunk_bytes: int = 256 << 20  # one chunk decoded (declared chunk shape x itemsize)
    max_fill_value_bytes: int = 16 << 20  # declared bytes of an array that no stored chunk backs
    max_total_decoded_bytes: int = 768 << 20  # every array one bundle view decodes, together
    allowed_codecs: tuple[str, ...] = ("bytes", "zstd", "gzip", "crc32c", "transpose")
    # video (an encoded stream or raw frames)
    max_video_side: int = 4096  # pixels, width or height
    max_frame_pixels: int = 3840 * 2160  # width x height (4K UHD)
    max_video_pixels_per_second: int = 3840 * 2160 * 60  # width x height x fps
    max_video_frames: int = 36_000
    max_video_total_pixels: int = 25_000_000_000  # frames x width x height
    max_decode_seconds: float = 120.0  # wall time of one decode of one video
    # time
    gate_time_budget_s: float = 300.0  # wall time of one gate on one bundle
    # kinematics: the gates' derivative windows and gate C's sync search grow with these
    # (gate C: about 1.3 MiB per second of episode)
    max_episode_seconds: float = 600.0  # kinematic duration (timestamps) of one episode
    max_kinematic_samples: int = 600_000  # T (1 kHz for 10 minutes)
    # process
    worker_memory_bytes: int = 0  # RLIMIT_AS of a gate worker process (0: its loaded size + 3 GiB; streams.worker)

    @classmethod
    def from_config(cls, config: Any) -> "Limits":
        """The ``limits`` of a ``GateConfig`` (or these defaults when it has none)."""
        found = getattr(config, "limits", None)
        return found if isinstance(found, cls) else cls()

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ResourceLimitExceeded(BundleError):
    """A submission needs more than one of its budgets; ``metrics`` name the limit."""

    reason_code = RESOURCE_LIMIT

    def __init__(self, limit: str, value: float | int | None, maximum: float | int, message: str = "", **extra: Any):
        text = message or f"{limit}: {value} > {maximum}"
        super().__init__(text, reason_code=RESOURCE_LIMIT)
        self.limit = limit
        self.metrics = {"limit": limit, "limit_value": maximum, "observed": value, **extra}


def check(limit: str, value: float | int, maximum: float | int, what: str = "", **extra: Any) -> None:
    """Raise ``ResourceLimitExceeded`` when ``value > maximum``."""
    if value > maximum:
        raise ResourceLimitExceeded(limit, value, maximum, f"{what or limit}: {value} > {limit} {maximum}", **extra)


# the wall-clock deadline of the gate running in this thread (set by ``gate_deadline``)
_DEADLINE: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("kibotos_gate_deadline",
                                                                                          default=None)
# the limits of the gate running in this thread: what the video decoders apply
_ACTIVE: contextvars.ContextVar[Limits | None] = contextvars.ContextVar("kibotos_active_limits", default=None)


@contextlib.contextmanager
def gate_deadline(seconds: float, limits: Limits | None = None) -> Iterator[None]:
    """Within this block ``check_deadline`` raises once ``seconds`` have passed, and
    ``active_limits()`` is ``limits`` (when given)."""
    token = _DEADLINE.set((time.monotonic() + seconds, seconds))
    active = _ACTIVE.set(limits) if limits is not None else None
    try:
        yield
    finally:
        _DEADLINE.reset(token)
        if active is not None:
            _ACTIVE.reset(active)


def active_limits() -> Limits:
    """The limits of the gate running in this thread, else the packaged defaults."""
    return _ACTIVE.get() or Limits()


def check_deadline(where: str = "") -> None:
    """Raise ``ResourceLimitExceeded(gate_time_budget_s)`` past the current gate's deadline."""
    current = _DEADLINE.get()
    if current is not None and time.monotonic() > current[0]:
        raise ResourceLimitExceeded("gate_time_budget_s", None, current[1],
                                    f"the gate ran past its time budget of {current[1]} s" + (f" ({where})" if where else ""))
