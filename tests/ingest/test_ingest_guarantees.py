"""Ingest guarantees against an adversarial client (issue 12), on real services: a signed
upload request is single-use; a rejection by the ingest checks judges one upload
attempt and never becomes (or pre-empts) the verdict of the submission its owner
uploads; ``--wait`` waits for its own upload's verdict; a stuck submission is resumed
by its re-upload, a decided one is still refused."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from kibotos.identity import BundleSignature, sidecar_path, upload_request_message
from tests.fixtures.ingest import close_env, keypair, make_env

ALICE, EVE = keypair("alice"), keypair("eve")


def _sidecar(path) -> dict:
    return BundleSignature.model_validate_json(sidecar_path(path).read_text()).model_dump(mode="json")


def _signed_request(who, path, sid: str, at: int | None = None) -> dict:
    size, digest = path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()
    at = at if at is not None else int(time.time() * 1000)
    return {"miner_id": who.miner_id, "submission_id": sid, "size_bytes": size, "sha256": digest,
            "requested_at_ms": at, "signature": who.sign(upload_request_message(who.miner_id, sid, size, digest, at))}


@pytest.mark.ingest_settings(ingest_rate_per_minute=1, ingest_rate_burst=2)
def test_a_captured_signed_request_is_single_use(ingest, signed, chdb_client, tansu, catalogue):
    path = signed.write(ALICE)
    sid = _sidecar(path)["submission_id"]
    captured = _signed_request(ALICE, path, sid)
    answers = [httpx.post(ingest.url + "/v1/uploads", json=captured) for _ in range(6)]
    assert [a.status_code for a in answers] == [201] + [409] * 5
    grant = answers[0].json()
    for replay in answers[1:]:
        body = replay.json()
        assert body["reason_code"] == "request_replayed" and "ticket" not in body
        assert body["details"]["upload_id"] == grant["upload_id"]
    # the replays spent none of alice's two tokens: one fresh request still passes, the next is throttled
    ingest.client.request_upload(ALICE, path, sid)
    throttled = httpx.post(ingest.url + "/v1/uploads", json=_signed_request(ALICE, path, sid))
    assert (throttled.status_code, throttled.json()["reason_code"]) == (429, "rate_limited")
    # the grant the first copy got still works: exactly one upload comes of the request
    ingest.client.put(grant, path)
    assert ingest.client.complete(grant, _sidecar(path))["status"] == "accepted"
    assert ingest.received_count() == 1
    # the rule lives in the store, not in the process: a fresh ingest service (a restart,
    # or another replica) over the same store refuses the copy too
    restarted = make_env(ingest.settings, chdb_client, tansu, catalogue)
    try:
        again = httpx.post(restarted.url + "/v1/uploads", json=captured)
        assert (again.status_code, again.json()["reason_code"]) == (409, "request_replayed")
    finally:
        close_env(restarted)


def test_a_v1_verdict_already_on_a_topic_reads_with_no_upload_id(tmp_path):
    """verdict v2 appended upload_id: records written by v1 writers stay readable (and v1
    readers skip the new field)."""
    import shutil

    from schemas_avro import SCHEMA_DIR
    from tests.fixtures.events import EVENT_FACTORIES
    from topics.serializers import AvroSerializer

    (tmp_path / "history").mkdir()
    shutil.copy(SCHEMA_DIR / "history" / "verdict.v1.avsc", tmp_path / "verdict.avsc")
    v1, current = AvroSerializer("verdict", schema_root=tmp_path), AvroSerializer("verdict")
    assert v1.version == 1 and current.version >= 2
    old = {k: v for k, v in EVENT_FACTORIES["verdict"]().items() if k in {f["name"] for f in v1.schema["fields"]}}
    assert current.loads(v1.dumps(old))["upload_id"] is None
    new = {**EVENT_FACTORIES["verdict"](), "upload_id": "u-1"}
    assert v1.loads(current.dumps(new))["submission_id"] == new["submission_id"]


# --- a rejected upload attempt is not the submission's verdict --------------------------

def _forged(path) -> dict:
    """Alice's sidecar with eve's signature over it: what eve can make of a captured bundle."""
    doc = _sidecar(path)
    doc["signature"] = EVE.sign(BundleSignature.model_validate(doc).message())
    return doc


def _final_verdict(sid: str, miner: str, bundle_uri: str, verdict: str = "accepted") -> dict:
    """The verdict the gates would publish on a submission (the gate workers do not run here)."""
    from kibotos.reports.model import VerificationReport

    rep = VerificationReport(submission_id=sid, miner_id=miner, verdict=verdict, gates=[], points=7.0,
                             config_version="gates-test")
    return {"submission_id": sid, "miner_id": miner, "verdict": verdict, "reason_code": None, "failed_gate": None,
            "config_version": "gates-test", "decided_at": int(time.time() * 1000), "points": 7.0,
            "report_json": rep.model_dump_json(), "bundle_uri": bundle_uri}


class Sink:
    """The real ClickHouse sink over the test's topics and store, polled on demand."""

    def __init__(self, env):
        import uuid

        from streams.sink import ClickHouseSink

        self.env = env
        self.sink = ClickHouseSink(env.service.client, env.catalogue, env.bootstrap, f"t-sink-{uuid.uuid4().hex[:8]}",
                                   flush_interval_s=0.2)

    def until(self, done, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the sink did not write the expected rows"
            self.sink.poll_once()

    def count(self, table: str, sid: str) -> int:
        return self.env.service.client.query(f"SELECT count() FROM kibotos.{table} FINAL WHERE submission_id = "
                                             "{sid:String}", parameters={"sid": sid}).result_rows[0][0]

    def close(self) -> None:
        self.sink.close()


def test_an_attackers_rejected_uploads_never_become_the_victims_verdict(ingest, signed):
    from kibotos import warehouse
    from kibotos.errors import ServiceError
    from kibotos.ingest.client import IngestRefused

    path = signed.write(ALICE)
    sid = _sidecar(path)["submission_id"]
    # eve captured alice's bundle and submission id: two uploads under it, refused at ingestion
    eve_uploads = []
    for _ in range(2):
        grant, refused = ingest.submit(path, EVE, _forged(path))
        assert isinstance(refused, IngestRefused) and refused.status == 422, refused
        eve_uploads.append(grant["upload_id"])
    # ... and published as verdicts on those attempts, keyed by their upload ids
    attempts = ingest.verdicts(2)
    assert sorted(v["upload_id"] for v in attempts) == sorted(eve_uploads)
    assert all(v["submission_id"] == sid and v["failed_gate"] == "ingest_integrity" for v in attempts)
    # alice's own upload of her submission is accepted all the same
    mine = ingest.client.submit(path, ALICE)
    assert mine.accepted and mine.upload_id not in eve_uploads
    sink = Sink(ingest)
    try:
        sink.until(lambda: sink.count("upload_verdicts", sid) == 2)
        assert sink.count("verification_reports", sid) == 0 and sink.count("gate_results", sid) == 0
        # alice sees her submission pending, never eve's rejection
        assert ingest.client.upload_status(mine.upload_id)["status"] == "verification_pending"
        with pytest.raises(IngestRefused) as exc:
            ingest.client.fetch_report(sid)
        assert (exc.value.status, exc.value.reason_code) == (404, "verification_pending")
        with pytest.raises(ServiceError, match="no verdict for upload"):
            ingest.client.wait_upload(mine.upload_id, timeout_s=1.0, poll_s=0.2)
        # the gates decide: that verdict is alice's, whatever the order of the decisions
        [received] = ingest.received(1)
        ingest.service.emitter.emit(ingest.catalogue.verdicts, _final_verdict(sid, ALICE.miner_id,
                                                                              received["bundle_uri"]))
        sink.until(lambda: sink.count("verification_reports", sid) == 1)
    finally:
        sink.close()
    own = ingest.client.wait_upload(mine.upload_id, timeout_s=10)
    assert (own["status"], own["verdict"], own["points"]) == ("decided", "accepted", 7.0)
    rep = ingest.client.report(sid)
    assert rep["verdict"] == "accepted" and rep["upload_id"] == mine.upload_id and rep["final"] is True
    assert rep["ingest"]["upload_id"] == mine.upload_id and rep["ingest"]["status"] == "accepted"
    assert warehouse.get_report(ingest.service.client, sid)["verdict"] == "accepted"
    # eve's attempts keep their own verdicts, as attempts
    for upload_id in eve_uploads:
        theirs = ingest.client.upload_status(upload_id)
        assert (theirs["status"], theirs["miner_id"]) == ("rejected", EVE.miner_id)
        assert theirs["report"]["final"] is False and theirs["report"]["upload_id"] == upload_id


def test_attempt_verdicts_are_stored_apart_from_submission_verdicts(chdb_client):
    """Pure routing and read precedence (no broker): an attempt rejection, even decided
    after the submission's verdict, never replaces it; alone it reads as not final."""
    from kibotos import warehouse
    from kibotos.reports.model import GateResult, VerificationReport
    from streams.sink_rows import TABLE_COLUMNS, rows_for

    def store(event):
        for table, row in rows_for("verdicts", event):
            cols = list(TABLE_COLUMNS[table])
            chdb_client.insert(f"kibotos.{table}", [[row[c] for c in cols]], column_names=cols)

    sid, now = "11111111-2222-4333-8444-555555555555", int(time.time() * 1000)
    attempt_rep = VerificationReport(submission_id=sid, miner_id="eve", verdict="rejected",
                                     reason_code="signature_invalid", failed_gate="ingest_integrity",
                                     config_version="gates-test", gates=[GateResult(gate="ingest_integrity", passed=False,
                                                       reason_code="signature_invalid")])
    attempt = {**_final_verdict(sid, "eve", f"file:///x/incoming/{sid}/up-1.zarr.zip", "rejected"),
               "reason_code": "signature_invalid", "failed_gate": "ingest_integrity", "points": 0.0,
               "report_json": attempt_rep.model_dump_json(), "upload_id": "up-1", "decided_at": now}
    assert [t for t, _ in rows_for("verdicts", attempt)] == ["upload_verdicts"]
    store(attempt)
    alone = warehouse.get_report(chdb_client, sid)
    assert (alone["final"], alone["upload_id"], alone["reason_code"]) == (False, "up-1", "signature_invalid")
    assert warehouse.get_report(chdb_client, sid, attempts=False) is None
    store(_final_verdict(sid, "alice", f"file:///x/bundles/{sid}/up-2.zarr.zip") | {"decided_at": now - 5000})
    # a verdict written before v2 (no upload_id) is still an attempt, keyed by its object's name
    store({k: v for k, v in attempt.items() if k != "upload_id"} | {
        "bundle_uri": f"file:///x/incoming/{sid}/up-3.zarr.zip", "decided_at": now + 5000})
    final = warehouse.get_report(chdb_client, sid)
    assert (final["final"], final["verdict"], final["miner_id"]) == (True, "accepted", "alice")
    assert [a["upload_id"] for a in warehouse.upload_verdicts(chdb_client, sid)] == ["up-1", "up-3"]
    assert warehouse.gate_results(chdb_client, sid) == []  # attempts add no gate rows to the submission


# --- --wait waits for its own upload's verdict ----------------------------------------------

def test_miner_submit_wait_prints_its_own_verdict_not_an_attackers(ingest, signed, tmp_path):
    import threading

    from typer.testing import CliRunner

    from kibotos.cli.main import app

    key = ALICE.save(tmp_path / "alice.json")
    path = signed.write(ALICE)
    sid = _sidecar(path)["submission_id"]
    _, refused = ingest.submit(path, EVE, _forged(path))  # eve got there first
    assert refused.status == 422
    sink = Sink(ingest)
    failures: list[BaseException] = []

    def gates() -> None:  # stands in for the gate workers: alice's verdict comes a while later
        try:
            [received] = ingest.received(1, timeout=60)
            sink.until(lambda: sink.count("upload_verdicts", sid) == 1)  # eve's rejection is readable first
            time.sleep(1.5)
            ingest.service.emitter.emit(ingest.catalogue.verdicts,
                                        _final_verdict(sid, ALICE.miner_id, received["bundle_uri"]))
            sink.until(lambda: sink.count("verification_reports", sid) == 1)
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    worker = threading.Thread(target=gates)
    worker.start()
    try:
        out = CliRunner().invoke(app, ["miner", "submit", str(path), "-k", str(key), "--api", ingest.url, "--wait",
                                       "--timeout", "60"], catch_exceptions=False)
    finally:
        worker.join(90)
        sink.close()
    assert not failures, failures
    assert out.exit_code == 0, out.stdout
    assert f"{sid}  verdict accepted" in out.stdout and "points 7" in out.stdout
    assert "signature_invalid" not in out.stdout and "rejected" not in out.stdout


# --- a stuck submission is resumed by its re-upload --------------------------------------

@pytest.mark.ingest_settings(ingest_resume_after_s=3)
def test_reupload_of_a_stuck_submission_resumes_it_and_a_decided_one_is_refused(ingest, signed):
    path = signed.write(ALICE)
    sid = _sidecar(path)["submission_id"]
    first = ingest.client.submit(path, ALICE)
    assert first.accepted and not first.resumed
    # still within the bound: a re-upload is a replay
    again = ingest.client.submit(path, ALICE)
    assert (again.status, again.reason_code) == (409, "bundle_replayed") and "resumes it" in again.detail
    time.sleep(3.2)
    # stuck: nothing decided it. Only its owner's upload of the same bytes resumes it
    eve = ingest.client.submit(path, EVE, signature=BundleSignature.model_validate(_sidecar(path)))
    assert (eve.status, eve.reason_code) == (409, "bundle_replayed")
    other = signed.write(ALICE, manifest={"submission_id": sid})
    assert (ingest.client.submit(other, ALICE).reason_code) == "bundle_replayed"
    # the accepted copy was lost from the store: the re-upload's bytes take its place
    store = ingest.service.store
    [stored] = [o.key for o in store.list("bundles/")]
    store.delete(stored)
    resumed = ingest.client.submit(path, ALICE)
    assert resumed.accepted and resumed.resumed and resumed.upload_id != first.upload_id
    # the bound starts again from the resume
    assert ingest.client.submit(path, ALICE).reason_code == "bundle_replayed"
    assert [o.key for o in store.list("bundles/")] == [stored] and list(store.list("incoming/")) == []
    # the stored claim-check event went out again, unchanged: the same submission, bundle and time
    assert ingest.received_count() == 2
    original, repeat = ingest.received(2)
    assert repeat == original
    assert original["robot_model_id"] == signed.base.manifest["robot_model_id"]
    # stuck again, the stored copy in place: resumed again, the new bytes are not kept
    time.sleep(3.2)
    assert ingest.client.submit(path, ALICE).resumed
    assert [o.key for o in store.list("bundles/")] == [stored] and list(store.list("incoming/")) == []
    assert ingest.received_count() == 3
    # decided: a re-upload is refused for good, and both uploads point at that verdict
    sink = Sink(ingest)
    try:
        ingest.service.emitter.emit(ingest.catalogue.verdicts,
                                    _final_verdict(sid, ALICE.miner_id, original["bundle_uri"]))
        sink.until(lambda: sink.count("verification_reports", sid) == 1)
    finally:
        sink.close()
    time.sleep(3.2)
    decided = ingest.client.submit(path, ALICE)
    assert (decided.status, decided.reason_code) == (409, "bundle_replayed")
    assert ingest.received_count() == 3
    for upload_id in (first.upload_id, resumed.upload_id):
        assert ingest.client.upload_status(upload_id)["verdict"] == "accepted"


def test_miner_report_lists_rejected_attempts_without_calling_them_a_verdict(ingest, signed):
    from typer.testing import CliRunner

    from kibotos.cli.main import app

    path = signed.write(ALICE)
    sid = _sidecar(path)["submission_id"]
    grant, refused = ingest.submit(path, EVE, _forged(path))
    assert refused.status == 422
    out = CliRunner().invoke(app, ["miner", "report", sid, "--api", ingest.url], catch_exceptions=False)
    said = " ".join(out.stderr.split())  # the console wraps long lines
    assert out.exit_code == 1 and "report_not_found" in said
    assert f"upload {grant['upload_id']} by {EVE.miner_id} rejected at ingestion: [signature_invalid]" in said
    assert "verdict" not in out.stdout
