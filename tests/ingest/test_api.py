"""The ingest API end to end on the embedded store: a real uvicorn server, a real Tansu
broker, a real chdb store. Honest uploads are accepted and emitted once stored and
verified; forged, misattributed, tampered, expired, oversized, unsigned and replayed
ones are refused with a reason code, and every refusal of a stored bundle leaves a
verdict."""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import httpx
import pytest

from kibotos.bundle.hashtree import hash_bundle
from kibotos.identity import BundleSignature, sidecar_path, sign_tree, upload_request_message
from kibotos.ingest.client import IngestRefused
from tests.fixtures.ingest import keypair

ALICE, EVE = keypair("alice"), keypair("eve")


def _sidecar(path) -> dict:
    return BundleSignature.model_validate_json(sidecar_path(path).read_text()).model_dump(mode="json")


def test_honest_upload_is_stored_verified_and_emitted(ingest, signed):
    path = signed.write(ALICE)
    sig = _sidecar(path)
    grant = ingest.client.request_upload(ALICE, path, sig["submission_id"])
    assert grant["method"] == "PUT" and grant["put_url"].startswith(ingest.url + "/v1/objects/incoming/")
    assert grant["headers"]["Content-Length"] == str(path.stat().st_size)
    ingest.client.put(grant, path)
    # stored but not completed: nothing is emitted yet
    assert ingest.received_count() == 0
    done = ingest.client.complete(grant, sig)
    assert done["status"] == "accepted" and done["submission_id"] == sig["submission_id"]
    assert done["merkle_root"] == sig["merkle_root"]
    [event] = ingest.received(1)
    assert event["submission_id"] == sig["submission_id"] and event["miner_id"] == ALICE.miner_id
    stored = ingest.service.store.local_path(event["bundle_uri"])
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == event["bundle_sha256"]
    assert f"bundles/{sig['submission_id']}/" in event["bundle_uri"]
    # the receipt holds the hash tree, the manifest hash and the submission metadata
    [receipt] = ingest.service.receipts.for_submission(sig["submission_id"])
    pub = receipt.public()
    assert pub["status"] == "accepted" and pub["manifest_sha256"] == sig["manifest_sha256"]
    assert set(pub["nodes"]) == set(sig["nodes"]) and pub["manifest"]["miner_id"] == ALICE.miner_id
    # completing again with the same ticket is idempotent (no second event)
    assert ingest.client.complete(grant, sig)["upload_id"] == done["upload_id"]
    assert ingest.received_count() == 1


def _rejected(result, reason: str) -> IngestRefused:
    grant, outcome = result
    assert isinstance(outcome, IngestRefused), outcome
    assert (outcome.status, outcome.reason_code) == (422, reason), outcome.body
    return outcome


def test_forged_signature_is_rejected_with_a_verdict(ingest, signed):
    path = signed.write(ALICE)
    doc = _sidecar(path)
    doc["signature"] = EVE.sign(BundleSignature.model_validate(doc).message())  # right message, wrong key
    refused = _rejected(ingest.submit(path, ALICE, doc), "signature_invalid")
    [verdict] = ingest.verdicts(1)
    assert verdict["submission_id"] == refused.submission_id == doc["submission_id"]
    assert (verdict["verdict"], verdict["reason_code"], verdict["failed_gate"]) == (
        "rejected", "signature_invalid", "ingest_integrity")
    assert verdict["points"] == 0
    assert ingest.received_count() == 0


def test_bundle_signed_by_another_miner_is_rejected(ingest, signed):
    # eve signs a bundle whose manifest names alice
    path = signed.write(ALICE, sign=False)
    tree = hash_bundle(path)
    from kibotos.bundle import open_bundle

    with open_bundle(path) as view:
        sid = str(view.manifest.submission_id)
    forged = sign_tree(tree, sid, EVE).model_dump(mode="json")
    _rejected(ingest.submit(path, EVE, forged), "signer_mismatch")


def test_upload_by_someone_else_than_the_signer_is_rejected(ingest, signed):
    # eve uploads alice's genuinely signed bundle as her own
    path = signed.write(ALICE)
    _rejected(ingest.submit(path, EVE), "miner_mismatch")


