"""Upload tickets and the local store's presigned PUT URLs (HMAC, expiry, size, hash),
and the SigV4 presigner's canonical form (checked against a real S3 server in
tests/integration/test_ingest_s3.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
from urllib.parse import parse_qs, urlparse

import pytest

from kibotos.ingest.tickets import TicketError, UploadTicket
from kibotos.objectstore import LocalObjectStore, ObjectStoreError, checksum_header, presign_v4

SECRET = b"s" * 32
DATA = b"bundle bytes" * 100
SHA = hashlib.sha256(DATA).hexdigest()


def ticket(**over) -> UploadTicket:
    base = dict(upload_id="u1", submission_id="s1", miner_id="m1", key="incoming/u1.zarr.zip", size_bytes=10,
                sha256="a" * 64, issued_at=1, expires_at=2)
    return UploadTicket(**(base | over))


def test_tickets_roundtrip_and_refuse_tampering():
    token = ticket().encode(SECRET)
    assert UploadTicket.decode(token, SECRET) == ticket()
    mac = token.split(".")[1]
    forged = ticket(size_bytes=10**9).encode(b"other secret")
    for bad in [token + "x", f"{forged.split('.')[0]}.{mac}", "nodot", "a.b.c", "", token.replace(".", ". ")]:
        with pytest.raises(TicketError):
            UploadTicket.decode(bad, SECRET)
    with pytest.raises(TicketError):
        UploadTicket.decode(token, b"another secret")


def _params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def test_local_presigned_put_binds_key_size_hash_and_expiry(tmp_path):
    store = LocalObjectStore(tmp_path / "objects", upload_secret=SECRET)
    put = store.presign_put("incoming/x.zarr.zip", size=len(DATA), sha256=SHA, expires_s=60, base_url="http://h:1/")
    assert put.url.startswith("http://h:1/v1/objects/incoming/x.zarr.zip?")
    assert put.headers == {"Content-Length": str(len(DATA)), "x-amz-checksum-sha256": checksum_header(SHA)}
    q = _params(put.url)

    def begin(key="incoming/x.zarr.zip", length=str(len(DATA)), **over):
        args = q | over
        return store.begin_upload(key, expires=args["expires"], size=args["size"], sha256=args["sha256"],
                                  signature=args["signature"], content_length=length)

    for over, key, length, reason in [
        ({"size": str(len(DATA) + 1)}, "incoming/x.zarr.zip", str(len(DATA)), "url_signature_invalid"),
        ({"sha256": "0" * 64}, "incoming/x.zarr.zip", str(len(DATA)), "url_signature_invalid"),
        ({"expires": str(int(q["expires"]) + 3600)}, "incoming/x.zarr.zip", str(len(DATA)), "url_signature_invalid"),
        ({}, "incoming/y.zarr.zip", str(len(DATA)), "url_signature_invalid"),
        ({}, "../escape", str(len(DATA)), "url_signature_invalid"),
        ({"size": "ten"}, "incoming/x.zarr.zip", str(len(DATA)), "url_signature_invalid"),
        ({}, "incoming/x.zarr.zip", None, "length_required"),
        ({}, "incoming/x.zarr.zip", str(len(DATA) - 1), "upload_size_mismatch"),
    ]:
        with pytest.raises(ObjectStoreError) as exc:
            begin(key, length, **over)
        assert exc.value.reason_code == reason, (over, key, length)

    upload = begin()
    upload.write(DATA[:100])
    with pytest.raises(ObjectStoreError) as exc:
        upload.write(DATA)  # more than the signed size: refused before it is written
    assert exc.value.reason_code == "upload_too_large"
    upload.abort()
    assert store.stat("incoming/x.zarr.zip") is None and not list(tmp_path.rglob("*.part"))

    upload = begin()
    upload.write(DATA[:-1] + b"X")
    with pytest.raises(ObjectStoreError) as exc:
        upload.commit()
    assert exc.value.reason_code == "upload_hash_mismatch"
    assert store.stat("incoming/x.zarr.zip") is None

    upload = begin()
    upload.write(DATA)
    stored = upload.commit()
    assert stored.sha256 == SHA and store.stat("incoming/x.zarr.zip").size_bytes == len(DATA)

    expired = store.presign_put("incoming/z", size=1, sha256=SHA, expires_s=-1, base_url="http://h")
    q2 = _params(expired.url)
    with pytest.raises(ObjectStoreError) as exc:
        store.begin_upload("incoming/z", content_length="1", **q2)
    assert exc.value.reason_code == "url_expired"


def test_a_store_without_secret_cannot_presign(tmp_path):
    with pytest.raises(ObjectStoreError) as exc:
        LocalObjectStore(tmp_path).presign_put("k", size=1, sha256=SHA, expires_s=1, base_url="http://h")
    assert exc.value.reason_code == "config_invalid"


def test_sigv4_presign_signs_size_and_checksum_headers():
    when = dt.datetime(2026, 11, 1, 12, 0, 0, tzinfo=dt.UTC)
    url = presign_v4("PUT", "http://127.0.0.1:9000", "/bucket/incoming/a b.zarr.zip", access_key="AK",
                     secret_key="SK", region="us-east-1", expires_s=900, now=when,
                     headers={"Content-Length": "10", "x-amz-checksum-sha256": "abc="})
    q = _params(url)
    assert urlparse(url).path == "/bucket/incoming/a%20b.zarr.zip"
    assert q["X-Amz-SignedHeaders"] == "content-length;host;x-amz-checksum-sha256"
    assert q["X-Amz-Credential"] == "AK/20261101/us-east-1/s3/aws4_request"
    assert q["X-Amz-Date"] == "20261101T120000Z" and q["X-Amz-Expires"] == "900"
    assert len(q["X-Amz-Signature"]) == 64
    other = presign_v4("PUT", "http://127.0.0.1:9000", "/bucket/incoming/a b.zarr.zip", access_key="AK",
                       secret_key="SK", region="us-east-1", expires_s=900, now=when,
                       headers={"Content-Length": "11", "x-amz-checksum-sha256": "abc="})
    assert _params(other)["X-Amz-Signature"] != q["X-Amz-Signature"]
