"""Every event round-trips; bad input is a SerializationError; evolution works both ways."""

from __future__ import annotations

import json
import shutil

import pytest

from kibotos.errors import SerializationError
from schemas_avro import SCHEMA_DIR, SCHEMA_VERSIONS, load_schema
from tests.fixtures.events import EVENT_FACTORIES, report, submission_received, verdict
from topics.serializers import MAGIC, AvroSerializer

EVENTS = sorted(SCHEMA_VERSIONS)


def test_every_event_has_a_factory_and_every_older_version_a_history_file():
    assert set(EVENTS) == set(EVENT_FACTORIES)
    for event, version in SCHEMA_VERSIONS.items():
        assert version >= 1
        for old in range(1, version):
            assert (SCHEMA_DIR / "history" / f"{event}.v{old}.avsc").is_file(), (event, old)


def test_a_v1_ledger_entry_already_on_a_topic_reads_with_empty_score_fields(tmp_path):
    """ledger_entry v2 appended score/components/weights: records written by v1 writers stay readable."""
    (tmp_path / "history").mkdir()
    shutil.copy(SCHEMA_DIR / "history" / "ledger_entry.v1.avsc", tmp_path / "ledger_entry.avsc")
    v1, current = AvroSerializer("ledger_entry", schema_root=tmp_path), AvroSerializer("ledger_entry")
    assert (v1.version, current.version) == (1, 2)
    old = {k: v for k, v in EVENT_FACTORIES["ledger_entry"]().items()
           if k not in ("score", "components_json", "weights_json")}
    decoded = current.loads(v1.dumps(old))
    assert decoded == {**old, "schema_version": 1, "score": None, "components_json": None, "weights_json": None}


@pytest.mark.parametrize("event", EVENTS)
def test_schema_is_in_the_events_namespace_and_starts_with_schema_version(event):
    raw = json.loads((SCHEMA_DIR / f"{event}.avsc").read_text())
    assert raw["namespace"] == "kibotos.events"
    assert raw["fields"][0] == {"name": "schema_version", "type": "int", "default": SCHEMA_VERSIONS[event]}
    assert load_schema(event)["name"].startswith("kibotos.events.")


@pytest.mark.parametrize("event", EVENTS)
def test_round_trip(event):
    record = EVENT_FACTORIES[event]()
    serializer = AvroSerializer(event)
    data = serializer.dumps(record)
    assert data[:2] == bytes((MAGIC, SCHEMA_VERSIONS[event]))
    assert serializer.loads(data) == {**record, "schema_version": SCHEMA_VERSIONS[event]}


def test_optional_fields_may_be_omitted_and_read_back_as_defaults():
    record = submission_received()
    del record["robot_model_id"], record["task_id"]
    decoded = AvroSerializer("submission_received").loads(AvroSerializer("submission_received").dumps(record))
    assert decoded["robot_model_id"] is None and decoded["task_id"] is None


def test_shared_record_types_are_identical_in_every_schema():
    def named(event, type_name):
        fields = json.loads((SCHEMA_DIR / f"{event}.avsc").read_text())["fields"]
        return [f for f in fields if type_name in json.dumps(f)]

    for type_name in ("GateResultRecord", "SyncRecord"):
        assert named("submission_in_flight", type_name) == named("verification_rejected", type_name)


def test_schema_version_is_stamped_with_the_writer_version():
    record = {**submission_received(), "schema_version": 99}
    serializer = AvroSerializer("submission_received")
    assert serializer.loads(serializer.dumps(record))["schema_version"] == 1


def _without(record, field):
    return {k: v for k, v in record.items() if k != field}


GOOD_SUBMISSION = submission_received(submission_id="sub-x")
GOOD_BYTES = AvroSerializer("submission_received").dumps(GOOD_SUBMISSION)


