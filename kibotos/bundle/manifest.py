"""The manifest model: the single source of a bundle's metadata."""

from __future__ import annotations

import json
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kibotos.errors import BundleError

SCHEMA_VERSION = "1.0.0"


class _Model(BaseModel):
    # extra keys are kept: newer writers may add optional metadata
    model_config = ConfigDict(extra="allow", frozen=True)


class Units(_Model):
    joint_pos: str
    joint_vel: str = "rad/s"


class Intrinsics(_Model):
    fx: float = Field(gt=0)
    fy: float = Field(gt=0)
    cx: float
    cy: float
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    distortion: list[float] | None = None


class Camera(_Model):
    intrinsics: Intrinsics
    extrinsics: list[list[float]]

    @field_validator("extrinsics")
    @classmethod
    def _four_by_four(cls, value: list[list[float]]) -> list[list[float]]:
        if len(value) != 4 or any(len(row) != 4 for row in value):
            raise ValueError("extrinsics must be a 4x4 camera-to-world matrix")
        return value


class VideoInfo(_Model):
    fps: float = Field(gt=0)
    frame_count: int = Field(ge=0)
    # what the video shows: a human demonstrator (the design's capture: human video,
    # retargeted) or the robot itself; gate F estimates human pose only for "human"
    subject: Literal["human", "robot"] = "human"


class Sync(_Model):
    sync_offset_ms_claimed: float


class Task(_Model):
    task_id: str
    task_version: str


class Manifest(_Model):
    schema_version: str
    bundle_version: str
    submission_id: uuid.UUID
    episode_id: uuid.UUID
    miner_id: str = Field(min_length=1, max_length=128)
    created_at: str
    robot_model_id: str
    robot_model_revision: str
    joint_names: list[str] = Field(min_length=1, max_length=256)
    sampling_rate_hz: float = Field(gt=0, le=10_000)
    time_base: str
    time_units: str
    units: Units
    camera: dict[str, Camera]
    video: dict[str, VideoInfo]
    sync: Sync
    task: Task | None = None

    @field_validator("camera", "video")
    @classmethod
    def _needs_primary(cls, value: dict) -> dict:
        if "primary" not in value:
            raise ValueError("a 'primary' entry is required")
        return value


REQUIRED_UNITS = {
    "time_base": "relative",
    "time_units": "ms",
    "units.joint_pos": "rad",
    "units.joint_vel": "rad/s",
}


def unit_mismatches(manifest: Manifest) -> dict[str, str]:
    """Declared units that differ from the contract: ``{path: declared}``."""
    declared = {
        "time_base": manifest.time_base,
        "time_units": manifest.time_units,
        "units.joint_pos": manifest.units.joint_pos,
        "units.joint_vel": manifest.units.joint_vel,
    }
    return {k: v for k, v in declared.items() if v != REQUIRED_UNITS[k]}


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        # two parsers may keep different copies of a duplicated key: refuse the ambiguity
        raise ValueError(f"duplicate key(s) {dupes[:5]}")
    return dict(pairs)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"non-JSON number {name}")


def parse_manifest_document(raw: bytes, max_bytes: int = 1 << 20) -> tuple[dict, Manifest]:
    """Parse the raw ``manifest/zarr.json`` of a bundle: ``(attributes, Manifest)``.

    Strict JSON (no duplicate keys, no NaN/Infinity), bounded size and nesting, a Zarr v3
    group document whose ``attributes`` object validates as a ``Manifest``.

    :raises BundleError: ``bundle_metadata_too_large``, ``manifest_missing`` (not a group
        document) or ``manifest_invalid`` (not JSON, or the attributes do not validate).
    """
    if len(raw) > max_bytes:
        raise BundleError(f"manifest/zarr.json is {len(raw)} bytes > {max_bytes}",
                          reason_code="bundle_metadata_too_large")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys,
                         parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"manifest/zarr.json is not valid JSON: {str(exc)[:200]}",
                          reason_code="manifest_invalid") from exc
    if not isinstance(doc, dict) or doc.get("node_type") != "group" or doc.get("zarr_format") != 3:
        raise BundleError("manifest/zarr.json is not a Zarr v3 group document", reason_code="manifest_missing")
    attrs = doc.get("attributes", {})
    if not isinstance(attrs, dict):
        raise BundleError("manifest attributes are not a JSON object", reason_code="manifest_invalid")
    try:
        return attrs, Manifest.model_validate(attrs)
    except (ValidationError, ValueError, TypeError, RecursionError) as exc:
        if isinstance(exc, ValidationError):
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:10])
        else:
            detail = str(exc)[:300]
        raise BundleError(detail, reason_code="manifest_invalid") from exc
