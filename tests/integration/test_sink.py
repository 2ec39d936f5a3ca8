"""The ClickHouse sink end to end: real Tansu broker, real chdb, real consumer groups."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Producer

from kibotos.errors import ServiceError
from kibotos.warehouse import balances, gate_results, get_report, ledger_entries
from streams.sink import ClickHouseSink
from tests.fixtures.events import dead_letter, ledger_entry, report, submission_received, verdict

pytestmark = pytest.mark.integration


def produce(bootstrap, spec, *records):
    producer = Producer({"bootstrap.servers": bootstrap})
    for record in records:
        value = record if isinstance(record, bytes) else spec.serialize(record)
        key = b"garbage" if isinstance(record, bytes) else spec.key(record)
        producer.produce(spec.name, key=key, value=value)
    assert producer.flush(10) == 0


def pump(sink, until, timeout=30.0):
    """poll_once until ``until()`` holds (a group join alone takes ~3 s on Tansu)."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"timed out; sink wrote {dict(sink.rows_written)}"
        sink.poll_once()


def count(client, table, final=False):
    return client.query(f"SELECT count() FROM kibotos.{table}{' FINAL' if final else ''}").result_rows[0][0]


@pytest.fixture
def make_sink(tansu, catalogue, chdb_client):
    sinks = []

    def make(**kwargs):
        kwargs.setdefault("flush_interval_s", 0.2)
        sink = ClickHouseSink(chdb_client, catalogue, tansu.bootstrap, f"{catalogue.prefix}kibotos-sink", **kwargs)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def test_every_topic_lands_in_its_table(tansu, catalogue, chdb_client, make_sink):
    sub = submission_received(miner_id="alice")
    rep = report(sub["submission_id"], miner_id="alice", gates=["A", "B", "C", "D"])
    produce(tansu.bootstrap, catalogue.submissions_received, sub)
    produce(tansu.bootstrap, catalogue.verdicts, verdict(rep))
    produce(tansu.bootstrap, catalogue.ledger_entries, ledger_entry(sub["submission_id"], "alice", 10.0))
    produce(tansu.bootstrap, catalogue.dead_letters, dead_letter())
    sink = make_sink()
    pump(sink, lambda: sink.records_consumed >= 4)

    assert dict(sink.rows_written) == {
        "submissions": 1, "verification_reports": 1, "gate_results": 4, "points_ledger": 1, "dead_letters": 1,
    }
    stored = get_report(chdb_client, sub["submission_id"])
    assert stored["verdict"] == "accepted" and stored["points"] == 10.0 and len(stored["gates"]) == 4
    assert [g["gate"] for g in gate_results(chdb_client, sub["submission_id"])] == ["A", "B", "C", "D"]
    assert balances(chdb_client) == [{"miner_id": "alice", "points": 10.0, "entries": 1}]
    [row] = chdb_client.query(
        "SELECT processor_id, error_code, key, payload FROM kibotos.dead_letters",
        column_formats={"key": "bytes", "payload": "bytes"},
    ).result_rows
    assert row == ("gate-a", "bundle_malformed", b"sub-1", b"\x00\xffgarbage")
    assert count(chdb_client, "submissions") == 1


def test_redelivered_verdict_and_entry_are_stored_once(tansu, catalogue, chdb_client, make_sink):
    rep = report("sub-dup", miner_id="bob", points=10.0)
    the_verdict, the_entry = verdict(rep), ledger_entry("sub-dup", "bob", 10.0)
    other_entry = ledger_entry("sub-other", "bob", 2.5)
    produce(tansu.bootstrap, catalogue.verdicts, the_verdict)
    produce(tansu.bootstrap, catalogue.ledger_entries, the_entry, other_entry)
    sink = make_sink()
    pump(sink, lambda: sink.records_consumed >= 3)
    # the same effects again, as after a crash before commit upstream
    produce(tansu.bootstrap, catalogue.verdicts, the_verdict)
    produce(tansu.bootstrap, catalogue.ledger_entries, the_entry)
    pump(sink, lambda: sink.records_consumed >= 5)

    assert sink.rows_written["points_ledger"] == 3 and sink.rows_written["verification_reports"] == 2
    assert count(chdb_client, "verification_reports", final=True) == 1
    assert count(chdb_client, "gate_results", final=True) == 3
    assert len(ledger_entries(chdb_client, "bob")) == 2
    assert balances(chdb_client) == [{"miner_id": "bob", "points": 12.5, "entries": 2}]
    assert get_report(chdb_client, "sub-dup")["verdict"] == "accepted"


