"""The VLM as a calibrated instrument: its settings in the alignment config and its
calibration table (design §9 "VLM as evidence").

A calibration entry is measured offline for one ``(model, prompt_version)`` on a labelled
set of genuine and misaligned episodes: ``samples``, the answer ``accuracy``, the expected
calibration error ``ece`` of the raw confidence, and the Platt parameters fitted there.
Applied to a raw confidence ``c`` (clipped to ``[1e-4, 1 - 1e-4]``)::

    c_cal = 1 / (1 + exp(-(platt_a * logit(c) + platt_b)))

When no entry matches, the call is labelled ``uncalibrated``: its confidence is reported
as the model gave it and the align job gives the answer a smaller weight
(``uncalibrated_weight``). Numbers are never invented for a model nobody measured.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_EPS = 1e-4


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Calibration(_Frozen):
    """Calibration statistics of one ``(model, prompt_version)``, stored with every call."""

    model: str
    prompt_version: str
    status: Literal["calibrated", "uncalibrated"] = "calibrated"
    samples: int = Field(default=0, ge=0)
    accuracy: float | None = Field(default=None, ge=0, le=1)
    ece: float | None = Field(default=None, ge=0, le=1)
    platt_a: float = 1.0
    platt_b: float = 0.0
    measured_on: str = ""  # the labelled set the statistics come from

    @classmethod
    def uncalibrated(cls, model: str, prompt_version: str) -> "Calibration":
        return cls(model=model, prompt_version=prompt_version, status="uncalibrated")

    def apply(self, confidence: float) -> float | None:
        """The Platt-scaled confidence; None when uncalibrated."""
        if self.status != "calibrated":
            return None
        c = min(1.0 - _EPS, max(_EPS, float(confidence)))
        z = self.platt_a * math.log(c / (1.0 - c)) + self.platt_b
        return 1.0 / (1.0 + math.exp(-z))


class VLMConfig(_Frozen):
    """The ``vlm`` section of the alignment config."""

    weight: float = Field(ge=0, le=1)  # share of s_align given to a calibrated VLM answer
    uncalibrated_weight: float = Field(ge=0, le=1)  # ... to an uncalibrated one
    max_pairs: int = Field(ge=1)  # keyframe pairs sent per call (evenly spread)
    max_tokens: int = Field(ge=16)
    response_excerpt_chars: int = Field(ge=0)  # raw response kept in the record, at most
    retry_backoff_s: float = Field(ge=0)  # sleep before retry k: k * this
    calibration: tuple[Calibration, ...] = ()

    def calibration_for(self, model: str, prompt_version: str) -> Calibration:
        """The table entry of ``(model, prompt_version)``, else the labelled uncalibrated default."""
        for entry in self.calibration:
            if entry.model == model and entry.prompt_version == prompt_version:
                return entry
        return Calibration.uncalibrated(model, prompt_version)