def test_bytes_tampered_after_signing_are_rejected_naming_the_dataset(ingest, signed):
    path = signed.write(ALICE)
    doc = _sidecar(path)
    path.unlink()
    q = signed.base.joint_pos.copy()
    q[5, 2] += 0.01
    signed.write(ALICE, name=path.name, sign=False, manifest={"submission_id": doc["submission_id"]}, joint_pos=q)
    refused = _rejected(ingest.submit(path, ALICE, doc), "hash_mismatch")
    assert refused.body["details"]["changed_nodes"] == ["kinematics/joint_pos"]


def test_unsigned_bundle_is_rejected(ingest, signed):
    _rejected(ingest.submit(signed.write(ALICE, sign=False), ALICE, None), "signature_missing")


def test_replay_of_an_accepted_bundle_is_refused_without_touching_its_verdict(ingest, signed):
    path = signed.write(ALICE)
    doc = _sidecar(path)
    # two uploads of the same bundle requested before either completes (a racing replay)
    first = ingest.client.request_upload(ALICE, path, doc["submission_id"])
    second = ingest.client.request_upload(ALICE, path, doc["submission_id"])
    for grant in (first, second):
        ingest.client.put(grant, path)
    assert ingest.client.complete(first, doc)["status"] == "accepted"
    with pytest.raises(IngestRefused) as exc:
        ingest.client.complete(second, doc)
    assert (exc.value.status, exc.value.reason_code) == (409, "bundle_replayed")
    # a later replay is refused at the upload request already
    with pytest.raises(IngestRefused) as exc:
        ingest.submit(path, ALICE)
    assert (exc.value.status, exc.value.reason_code) == (409, "bundle_replayed")
    assert ingest.verdict_count() == 0  # a replay never produces a verdict
    assert ingest.received_count() == 1
    assert [o.key for o in ingest.service.store.list("incoming/")] == []  # the duplicate was dropped


@pytest.mark.ingest_settings(ingest_url_ttl_s=1, ingest_complete_grace_s=0)
def test_expired_upload_url_and_ticket_are_refused(ingest, signed):
    path = signed.write(ALICE)
    doc = _sidecar(path)
    grant = ingest.client.request_upload(ALICE, path, doc["submission_id"])
    time.sleep(2.1)
    with pytest.raises(IngestRefused) as exc:
        ingest.client.put(grant, path)
    assert (exc.value.status, exc.value.reason_code) == (403, "url_expired")
    with pytest.raises(IngestRefused) as exc:
        ingest.client.complete(grant, doc)
    assert (exc.value.status, exc.value.reason_code) == (410, "ticket_expired")


def test_presigned_put_is_bound_to_size_content_and_key(ingest, signed):
    path = signed.write(ALICE)
    data = path.read_bytes()
    grant = ingest.client.request_upload(ALICE, path, _sidecar(path)["submission_id"])
    url, headers = grant["put_url"], grant["headers"]
    with httpx.Client() as http:
        bigger = http.put(url, content=data + b"x", headers={**headers, "Content-Length": str(len(data) + 1)})
        assert (bigger.status_code, bigger.json()["reason_code"]) == (400, "upload_size_mismatch")
        other = bytes([data[0] ^ 1]) + data[1:]
        wrong = http.put(url, content=other, headers=headers)
        assert (wrong.status_code, wrong.json()["reason_code"]) == (400, "upload_hash_mismatch")
        moved = http.put(url.replace("/incoming/", "/bundles/"), content=data, headers=headers)
        assert (moved.status_code, moved.json()["reason_code"]) == (403, "url_signature_invalid")
        resized = http.put(url.replace(f"size={len(data)}", f"size={len(data) * 2}"), content=data, headers=headers)
        assert resized.status_code == 403
        assert list(ingest.service.store.list("incoming/")) == []  # nothing half-written is visible
        ok = http.put(url, content=data, headers=headers)
        assert ok.status_code == 201 and ok.json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_upload_requests_must_be_signed_fresh_and_within_limits(ingest, signed):
    path = signed.write(ALICE)
    sid = _sidecar(path)["submission_id"]
    size, digest, now = path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest(), int(time.time() * 1000)

    def request(who=ALICE, signer=ALICE, size=size, at=now):
        body = {"miner_id": who.miner_id, "submission_id": sid, "size_bytes": size, "sha256": digest,
                "requested_at_ms": at,
                "signature": signer.sign(upload_request_message(who.miner_id, sid, size, digest, at))}
        return httpx.post(ingest.url + "/v1/uploads", json=body)

    assert request().status_code == 201
    impostor = request(signer=EVE)
    assert (impostor.status_code, impostor.json()["reason_code"]) == (401, "signature_invalid")
    stale = request(at=now - 3_600_000)
    assert (stale.status_code, stale.json()["reason_code"]) == (401, "request_expired")
    huge = request(size=ingest.settings.ingest_max_upload_bytes + 1)
    assert (huge.status_code, huge.json()["reason_code"]) == (413, "bundle_too_large")
    junk = httpx.post(ingest.url + "/v1/uploads", content=b"{not json")
    assert (junk.status_code, junk.json()["reason_code"]) == (422, "request_invalid")


