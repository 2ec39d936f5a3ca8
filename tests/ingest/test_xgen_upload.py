"""XGen sources through the ingest API (real uvicorn server, Tansu broker, chdb): a signed,
presigned, single-use upload becomes one ``xgen.requests`` event; forged, swapped,
replayed, tampered and cross-used uploads are refused with a reason code."""

from __future__ import annotations

import hashlib
import time
import uuid

import numpy as np
import pytest

from kibotos.ingest.client import IngestRefused
from kibotos.ingest.xgen import XGenClient, canonical_annotation, xgen_request_message
from tests.fixtures.ingest import keypair, read_topic, topic_count

ALICE, EVE = keypair("alice"), keypair("eve")
ANNOTATION = {"ts": 1.0, "te": 2.5, "anchor": "both_palms", "key_bodies": ["left_palm", "right_palm"]}


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "pickup.npz"
    np.savez(path, keypoints=np.zeros((10, 33, 3)), fps=np.float64(30.0))
    return path


def signed_request(who, path, rid, *, claim=None, annotation=None, task="cargo_pickup", kind="keypoints",
                   sign_annotation=None) -> dict:
    data = path.read_bytes()
    now = int(time.time() * 1000)
    miner = (claim or who).miner_id
    signed_ann = annotation if sign_annotation is None else sign_annotation
    msg = xgen_request_message(miner, rid, len(data), hashlib.sha256(data).hexdigest(), now, task, "1", kind,
                               hashlib.sha256(canonical_annotation(signed_ann).encode()).hexdigest())
    return {"miner_id": miner, "request_id": rid, "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "requested_at_ms": now, "task_id": task, "task_version": "1", "source_kind": kind,
            "annotation": annotation, "signature": who.sign(msg)}


def refused(fn) -> IngestRefused:
    with pytest.raises(IngestRefused) as info:
        fn()
    return info.value


def test_honest_upload_becomes_one_request(ingest, source):
    rid = str(uuid.uuid4())
    client = XGenClient(ingest.client)
    done = client.submit(ALICE, source, rid, source_kind="keypoints", annotation=ANNOTATION)
    assert done["status"] == "accepted" and done["uploader"] == ALICE.miner_id and done["request_id"] == rid
    spec = ingest.catalogue.get("xgen.requests")
    [event] = read_topic(ingest.bootstrap, spec, until=lambda r: len(r) >= 1)
    assert event["request_id"] == rid and event["uploader"] == ALICE.miner_id and event["source_kind"] == "keypoints"
    assert event["annotation_json"] == canonical_annotation(ANNOTATION)
    stored = ingest.service.store.local_path(event["source_uri"])
    assert stored.read_bytes() == source.read_bytes() and event["source_uri"].endswith(f"xgen/{rid}/source.npz")
    assert event["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    # the request is queued until the stages report; unknown ids are 404
    assert client.status(rid)["state"] == "queued"
    assert refused(lambda: client.status(str(uuid.uuid4()))).reason_code == "xgen_request_not_found"
    # an id no request can have (control characters, anything but a UUID) is a 422, never a 500
    for bad in ("%0F%C2%B5%21%5C", "not-a-uuid", "x" * 64):
        err = refused(lambda bad=bad: ingest.client._call("GET", f"/v1/xgen/{bad}"))
        assert (err.status, err.reason_code) == (422, "request_invalid"), bad
    # the same request id cannot be submitted twice, and nothing else was emitted
    again = refused(lambda: client.submit(ALICE, source, rid, source_kind="keypoints"))
    assert (again.status, again.reason_code) == (409, "xgen_request_exists")
    assert topic_count(ingest.bootstrap, spec) == 1


def test_retried_completion_emits_once(ingest, source):
    rid = str(uuid.uuid4())
    grant = ingest.client._call("POST", "/v1/xgen/uploads", json=signed_request(ALICE, source, rid))
    ingest.client.put(grant, source)
    first = ingest.client._call("POST", grant["complete_url"], json={"ticket": grant["ticket"]})
    second = ingest.client._call("POST", grant["complete_url"], json={"ticket": grant["ticket"]})
    assert first == second
    assert topic_count(ingest.bootstrap, ingest.catalogue.get("xgen.requests")) == 1


@pytest.mark.parametrize("case, status, code", [
    ("eve_signs_for_alice", 401, "signature_invalid"),
    ("annotation_swapped", 401, "signature_invalid"),
    ("unknown_task", 422, "xgen_unknown_task"),
    ("bad_kind", 422, "request_invalid"),
])
def test_bad_requests_are_refused(ingest, source, case, status, code):
    rid = str(uuid.uuid4())
    body = {
        "eve_signs_for_alice": lambda: signed_request(EVE, source, rid, claim=ALICE),
        "annotation_swapped": lambda: signed_request(ALICE, source, rid, annotation={"ts": 9.0},
                                                     sign_annotation=ANNOTATION),
        "unknown_task": lambda: signed_request(ALICE, source, rid, task="pour_water"),
        "bad_kind": lambda: signed_request(ALICE, source, rid, kind="mocap"),
    }[case]()
    err = refused(lambda: ingest.client._call("POST", "/v1/xgen/uploads", json=body))
    assert (err.status, err.reason_code) == (status, code)


def test_signed_request_is_single_use(ingest, source):
    body = signed_request(ALICE, source, str(uuid.uuid4()))
    ingest.client._call("POST", "/v1/xgen/uploads", json=body)
    err = refused(lambda: ingest.client._call("POST", "/v1/xgen/uploads", json=body))
    assert (err.status, err.reason_code) == (409, "request_replayed")


def test_other_bytes_than_signed_are_refused(ingest, source, tmp_path):
    grant = ingest.client._call("POST", "/v1/xgen/uploads", json=signed_request(ALICE, source, str(uuid.uuid4())))
    other = tmp_path / "other.npz"
    other.write_bytes(bytes(reversed(source.read_bytes())))  # same size, other content
    err = refused(lambda: ingest.client.put(grant, other))
    assert err.reason_code == "upload_hash_mismatch"
    err = refused(lambda: ingest.client._call("POST", grant["complete_url"], json={"ticket": grant["ticket"]}))
    assert (err.status, err.reason_code) == (404, "upload_missing")


def test_tickets_do_not_cross_between_bundles_and_xgen(ingest, source, signed):
    grant = ingest.client._call("POST", "/v1/xgen/uploads", json=signed_request(ALICE, source, str(uuid.uuid4())))
    ingest.client.put(grant, source)
    bundle_complete = grant["complete_url"].replace("/v1/xgen/uploads/", "/v1/uploads/")
    err = refused(lambda: ingest.client._call("POST", bundle_complete, json={"ticket": grant["ticket"]}))
    assert (err.status, err.reason_code) == (401, "ticket_invalid")
    path = signed.write(ALICE)
    from kibotos.identity import BundleSignature, sidecar_path

    sid = BundleSignature.model_validate_json(sidecar_path(path).read_text()).submission_id
    bgrant = ingest.client.request_upload(ALICE, path, str(sid))
    xgen_complete = bgrant["complete_url"].replace("/v1/uploads/", "/v1/xgen/uploads/")
    err = refused(lambda: ingest.client._call("POST", xgen_complete, json={"ticket": bgrant["ticket"]}))
    assert (err.status, err.reason_code) == (401, "ticket_invalid")
    assert topic_count(ingest.bootstrap, ingest.catalogue.get("xgen.requests")) == 0
