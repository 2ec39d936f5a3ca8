"""Versioned gate thresholds (``kibotos/config/gates.yaml``), per robot model overrides."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from kibotos.errors import ConfigError

DEFAULT_PATH = Path(__file__).parent / "config" / "gates.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GateAConfig(_Frozen):
    flatline_eps: float
    flatline_max_fraction: float
    vel_consistency_max_nrmse: float
    vel_consistency_abs_tol: float
    vel_consistency_window_ms: float
    max_joint_count: int


class GateBConfig(_Frozen):
    max_gap_ms: float
    max_missing_fraction: float
    max_rate_deviation: float


class GateCConfig(_Frozen):
    min_overlap_fraction: float
    max_sync_disagreement_ms: float
    high_confidence: float
    max_lag_ms: float
    grid_ms: float
    decode_width: int
    frame_count_tolerance: float


class GateDConfig(_Frozen):
    limit_margin_rad: float
    limit_margin_m: float
    max_violation_fraction: float
    degrees_ratio: float


class GateEConfig(_Frozen):
    smoothing_window_ms: float
    speed_factor: float
    acc_factor: float
    jerk_factor: float
    max_exceed_fraction: float
    teleport_min_rad: float
    teleport_vel_factor: float


class GateConfig(_Frozen):
    config_version: str
    gate_a: GateAConfig
    gate_b: GateBConfig
    gate_c: GateCConfig
    gate_d: GateDConfig
    gate_e: GateEConfig
    robots: dict[str, dict[str, dict[str, Any]]] = {}

    def for_robot(self, model_id: str, revision: str) -> "GateConfig":
        """This config with the overrides for ``model_id@revision`` merged in."""
        overrides = self.robots.get(f"{model_id}@{revision}")
        if not overrides:
            return self
        data = self.model_dump()
        for section, values in overrides.items():
            if section not in data or not isinstance(data[section], dict):
                raise ConfigError(f"override for unknown section {section!r}")
            data[section].update(values)
        return GateConfig.model_validate(data)


def parse_config(raw: dict[str, Any]) -> GateConfig:
    try:
        return GateConfig.model_validate(copy.deepcopy(raw))
    except Exception as exc:
        raise ConfigError(f"invalid gate config: {exc}") from exc


@functools.lru_cache(maxsize=8)
def load_config(path: Path | None = None) -> GateConfig:
    path = Path(path) if path else DEFAULT_PATH
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read gate config {path}: {exc}") from exc
    return parse_config(raw)