@pytest.mark.ingest_settings(ingest_rate_per_minute=6, ingest_rate_burst=3)
def test_a_burst_from_one_miner_is_throttled_while_others_still_upload(ingest, signed):
    path = signed.write(ALICE)
    sid = _sidecar(path)["submission_id"]
    limit = ingest.settings.ingest_rate_burst
    statuses, retry_after = [], []
    for _ in range(10 * limit):
        try:
            ingest.client.request_upload(ALICE, path, sid)
            statuses.append(201)
        except IngestRefused as exc:
            statuses.append(exc.status)
            assert exc.reason_code == "rate_limited" and exc.body["details"]["scope"] == "miner"
            retry_after.append(exc.retry_after)
    assert statuses.count(201) == limit and statuses.count(429) == 9 * limit
    assert all(r is not None and 1 <= r <= 60 for r in retry_after)
    # bob is not affected: his whole upload goes through
    bob = keypair("bob")
    _, done = ingest.submit(signed.write(bob), bob)
    assert done["status"] == "accepted"
    assert httpx.get(ingest.url + "/v1/health").json()["status"] == "ok"


def test_report_and_ledger_endpoints(ingest, signed, chdb_client):
    path = signed.write(ALICE, sign=False)
    _, refused = ingest.submit(path, ALICE, None)
    sid = refused.submission_id
    # the sink is not running in this test: store the verdict as the sink would
    from streams.sink_rows import rows_for

    [verdict] = ingest.verdicts(1)
    for table, row in rows_for("verdicts", verdict):
        cols = list(row)
        chdb_client.insert(f"kibotos.{table}", [[row[c] for c in cols]], column_names=cols)
    # a rejected upload attempt is not the submission's verdict: the report says so and
    # names the attempt; the attempt's own status carries its verdict and report
    assert ingest.client.report(sid) is None
    with pytest.raises(IngestRefused) as exc:
        ingest.client.fetch_report(sid)
    assert (exc.value.status, exc.value.reason_code) == (404, "report_not_found")
    [attempt] = exc.value.body["details"]["rejected_uploads"]
    assert attempt["reason_code"] == "signature_missing" and attempt["miner_id"] == ALICE.miner_id
    own = ingest.client.upload_status(attempt["upload_id"])
    assert (own["status"], own["verdict"], own["reason_code"], own["failed_gate"]) == (
        "rejected", "rejected", "signature_missing", "ingest_integrity")
    assert own["report"]["upload_id"] == attempt["upload_id"] and own["report"]["final"] is False
    assert ingest.client.report(str(uuid.uuid4())) is None
    led = ingest.client.ledger(ALICE.miner_id)
    assert led == {"miner_id": ALICE.miner_id, "balance": 0.0, "entries": []}


def test_abandoned_uploads_are_swept(ingest, signed):
    path = signed.write(ALICE)
    grant = ingest.client.request_upload(ALICE, path, _sidecar(path)["submission_id"])
    ingest.client.put(grant, path)  # ... and never completed
    store = ingest.service.store
    [obj] = list(store.list("incoming/"))
    assert ingest.service.sweep_incoming() == 0  # still within its ticket's lifetime
    old = time.time() - ingest.settings.ingest_url_ttl_s - ingest.settings.ingest_complete_grace_s - 60
    os.utime(store.root / obj.key, (old, old))
    assert ingest.service.sweep_incoming() == 1 and list(store.list("incoming/")) == []


@pytest.mark.ingest_settings(ingest_rate_per_minute=120, ingest_rate_burst=1)
def test_the_client_waits_out_a_rate_limit_instead_of_losing_uploads(ingest, signed):
    paths = [signed.write(ALICE) for _ in range(3)]
    started = time.monotonic()
    outcomes = [ingest.client.submit(p, ALICE, max_wait_s=30) for p in paths]
    assert all(o.accepted for o in outcomes)
    assert time.monotonic() - started >= 0.9  # two refills of 0.5 s each were waited for
