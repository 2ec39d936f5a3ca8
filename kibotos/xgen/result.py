"""What every XGen stage returns: ``StageResult`` (the value, metrics, a reason code when it
refused) and ``XGenError`` (a refusal raised inside a stage, caught by ``run_stage``).

A stage is ``run(inputs, config) -> StageResult``: a pure function with no broker, no
database and no file system beyond what its inputs name, so that a job handler can call it
as it is. Reason codes are stable snake_case ids prefixed ``xgen_`` (README "XGen").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kibotos.errors import KibotosError

T = TypeVar("T")


class XGenError(KibotosError):
    """A stage refuses its input (or cannot produce a physically valid output)."""

    reason_code = "xgen_failed"

    def __init__(self, message: str, *, reason_code: str, metrics: dict[str, Any] | None = None):
        super().__init__(message, reason_code=reason_code)
        self.metrics = dict(metrics or {})


@dataclass(frozen=True)
class StageResult(Generic[T]):
    """``value`` is the stage output when ``ok``; otherwise ``reason_code`` says why not."""

    stage: str
    ok: bool
    value: T | None = None
    reason_code: str | None = None
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def unwrap(self) -> T:
        """The value, or the refusal raised again as an ``XGenError``."""
        if not self.ok:
            raise XGenError(f"{self.stage}: {self.message}", reason_code=self.reason_code or "xgen_failed",
                            metrics=self.metrics)
        return self.value  # type: ignore[return-value]


def run_stage(stage: str, fn: Callable[[], tuple[T, dict[str, Any]]]) -> StageResult[T]:
    """Call ``fn`` (returning ``(value, metrics)``) and turn an ``XGenError`` into a refused
    result; any other exception is a bug and propagates."""
    try:
        value, metrics = fn()
    except XGenError as exc:
        return StageResult(stage=stage, ok=False, reason_code=exc.reason_code, message=str(exc), metrics=exc.metrics)
    return StageResult(stage=stage, ok=True, value=value, metrics=metrics)
