"""The S3 object store against a real S3 server (SeaweedFS 4.48, started by the session
fixture): the presigned PUT's size and content bounds, expiry and key binding are
enforced by the server itself; the ingest API works end to end on S3, and the gate
chain reads the accepted bundle back from the bucket."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import time

import httpx
import pytest
from minio.datatypes import PostPolicy

from kibotos.config.gates import load_config
from kibotos.identity import BundleSignature, sidecar_path
from kibotos.ingest.client import IngestRefused
from streams.stages import Record, build_stages, run_in_process
from tests.fixtures.ingest import keypair

pytestmark = pytest.mark.integration
DATA = b"a bundle" * 2000
SHA = hashlib.sha256(DATA).hexdigest()


def test_the_s3_server_enforces_the_signed_size_content_and_expiry(s3_store):
    put = s3_store.presign_put("incoming/a.zarr.zip", size=len(DATA), sha256=SHA, expires_s=60)
    assert "X-Amz-SignedHeaders=content-length%3Bhost%3Bx-amz-checksum-sha256" in put.url
    with httpx.Client() as http:
        bigger = http.put(put.url, content=DATA + b"!", headers={**put.headers, "Content-Length": str(len(DATA) + 1)})
        smaller = http.put(put.url, content=DATA[:-1], headers={**put.headers, "Content-Length": str(len(DATA) - 1)})
        assert bigger.status_code == smaller.status_code == 403  # SignatureDoesNotMatch: the size is signed
        tampered = http.put(put.url, content=DATA[:-1] + b"!", headers=put.headers)
        assert tampered.status_code == 400 and "BadDigest" in tampered.text  # the SHA-256 is signed
        unsigned = http.put(put.url, content=DATA, headers={"Content-Length": str(len(DATA))})
        assert unsigned.status_code == 403
        other_key = http.put(put.url.replace("incoming/a.zarr.zip", "incoming/b.zarr.zip"), content=DATA,
                             headers=put.headers)
        assert other_key.status_code == 403
        assert s3_store.stat("incoming/a.zarr.zip") is None
        ok = http.put(put.url, content=DATA, headers=put.headers)
        assert ok.status_code == 200
    assert s3_store.stat("incoming/a.zarr.zip").size_bytes == len(DATA)
    with s3_store.open_local("incoming/a.zarr.zip", max_bytes=len(DATA)) as path:
        assert path.read_bytes() == DATA

    expiring = s3_store.presign_put("incoming/late.zarr.zip", size=len(DATA), sha256=SHA, expires_s=1)
    time.sleep(2.1)
    late = httpx.put(expiring.url, content=DATA, headers=expiring.headers)
    assert late.status_code == 403 and "expired" in late.text.lower()


def test_seaweedfs_also_honours_post_policy_content_length_range(s3_store):
    """Measured alternative (documented in the README): a presigned POST policy with a
    content-length-range is enforced too. The ingest API uses signed-header PUTs."""
    policy = PostPolicy(s3_store.bucket, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    policy.add_equals_condition("key", "env1/post.bin")
    policy.add_content_length_range_condition(1, 100)
    form = s3_store.client.presigned_post_policy(policy)
    url = f"{s3_store.endpoint}/{s3_store.bucket}"
    ok = httpx.post(url, data={**form, "key": "env1/post.bin"}, files={"file": ("x", b"a" * 50)})
    too_big = httpx.post(url, data={**form, "key": "env1/post.bin"}, files={"file": ("x", b"a" * 500)})
    assert ok.status_code == 204 and too_big.status_code == 400 and "EntityTooLarge" in too_big.text


def test_object_uris_outside_the_store_are_refused(s3_store):
    for uri in ("s3://other-bucket/env1/x", f"s3://{s3_store.bucket}/env2/x", f"s3://{s3_store.bucket}/env1/../x",
                "file:///etc/passwd"):
        with pytest.raises(Exception) as exc:
            s3_store.local_path(uri)
        assert getattr(exc.value, "reason_code", "") == "object_uri_invalid"
    s3_store.client.put_object(s3_store.bucket, "env1/big", io.BytesIO(DATA), len(DATA))
    with pytest.raises(Exception) as exc:
        s3_store.local_path(f"s3://{s3_store.bucket}/env1/big", max_bytes=10)
    assert exc.value.reason_code == "bundle_too_large"


def test_signed_upload_through_s3_reaches_the_gates(s3_ingest, signed):
    alice = keypair("alice")
    path = signed.write(alice)
    _, done = s3_ingest.submit(path, alice)
    assert done["status"] == "accepted" and done["bundle_uri"].startswith("s3://")
    [event] = s3_ingest.received(1)
    assert event["bundle_uri"] == done["bundle_uri"]
    store = s3_ingest.service.store
    assert list(store.list("incoming/")) == []  # moved to its final key
    # the gate chain, exactly as the stream workers run it, reads the bundle from the bucket
    stages = build_stages(s3_ingest.catalogue, store, load_config(None))
    spec = s3_ingest.catalogue.submissions_received
    [verdict] = [o.record for o in run_in_process(stages, [Record(spec.name, spec.serialize(event), spec.key(event))])
                 if o.topic.id == "verdicts"]
    assert verdict["submission_id"] == event["submission_id"]
    report_gates = [g["gate"] for g in json.loads(verdict["report_json"])["gates"]]
    assert report_gates[0] == "gate_a_integrity" and verdict["reason_code"] != "bundle_not_found"
    assert store.local_path(event["bundle_uri"]).read_bytes() == path.read_bytes()


@pytest.mark.ingest_settings(ingest_url_ttl_s=1)
def test_expired_or_tampered_s3_uploads_are_refused_by_the_server(s3_ingest, signed):
    alice = keypair("alice")
    path = signed.write(alice)
    sid = BundleSignature.model_validate_json(sidecar_path(path).read_text()).submission_id
    grant = s3_ingest.client.request_upload(alice, path, str(sid))
    assert grant["put_url"].startswith(s3_ingest.settings.s3_endpoint)
    tampered = path.with_name("tampered.zarr.zip")
    data = path.read_bytes()
    tampered.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    with pytest.raises(IngestRefused) as exc:
        s3_ingest.client.put(grant, tampered)
    assert exc.value.status == 400 and exc.value.reason_code == "s3_BadDigest"
    time.sleep(2.1)
    with pytest.raises(IngestRefused) as exc:
        s3_ingest.client.put(grant, path)
    assert exc.value.status == 403 and exc.value.reason_code == "s3_AccessDenied"
    with pytest.raises(IngestRefused) as exc:
        s3_ingest.client.complete(grant, BundleSignature.model_validate_json(sidecar_path(path).read_text()))
    assert exc.value.reason_code == "upload_missing"
