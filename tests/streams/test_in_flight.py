"""The typed in-flight event: it mirrors the schema, re-encodes what it decoded byte for
byte, and reads earlier results and the sync offset the way the evidence jobs need."""

from __future__ import annotations

import dataclasses
import json

import pytest

from kibotos.config.gates import load_config
from kibotos.errors import SerializationError
from kibotos.reports.model import GateResult
from schemas_avro import load_schema
from streams.in_flight import InFlight, InvalidEvent, in_flight_outputs, sync_offset
from streams.stage import Output, Record
from topics.catalogue import Catalogue

CAT = Catalogue(prefix="t.")
SPEC = CAT.gate_passed("a")


def event(**kw) -> dict:
    base = {"submission_id": "s-1", "miner_id": "m-1", "bundle_uri": "file:///b.zarr.zip", "bundle_sha256": "0" * 64,
            "bundle_size_bytes": 3, "received_at": 1_700_000_000_000, "robot_model_id": "ur5",
            "config_version": "gates-x", "gate_results": [], "sync": None}
    return base | kw


def test_the_model_has_exactly_the_fields_of_the_schema():
    schema_fields = [f["name"] for f in load_schema("submission_in_flight")["fields"] if f["name"] != "schema_version"]
    assert [f.name for f in dataclasses.fields(InFlight)] == schema_fields


def test_an_event_is_re_encoded_byte_for_byte_with_its_results():
    res = GateResult(gate="gate_a_integrity", passed=True, metrics={"x": 1.5, "nested": {"a": [1, None]}},
                     thresholds={"t": 2}, flags=["f"])
    data = SPEC.serialize(event(gate_results=[{"gate": "g0", "passed": True, "reason_code": None,
                                               "metrics_json": '{"b": 1,  "a": 2}', "thresholds_json": "{}",
                                               "flags": []}]))
    decoded = InFlight.decode(SPEC, data)
    assert SPEC.serialize(decoded.to_record()) == data  # an odd JSON spelling survives untouched
    after = decoded.with_result(res)
    assert after.result("gate_a_integrity") == res and after.result("g0").metrics == {"b": 1, "a": 2}
    assert [r.gate for r in after.results()] == ["g0", "gate_a_integrity"]
    # a replay replaces the stage's result instead of appending a second one
    again = after.with_result(res.model_copy(update={"passed": False, "reason_code": "r"}))
    assert [r.gate for r in again.results()] == ["g0", "gate_a_integrity"] and not again.result("gate_a_integrity").passed
    assert after.result("missing") is None


@pytest.mark.parametrize("sync, expected", [
    (None, 0.0),
    ({"claimed_offset_ms": 120.0, "estimated_offset_ms": None, "sync_confidence": None}, 120.0),
    ({"claimed_offset_ms": 120.0, "estimated_offset_ms": 80.0, "sync_confidence": 0.49}, 120.0),
    ({"claimed_offset_ms": 120.0, "estimated_offset_ms": 80.0, "sync_confidence": 0.5}, 80.0),
])
def test_sync_offset_trusts_a_confident_estimate_over_the_claim(sync, expected):
    assert InFlight.from_record(event(sync=sync)).sync_offset() == expected == sync_offset(sync)


def test_the_sync_cut_off_is_gate_cs_configured_high_confidence():
    """The cut-off is read from the gate config in use, not a second copy of it."""
    sync = {"claimed_offset_ms": 120.0, "estimated_offset_ms": 80.0, "sync_confidence": 0.6}
    assert load_config().gate_c.high_confidence <= 0.6
    assert InFlight.from_record(event(sync=sync)).sync_offset() == 80.0
    assert InFlight.from_record(event(sync=sync)).sync_offset(trusted=0.7) == 120.0
    assert sync_offset(sync, trusted=0.6) == 80.0


def test_novelty_reads_the_playback_renders_fingerprints_from_the_event():
    from streams.stages.novelty import PLAYBACK_GATE, sim_render_hashes

    playback = GateResult(gate=PLAYBACK_GATE, passed=True, thresholds={},
                          metrics={"keyframes": [{"sim_phash": "00ff00ff00ff00ff"}, {"sim_phash": "zz"},
                                                 {"frame": 3}, {"sim_phash": "0000000000000001"}]})
    ev = InFlight.from_record(event())
    assert sim_render_hashes(ev) == []  # no playback, no renders
    assert sim_render_hashes(ev.with_result(playback)) == [0x00FF00FF00FF00FF, 1]  # unreadable ones skipped


def test_undecodable_or_incomplete_events_raise_and_become_that_stages_dead_letter():
    with pytest.raises(SerializationError):
        InFlight.decode(SPEC, b"garbage")
    with pytest.raises(InvalidEvent):
        InFlight.from_record({"submission_id": "s"})
    with pytest.raises(InvalidEvent):
        InFlight.from_record(event(gate_results=[{"passed": True}]))
    called = []
    [letter] = in_flight_outputs(SPEC, Record(SPEC.name, b"garbage", b"k", 1, 7), CAT, "p",
                                 lambda e: called.append(e) or [])
    assert called == [] and letter.topic == CAT.dead_letters
    assert (letter.record["processor_id"], letter.record["source_offset"], letter.record["key"]) == ("p", 7, b"k")
    ok = in_flight_outputs(SPEC, Record(SPEC.name, SPEC.serialize(event())), CAT, "p",
                           lambda e: [Output(SPEC, e.to_record())])
    assert ok[0].record["submission_id"] == "s-1" and called == []


def test_an_unreadable_stored_result_is_none_for_readers_and_invalid_for_the_decision():
    e = InFlight.from_record(event(gate_results=[{"gate": "g", "passed": True, "metrics_json": "{not json",
                                                  "thresholds_json": "{}"}]))
    assert e.result("g") is None
    with pytest.raises(InvalidEvent):
        e.results()
    assert json.loads(e.with_result(GateResult(gate="h", passed=True)).gate_results[-1]["metrics_json"]) == {}
