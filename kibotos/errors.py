"""One exception root for the project.

Every error that can reach a user or an operator carries a stable ``reason_code``
(a short snake_case string shown in reports and dashboards).
"""

from typing import Any


class KibotosError(Exception):
    """Root of every error raised by Kibotos code."""

    reason_code = "internal_error"

    def __init__(self, message: str, *, reason_code: str | None = None):
        super().__init__(message)
        if reason_code is not None:
            self.reason_code = reason_code


class BundleError(KibotosError):
    """A submission bundle cannot be opened or is structurally invalid."""

    reason_code = "bundle_malformed"
    # set only by the raisers that measured a limit (readers use getattr(exc, "metrics", ...))
    metrics: dict[str, Any]


class UnknownRobotModel(KibotosError):
    reason_code = "unknown_robot_model"


class ConfigError(KibotosError):
    reason_code = "config_invalid"


class SerializationError(KibotosError):
    """A record cannot be encoded to / decoded from its Avro schema."""

    reason_code = "undecodable_record"


class ServiceError(KibotosError):
    """A backing service (broker, object store, ClickHouse) failed or is unreachable."""

    reason_code = "service_unavailable"


# --- degradations: recoverable errors that must not pass silently -----------------------
import contextlib as _contextlib  # noqa: E402
import contextvars as _contextvars  # noqa: E402

_DEGRADED: _contextvars.ContextVar[list | None] = _contextvars.ContextVar("kibotos_degraded", default=None)


def note_degraded(flag: str, detail: str) -> None:
    """Record that the current judgement works on partial data (``flag``, e.g.
    ``video_decode_truncated``): counted (``kibotos_degraded_inputs``), logged, and added
    to the stage's result by ``streams.stage.contained`` when one is collecting."""
    import logging

    from kibotos.runtime.metrics import DEGRADED_TOTAL

    DEGRADED_TOTAL.labels(flag).inc()
    logging.getLogger("kibotos.degraded").warning("%s: %s", flag, detail)
    notes = _DEGRADED.get()
    if notes is not None:
        notes.append((flag, detail))


@_contextlib.contextmanager
def collect_degraded():
    """Collect the ``note_degraded`` calls made inside the block (a list of (flag, detail))."""
    notes: list[tuple[str, str]] = []
    token = _DEGRADED.set(notes)
    try:
        yield notes
    finally:
        _DEGRADED.reset(token)
