"""A dataset's declarative spec: which accepted episodes it selects.

A spec file (YAML or JSON)::

    name: panda-pick            # the dataset's id: [a-z0-9][a-z0-9._-]{0,63}
    description: Panda pick-and-place, S >= 0.6
    robots: [franka_panda]      # robot_model_id; empty or absent = any robot
    tasks: [pick_place]         # task_id; empty = any task (episodes without a task too)
    min_score: 0.6              # the episode's quality score S (verification report)
    decided_from: 2026-12-01T00:00:00Z   # verdict time window, inclusive / exclusive
    decided_until: 2027-01-01T00:00:00Z
    miners: []                  # only these miners; empty = every miner
    exclude_miners: []
    sources: [verdicts, xgen.clips]      # where episodes come from (default: verdicts)
    include_copies: false       # an accepted copy of an earlier upload (novelty cut its reward,
                                # copy_factor < 1) adds no new data: left out unless true

The spec is frozen when the dataset is created (its hash is in every version): a
different selection is a different dataset. ``reject_reason`` names the first rule an
episode fails, so a test or an operator can see why it was left out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kibotos.datasets.episode import Episode
from kibotos.errors import KibotosError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SOURCES = ("verdicts", "xgen.clips")


class SpecError(KibotosError):
    reason_code = "dataset_spec_invalid"


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    robots: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)
    decided_from: dt.datetime | None = None
    decided_until: dt.datetime | None = None
    miners: tuple[str, ...] = ()
    exclude_miners: tuple[str, ...] = ()
    sources: tuple[str, ...] = ("verdicts",)
    include_copies: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"dataset name {v!r} must match {NAME_RE.pattern}")
        return v

    @field_validator("decided_from", "decided_until")
    @classmethod
    def _utc(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        return v

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in v if s not in SOURCES]
        if unknown or not v:
            raise ValueError(f"unknown source(s) {unknown or list(v)}; known: {', '.join(SOURCES)}")
        return tuple(dict.fromkeys(v))

    @model_validator(mode="after")
    def _window(self) -> "DatasetSpec":
        if self.decided_from and self.decided_until and self.decided_until <= self.decided_from:
            raise ValueError("decided_until must be after decided_from")
        return self

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def reject_reason(self, ep: Episode) -> str | None:
        """None when ``ep`` belongs in the dataset, else why not (a reason code)."""
        if ep.source not in self.sources:
            return "source_not_selected"
        if self.robots and ep.robot_model_id not in self.robots:
            return "robot_not_selected"
        if self.tasks and ep.task_id not in self.tasks:
            return "task_not_selected"
        if (ep.score is None and self.min_score > 0) or (ep.score is not None and ep.score < self.min_score):
            return "score_below_minimum"
        when = dt.datetime.fromtimestamp(ep.decided_at / 1000, tz=dt.UTC)
        if (self.decided_from and when < self.decided_from) or (self.decided_until and when >= self.decided_until):
            return "decided_outside_window"
        if (self.miners and ep.miner_id not in self.miners) or ep.miner_id in self.exclude_miners:
            return "miner_not_selected"
        if ep.copy_factor < 1.0 and not self.include_copies:
            return "copy_of_earlier_upload"
        return None


def parse_spec(raw) -> DatasetSpec:
    try:
        return DatasetSpec.model_validate(raw)
    except Exception as exc:
        raise SpecError(f"invalid dataset spec: {exc}") from exc


def load_spec(path: Path | str) -> DatasetSpec:
    """A spec from a YAML or JSON file (JSON is YAML)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read dataset spec {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"dataset spec {path} must be a mapping, got {type(raw).__name__}")
    return parse_spec(raw)
