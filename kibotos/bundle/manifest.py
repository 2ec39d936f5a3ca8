"""The manifest model: the single source of a bundle's metadata."""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kibotos.errors import BundleError

SCHEMA_VERSION = "1.0.0"

# Sane ranges of the numeric manifest fields (documented in README "Manifest ranges"):
# outside them a manifest is `manifest_invalid`. They bound what the gates compute from the
# declarations (a 1e-4 fps video "lasts" 10^7 s on the sync grid) and refuse absurd cameras.
RANGES: dict[str, tuple[float, float]] = {
    "sampling_rate_hz": (1.0, 10_000.0),
    "video.*.fps": (1.0, 1000.0),
    "video.*.frame_count": (0, 1_000_000),
    "camera.*.intrinsics.fx|fy": (1e-3, 1e6),  # pixels
    "camera.*.intrinsics.cx|cy": (-1e6, 1e6),  # pixels
    "camera.*.intrinsics.width|height": (1, 16_384),  # pixels
    "camera.*.intrinsics.distortion[k]": (-1e3, 1e3),  # at most 16 coefficients
    "camera.*.extrinsics[i][j]": (-1e4, 1e4),  # metres (translation) and rotation entries
    "sync.sync_offset_ms_claimed": (-3_600_000.0, 3_600_000.0),
}
MAX_NAME_CHARS = 128  # a joint name, a camera / video key


def _printable(name: str) -> str:
    """Names end up in reports, logs, paths and terminals: no control, format (bidi
    overrides, zero-width), surrogate, private-use, unassigned or line-separator characters."""
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise ValueError(f"names have 1 to {MAX_NAME_CHARS} characters, got {len(name)}")
    if name.isascii() and name.isprintable():  # the usual name: no character of those classes
        return name
    bad = sorted({f"U+{ord(c):04X}" for c in name if unicodedata.category(c)[0] == "C"
                  or unicodedata.category(c) in ("Zl", "Zp")})
    if bad:
        raise ValueError(f"name contains control or formatting characters {bad[:5]}")
    return name


Name = Annotated[str, AfterValidator(_printable)]

# Semantic Versioning 2.0.0 (semver.org's reference pattern): MAJOR.MINOR.PATCH, optional
# -pre-release and +build, no leading zeros
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$")


def _semver(value: str) -> str:
    if not _SEMVER.match(value):
        raise ValueError(f"not a semantic version (MAJOR.MINOR.PATCH): {value[:40]!r}")
    return value


