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
from tests.fixtures.ingest import close_env, ingest, keypair, make_env, signed  # noqa: F401

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
