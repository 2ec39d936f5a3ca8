"""Reading the versioned YAML config files (gates, scoring, novelty, alignment): one way
to read a file and one way to validate it, each failure a ``ConfigError`` naming the
config and the reason."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

from kibotos.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path | str, what: str) -> Any:
    """The parsed YAML of ``path``; ``what`` names the config in the error."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {what} config {path}: {exc}") from exc


def validate(model: type[M], raw: Any, what: str) -> M:
    """``raw`` (left untouched) validated as ``model``."""
    try:
        return model.model_validate(copy.deepcopy(raw))
    except Exception as exc:
        raise ConfigError(f"invalid {what} config: {exc}") from exc


def load_config(model: type[M], path: Path | str | None, what: str) -> M:
    """The ``what`` config at ``path`` (default: the packaged ``kibotos/config/<what>.yaml``)
    validated as ``model``: the one loader every versioned config goes through."""
    from kibotos.config import CONFIG_DIR

    path = Path(path) if path else CONFIG_DIR / f"{what}.yaml"
    raw = read_yaml(path, what)
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid {what} config {path}: it is not a mapping")
    return validate(model, raw, what)