def _iso8601(value: str) -> str:
    """An ISO 8601 date-time with a time zone (a submission's creation time must be an
    instant, not a wall-clock time of an unknown zone)."""
    if len(value) > 64 or "T" not in value.upper():
        raise ValueError(f"not an ISO 8601 date-time: {value[:40]!r}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date-time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"ISO 8601 date-time without a time zone (add Z or +00:00): {value[:40]!r}")
    return value


SemVer = Annotated[str, AfterValidator(_semver)]
IsoDateTime = Annotated[str, AfterValidator(_iso8601)]

# §2 allows camera parameters "as JSON or array". The array forms, normalized to the object
# form at parse time so every consumer reads one shape:
#   intrinsics: [fx, fy, cx, cy, width, height, distortion...]   (6 + up to 16 numbers)
#   extrinsics: 4x4 nested rows, 16 numbers row-major, or {"rotation": 3x3, "translation": [3]}
INTRINSICS_ARRAY_ORDER = ("fx", "fy", "cx", "cy", "width", "height")


def _intrinsics_from_array(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    if value and all(isinstance(row, list) for row in value):
        raise ValueError("a 3x3 intrinsic matrix does not carry the image size: give "
                         "[fx, fy, cx, cy, width, height, distortion...] or an object")
    if len(value) < len(INTRINSICS_ARRAY_ORDER):
        raise ValueError("intrinsics array is [fx, fy, cx, cy, width, height, distortion...]: "
                         f"got {len(value)} numbers")
    out: dict[str, Any] = dict(zip(INTRINSICS_ARRAY_ORDER, value))
    for key in ("width", "height"):  # 640.0 from a numeric array is an image size of 640
        if isinstance(out[key], float) and out[key].is_integer():
            out[key] = int(out[key])
    if len(value) > len(INTRINSICS_ARRAY_ORDER):
        out["distortion"] = value[len(INTRINSICS_ARRAY_ORDER):]
    return out


def _extrinsics_from_any(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"rotation", "translation"}:
            raise ValueError("extrinsics object is {rotation: 3x3, translation: [x, y, z]}")
        rot, trans = value["rotation"], value["translation"]
        if (not isinstance(rot, list) or len(rot) != 3 or any(not isinstance(r, list) or len(r) != 3 for r in rot)
                or not isinstance(trans, list) or len(trans) != 3):
            raise ValueError("extrinsics object is {rotation: 3x3, translation: [x, y, z]}")
        return [[*rot[i], trans[i]] for i in range(3)] + [[0.0, 0.0, 0.0, 1.0]]
    if isinstance(value, list) and len(value) == 16 and not any(isinstance(v, list) for v in value):
        return [value[4 * i:4 * i + 4] for i in range(4)]
    return value


def _range(key: str) -> dict:
    lo, hi = RANGES[key]
    return {"ge": lo, "le": hi}


class _Model(BaseModel):
    # extra keys are kept: newer writers may add optional metadata; NaN / Infinity never
    # validate as a number (zarr's JSON reader accepts them)
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)


class Units(_Model):
    joint_pos: str
    joint_vel: str = "rad/s"


Coefficient = Annotated[float, Field(**_range("camera.*.intrinsics.distortion[k]"))]
MatrixEntry = Annotated[float, Field(**_range("camera.*.extrinsics[i][j]"))]


class Intrinsics(_Model):
    fx: Annotated[float, Field(**_range("camera.*.intrinsics.fx|fy"))]
    fy: Annotated[float, Field(**_range("camera.*.intrinsics.fx|fy"))]
    cx: Annotated[float, Field(**_range("camera.*.intrinsics.cx|cy"))]
    cy: Annotated[float, Field(**_range("camera.*.intrinsics.cx|cy"))]
    width: Annotated[int, Field(**_range("camera.*.intrinsics.width|height"))]
    height: Annotated[int, Field(**_range("camera.*.intrinsics.width|height"))]
    distortion: list[Coefficient] | None = Field(default=None, max_length=16)


class Camera(_Model):
    intrinsics: Intrinsics
    extrinsics: list[list[MatrixEntry]]

    @model_validator(mode="before")
    @classmethod
    def _array_forms(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = dict(value)
            if "intrinsics" in value:
                value["intrinsics"] = _intrinsics_from_array(value["intrinsics"])
            if "extrinsics" in value:
                value["extrinsics"] = _extrinsics_from_any(value["extrinsics"])
        return value

    @field_validator("extrinsics")
    @classmethod
    def _four_by_four(cls, value: list[list[float]]) -> list[list[float]]:
        if len(value) != 4 or any(len(row) != 4 for row in value):
            raise ValueError("extrinsics must be a 4x4 camera-to-world matrix")
        return value


class VideoInfo(_Model):
    fps: Annotated[float, Field(**_range("video.*.fps"))]
    frame_count: Annotated[int, Field(**_range("video.*.frame_count"))]
    # what the video shows: a human demonstrator (the design's capture: human video,
    # retargeted) or the robot itself; gate F estimates human pose only for "human"
    subject: Literal["human", "robot"] = "human"


class Sync(_Model):
    sync_offset_ms_claimed: Annotated[float, Field(**_range("sync.sync_offset_ms_claimed"))]


class Task(_Model):
    task_id: str
    task_version: str


class Manifest(_Model):
    schema_version: SemVer
    bundle_version: SemVer
    submission_id: uuid.UUID
    episode_id: uuid.UUID
    miner_id: str = Field(min_length=1, max_length=128)
    created_at: IsoDateTime
    robot_model_id: str
    robot_model_revision: str
    joint_names: list[Name] = Field(min_length=1, max_length=256)
    sampling_rate_hz: Annotated[float, Field(**_range("sampling_rate_hz"))]
    time_base: str
    time_units: str
    units: Units
    camera: dict[Name, Camera]
    video: dict[Name, VideoInfo]
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