@pytest.mark.parametrize(
    "event, record",
    [
        ("submission_received", _without(GOOD_SUBMISSION, "miner_id")),  # required field missing
        ("submission_received", {**GOOD_SUBMISSION, "surprise": 1}),  # unknown field
        ("submission_received", {**GOOD_SUBMISSION, "bundle_size_bytes": "12"}),  # str for long
        ("submission_received", {**GOOD_SUBMISSION, "bundle_size_bytes": 1.5}),  # float for long
        ("submission_received", {**GOOD_SUBMISSION, "bundle_size_bytes": True}),  # bool for long
        ("submission_received", {**GOOD_SUBMISSION, "bundle_size_bytes": 2**70}),  # long overflow
        ("submission_received", {**GOOD_SUBMISSION, "submission_id": None}),  # null for string
        ("submission_received", [("submission_id", "x")]),  # not a mapping
        ("verdict", verdict(report("sub-1"), verdict="maybe")),  # not an enum symbol
        ("submission_in_flight", {**EVENT_FACTORIES["submission_in_flight"](), "gate_results": [{"gate": "A"}]}),
        ("dead_letter", EVENT_FACTORIES["dead_letter"](payload="text, not bytes")),
    ],
    ids=[
        "missing-field", "unknown-field", "str-for-long", "float-for-long", "bool-for-long", "long-overflow",
        "null-for-string", "not-a-mapping", "bad-enum", "incomplete-nested-record", "str-for-bytes",
    ],
)
def test_dumps_rejects_bad_records(event, record):
    with pytest.raises(SerializationError) as info:
        AvroSerializer(event).dumps(record)
    assert info.value.reason_code == "undecodable_record"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes((MAGIC,)),
        b"\x00" + GOOD_BYTES[1:],  # Confluent-style framing / wrong magic
        b'{"submission_id": "x"}',  # JSON
        bytes((MAGIC, 0)) + GOOD_BYTES[2:],  # version 0 does not exist
        GOOD_BYTES[:-5],  # truncated
        GOOD_BYTES + b"\x00\x01",  # trailing garbage
        bytes((MAGIC, 1)) + b"\xff" * 12,  # varint overflow
        "a str, not bytes",
        None,
    ],
    ids=["empty", "magic-only", "wrong-magic", "json", "unknown-version", "truncated", "trailing-bytes",
         "garbage-body", "str", "none"],
)
def test_loads_rejects_bad_bytes(data):
    with pytest.raises(SerializationError):
        AvroSerializer("submission_received").loads(data)


def test_errors_chain_the_underlying_exception():
    with pytest.raises(SerializationError) as info:
        AvroSerializer("submission_received").loads(GOOD_BYTES[:-5])
    assert info.value.__cause__ is not None


def test_unknown_event_lists_the_known_ones():
    with pytest.raises(SerializationError, match="verdict"):
        AvroSerializer("no_such_event")


@pytest.fixture
def v2_schemas(tmp_path):
    """A synthetic v2 of submission_received: one field appended, v1 moved to history/."""
    (tmp_path / "history").mkdir()
    shutil.copy(SCHEMA_DIR / "submission_received.avsc", tmp_path / "history" / "submission_received.v1.avsc")
    raw = json.loads((SCHEMA_DIR / "submission_received.avsc").read_text())
    raw["fields"][0]["default"] = 2
    raw["fields"].append({"name": "priority", "type": "int", "default": 0})
    (tmp_path / "submission_received.avsc").write_text(json.dumps(raw))
    return tmp_path


def test_newer_reader_resolves_an_older_record_with_the_historical_schema(v2_schemas):
    old, new = AvroSerializer("submission_received"), AvroSerializer("submission_received", schema_root=v2_schemas)
    assert (old.version, new.version) == (1, 2)
    decoded = new.loads(old.dumps(GOOD_SUBMISSION))
    assert decoded == {**GOOD_SUBMISSION, "schema_version": 1, "priority": 0}


def test_older_reader_reads_the_known_prefix_of_a_newer_record(v2_schemas):
    old, new = AvroSerializer("submission_received"), AvroSerializer("submission_received", schema_root=v2_schemas)
    data = new.dumps({**GOOD_SUBMISSION, "priority": 7})
    assert data[1] == 2
    assert old.loads(data) == {**GOOD_SUBMISSION, "schema_version": 2}
    assert new.loads(data) == {**GOOD_SUBMISSION, "schema_version": 2, "priority": 7}


def test_a_version_without_history_file_is_unknown(v2_schemas):
    (v2_schemas / "history" / "submission_received.v1.avsc").unlink()
    new = AvroSerializer("submission_received", schema_root=v2_schemas)
    with pytest.raises(SerializationError, match="unknown schema version 1"):
        new.loads(GOOD_BYTES)


def test_a_v2_verdict_reads_as_a_first_decision_without_an_event_id(tmp_path):
    """verdict v3 appended event_id / event_type / revision: v2 records stay readable."""
    (tmp_path / "history").mkdir()
    shutil.copy(SCHEMA_DIR / "history" / "verdict.v2.avsc", tmp_path / "verdict.avsc")
    shutil.copy(SCHEMA_DIR / "history" / "verdict.v1.avsc", tmp_path / "history" / "verdict.v1.avsc")
    v2, current = AvroSerializer("verdict", schema_root=tmp_path), AvroSerializer("verdict")
    assert (v2.version, current.version) == (2, 3)
    old = {k: v for k, v in EVENT_FACTORIES["verdict"]().items() if k not in ("event_id", "event_type", "revision")}
    decoded = current.loads(v2.dumps(old))
    assert decoded == {**old, "schema_version": 2, "event_id": None, "event_type": "decision", "revision": 0}
    # and a v2 reader reads a v3 record's prefix
    assert v2.loads(current.dumps(EVENT_FACTORIES["verdict"]()))["submission_id"] == old["submission_id"]
