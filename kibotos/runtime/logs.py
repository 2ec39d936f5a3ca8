"""Structured logs: one JSON object per line, with the ``submission_id`` being worked on.

Processors set the submission id of the record they handle with ``submission_context``
(a context variable, so concurrent records in threads do not mix); every log line
emitted inside carries it, ``null`` outside. ``setup_logging("json" | "text", level)``
is called once by each process entry point (``KIBOTOS_LOG_FORMAT``, ``KIBOTOS_LOG_LEVEL``).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time

SUBMISSION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("submission_id", default=None)
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "submission_id"}


@contextlib.contextmanager
def submission_context(submission_id: str | bytes | None):
    if isinstance(submission_id, bytes):
        submission_id = submission_id.decode("utf-8", "replace")
    token = SUBMISSION_ID.set(submission_id)
    try:
        yield
    finally:
        SUBMISSION_ID.reset(token)


class SubmissionFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "submission_id"):
            record.submission_id = SUBMISSION_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "submission_id", ...extra fields}``."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "submission_id": getattr(record, "submission_id", None),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(fmt: str = "json", level: str | int = "INFO") -> None:
    """Configure the root logger of this process (replaces existing handlers)."""
    handler = logging.StreamHandler()
    handler.addFilter(SubmissionFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(submission_id)s] %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
