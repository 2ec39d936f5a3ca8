"""Avro schemas of every Kibotos event, one ``.avsc`` file per event.

Layout::

    schemas_avro/
    ├── <event>.avsc               the current version of each event
    └── history/
        └── <event>.v<N>.avsc      every older version still readable from topics

A schema states its own version: the default of its leading ``schema_version`` field.
``SCHEMA_VERSIONS`` is read from the files, so bumping an event is one edit: move the
current file to ``history/<event>.v<N>.avsc``, then append fields (with defaults) to
``<event>.avsc`` and raise its ``schema_version`` default. The evolution rules and the
wire format live in ``topics/serializers.py``.

Timestamps (``*_at``) are epoch milliseconds, annotated ``timestamp-millis`` for other
readers; Kibotos itself reads and writes them as plain ints.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from kibotos.errors import SerializationError

SCHEMA_DIR = Path(__file__).resolve().parent


def _without_logical_types(node: Any) -> Any:
    """Drop ``logicalType`` annotations so fastavro keeps ints as ints on read."""
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def _declared_version(raw: dict, path: Path) -> int:
    fields = raw.get("fields") or []
    if not fields or fields[0].get("name") != "schema_version" or not isinstance(fields[0].get("default"), int):
        raise SerializationError(f"{path}: the first field must be 'schema_version' with an int default")
    return fields[0]["default"]


@cache
def _read(path: Path) -> tuple[int, dict]:
    raw = json.loads(path.read_text())
    return _declared_version(raw, path), raw


def schema_versions(root: Path = SCHEMA_DIR) -> dict[str, int]:
    """``{event: current version}`` for every ``<event>.avsc`` directly under ``root``."""
    return {p.stem: _read(p.resolve())[0] for p in sorted(Path(root).glob("*.avsc"))}


def available_versions(name: str, root: Path = SCHEMA_DIR) -> list[int]:
    """Every version of ``name`` that can be decoded: the history files and the current one."""
    root = Path(root)
    current = _current_path(name, root)
    older = [int(p.name.rsplit(".v", 1)[1].removesuffix(".avsc")) for p in root.glob(f"history/{name}.v*.avsc")]
    return sorted({*older, _read(current)[0]})


def _current_path(name: str, root: Path) -> Path:
    path = (root / f"{name}.avsc").resolve()
    if not path.is_file():
        known = ", ".join(schema_versions(root)) or "none"
        raise SerializationError(f"unknown event {name!r}; known events: {known}")
    return path


@cache
def _load(name: str, version: int | None, root: Path) -> dict:
    current = _current_path(name, root)
    current_version, raw = _read(current)
    if version is not None and version != current_version:
        path = (root / "history" / f"{name}.v{version}.avsc").resolve()
        if not path.is_file():
            raise SerializationError(
                f"no schema for {name} v{version}; available: {available_versions(name, root)}"
            )
        declared, raw = _read(path)
        if declared != version:
            raise SerializationError(f"{path} declares schema_version {declared}, expected {version}")
    parsed = fastavro.parse_schema(_without_logical_types(raw))
    if not isinstance(parsed, dict):  # every event is an Avro record
        raise SerializationError(f"schema {name} is not a record schema")
    return parsed


def load_schema(name: str, version: int | None = None, *, root: Path = SCHEMA_DIR) -> dict:
    """Parsed fastavro schema of event ``name`` at ``version`` (default: the current one).

    :param root: schema directory; tests point it at synthetic schema sets.
    :raises SerializationError: unknown event or version.
    """
    return _load(name, version, Path(root).resolve())


SCHEMA_VERSIONS: dict[str, int] = schema_versions()
