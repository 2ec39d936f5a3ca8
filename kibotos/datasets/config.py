"""The versioned dataset config (``kibotos/config/datasets.yaml``): attribution rule,
builder cadence, card histogram."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from kibotos.config.files import read_yaml, validate

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "config" / "datasets.yaml"


class AttributionRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    points_per_episode: float = Field(ge=0)
    policy_pass_pool: float = Field(ge=0)
    min_entry_points: float = Field(ge=0)


class BuilderCadence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    publish_every_episodes: int = Field(ge=1)
    publish_every_s: float = Field(gt=0)


class CardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    score_bins: int = Field(ge=1, le=100)


class DatasetsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    config_version: str
    attribution: AttributionRule
    builder: BuilderCadence
    card: CardConfig


def load_datasets_config(path: Path | str | None = None) -> DatasetsConfig:
    return validate(DatasetsConfig, read_yaml(path or DEFAULT_PATH, "datasets"), "datasets")


@lru_cache(maxsize=1)
def default_config() -> DatasetsConfig:
    return load_datasets_config()
