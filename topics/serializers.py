"""Avro (de)serialization of event payloads, with a versioned wire format.

Wire format of every record value::

    byte 0      MAGIC (0x4B, "K"): rejects foreign payloads early (e.g. JSON, Confluent
                Schema Registry framing, which starts with 0x00)
    byte 1      schema version of the writer (1..255)
    bytes 2..   fastavro schemaless body written with that version's schema

There is no schema registry: the schemas ship with the code (``schemas_avro/``) and the
version byte names the writer schema.

Evolution rules, which make both compatibility directions work without coordination:

* new fields are only **appended at the end** of a record, each with a default;
* fields are never removed, reordered, renamed or retyped (adding an enum symbol counts
  as a retype: older readers cannot decode it);
* the old version is kept verbatim as ``schemas_avro/history/<event>.v<N>.avsc``.

A newer reader meeting an older record resolves it with the historical writer schema
(Avro schema resolution fills appended fields from their defaults). An older reader
meeting a newer record reads the prefix it knows: Avro binary is a plain sequence of
field encodings, so the appended fields are trailing bytes it ignores. The record keeps
the writer's ``schema_version`` so a consumer can tell what it was given.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fastavro
from fastavro.validation import validate

from kibotos.errors import SerializationError
from schemas_avro import SCHEMA_DIR, available_versions, load_schema, schema_versions

MAGIC = 0x4B


class AvroSerializer:
    """Encode/decode one event type; every failure is a ``SerializationError``.

    :param event_name: schema file stem in ``schemas_avro/``, e.g. ``"verdict"``.
    :param schema_root: schema directory (tests use synthetic schema sets).
    """

    def __init__(self, event_name: str, *, schema_root: Path = SCHEMA_DIR):
        self.event = event_name
        self.schema_root = Path(schema_root)
        self.schema = load_schema(event_name, root=self.schema_root)
        self.version = schema_versions(self.schema_root)[event_name]
        if not 1 <= self.version <= 255:
            raise SerializationError(f"{event_name}: schema_version {self.version} does not fit one byte")

    def __repr__(self) -> str:
        return f"AvroSerializer({self.event!r}, v{self.version})"

    def dumps(self, record: Mapping[str, Any]) -> bytes:
        """Encode ``record``; ``schema_version`` is stamped with this writer's version.

        Fields with a default may be omitted; unknown fields are an error.
        """
        if not isinstance(record, Mapping):
            raise SerializationError(f"{self.event}: expected a mapping, got {type(record).__name__}")
        # Stamped, not checked: records are often built from another event's dict.
        datum = {**record, "schema_version": self.version}
        buf = io.BytesIO()
        buf.write(bytes((MAGIC, self.version)))
        try:
            # The writer alone accepts bools and floats for longs and overflows on big
            # ints; validation gives one clear message naming the field.
            validate(datum, self.schema, raise_errors=True)
            fastavro.schemaless_writer(buf, self.schema, datum, strict_allow_default=True)
        except Exception as exc:
            raise SerializationError(f"cannot encode {self.event} v{self.version}: {exc}") from exc
        return buf.getvalue()

    def loads(self, data: bytes) -> dict[str, Any]:
        """Decode a value written by any known (or newer) version of this event."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SerializationError(f"{self.event}: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < 2:
            raise SerializationError(f"{self.event}: {len(data)}-byte value is shorter than the header")
        if data[0] != MAGIC:
            raise SerializationError(f"{self.event}: bad magic byte 0x{data[0]:02x} (expected 0x{MAGIC:02x})")
        written = data[1]
        body = io.BytesIO(data[2:])
        if written > self.version:
            writer, reader, whole = self.schema, None, False  # newer writer: read the known prefix
        elif written == self.version:
            writer, reader, whole = self.schema, None, True
        else:
            if written not in available_versions(self.event, self.schema_root):
                raise SerializationError(
                    f"{self.event}: unknown schema version {written}; "
                    f"known: {available_versions(self.event, self.schema_root)}"
                )
            writer, reader, whole = load_schema(self.event, written, root=self.schema_root), self.schema, True
        try:
            record = fastavro.schemaless_reader(body, writer, reader)
        except Exception as exc:
            raise SerializationError(f"cannot decode {self.event} v{written}: {exc!r}") from exc
        if whole and body.tell() != len(data) - 2:
            raise SerializationError(
                f"{self.event} v{written}: {len(data) - 2 - body.tell()} trailing bytes after the record"
            )
        if not isinstance(record, dict):  # a record schema decodes to a dict
            raise SerializationError(f"{self.event} v{written}: decoded a {type(record).__name__}, not a record")
        return record