def test_garbage_is_dead_lettered_and_later_records_still_land(tansu, catalogue, chdb_client, make_sink):
    produce(tansu.bootstrap, catalogue.verdicts, b"\x00not avro at all")
    produce(tansu.bootstrap, catalogue.verdicts, verdict(report("sub-bad-json"), report_json="{oops"))
    sink = make_sink()
    pump(sink, lambda: sink.dead_lettered >= 2)
    produce(tansu.bootstrap, catalogue.verdicts, verdict(report("sub-good")))
    produce(tansu.bootstrap, catalogue.ledger_entries, ledger_entry("sub-good", "carol", 10.0))
    pump(sink, lambda: sink.records_consumed >= 4)

    rows = chdb_client.query(
        "SELECT source_topic, processor_id, error_code, key, payload FROM kibotos.dead_letters ORDER BY error_code",
        column_formats={"key": "bytes", "payload": "bytes"},
    ).result_rows
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (catalogue.verdicts.name, "clickhouse-sink", "invalid_report"),
        (catalogue.verdicts.name, "clickhouse-sink", "undecodable_record"),
    ]
    assert rows[1][3:] == (b"garbage", b"\x00not avro at all")
    assert get_report(chdb_client, "sub-good")["verdict"] == "accepted"
    assert get_report(chdb_client, "sub-bad-json") is None
    assert balances(chdb_client) == [{"miner_id": "carol", "points": 10.0, "entries": 1}]


def test_restarted_sink_resumes_from_committed_offsets(tansu, catalogue, chdb_client, make_sink):
    first = [ledger_entry(f"sub-{i}", f"miner-{i % 3}", 1.0) for i in range(30)]
    second = [ledger_entry(f"sub-{i}", f"miner-{i % 3}", 1.0) for i in range(30, 50)]
    produce(tansu.bootstrap, catalogue.ledger_entries, *first)

    sink1 = make_sink(batch_size=7)  # several batches, several commits
    stop = threading.Event()
    worker = threading.Thread(target=sink1.run, args=(stop,))
    worker.start()
    deadline = time.monotonic() + 30
    while sink1.rows_written["points_ledger"] < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    worker.join(10)
    sink1.close()
    assert sink1.rows_written["points_ledger"] == 30 and sink1.flushes >= 5

    produce(tansu.bootstrap, catalogue.ledger_entries, *second)
    sink2 = make_sink()
    pump(sink2, lambda: sink2.records_consumed >= 20)
    assert sink2.records_consumed == 20  # nothing replayed: it started at the committed offsets
    assert count(chdb_client, "points_ledger") == 50  # and nothing lost
    assert sum(b["points"] for b in balances(chdb_client)) == 50.0


def test_failed_insert_is_retried_without_losing_the_batch(tansu, catalogue, chdb_client, make_sink):
    sink = make_sink()
    chdb_client.command("RENAME TABLE kibotos.points_ledger TO kibotos.points_ledger_away")
    produce(tansu.bootstrap, catalogue.ledger_entries, ledger_entry("sub-r", "dave", 4.0))
    deadline = time.monotonic() + 30
    with pytest.raises(ServiceError, match="insert"):
        while time.monotonic() < deadline:
            sink.poll_once()
    assert sink.insert_failures == 1 and sink.records_consumed == 0
    chdb_client.command("RENAME TABLE kibotos.points_ledger_away TO kibotos.points_ledger")
    pump(sink, lambda: sink.records_consumed >= 1)
    assert balances(chdb_client) == [{"miner_id": "dave", "points": 4.0, "entries": 1}]
