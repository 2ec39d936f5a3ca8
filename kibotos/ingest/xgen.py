"""XGen uploads through the ingest API: a human demonstration (video or 3D keypoints file)
uploaded like a bundle — signed request, presigned expiring PUT bound to size and SHA-256,
completion with the ticket — and sent to ``xgen.requests``.

    POST /v1/xgen/uploads                 signed request ─► ticket + presigned PUT URL
    PUT  put_url                          the source bytes (video .mp4 or keypoints .npz)
    POST /v1/xgen/uploads/{id}/complete   ticket ─► size + SHA-256 checked, stored at
                                          xgen/<request_id>/source.<ext>, xgen.requests emitted
    GET  /v1/xgen/{request_id}            state, progress, stage results, clips

The request signature (Ed25519, the miner's key) covers ``xgen_request_message``: miner,
request id, size, SHA-256 of the file, the task, the source kind and the SHA-256 of the
canonical annotation JSON, so neither the file nor its annotation can be swapped. The
ingest service's own machinery applies unchanged: single-use signed requests
(``nonces``), per-miner and global rate limits, the upload size limit, HMAC tickets,
the sweep of abandoned ``incoming/`` objects.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from kibotos.errors import KibotosError, ServiceError
from kibotos.identity import IdentityError, Keypair, verify
from kibotos.ingest.nonces import SpentRequest, upload_id_for
from kibotos.ingest.nonces import request_id as request_digest
from kibotos.ingest.service import ApiError, IngestService, now_ms
from kibotos.ingest.tickets import TicketError, UploadTicket
from kibotos.objectstore import ObjectStoreError

SOURCE_EXT = {"video": "mp4", "keypoints": "npz"}
INCOMING = "incoming/xgen"  # under incoming/: swept with abandoned bundle uploads
MAX_ANNOTATION_BYTES = 64 << 10


def canonical_annotation(annotation: dict[str, Any] | None) -> str:
    return json.dumps(annotation or {}, sort_keys=True, separators=(",", ":"))


def xgen_request_message(miner_id: str, request_id: str, size_bytes: int, sha256: str, requested_at_ms: int,
                         task_id: str, task_version: str, source_kind: str, annotation_sha256: str) -> bytes:
    """The canonical text an XGen upload request signs."""
    return (f"kibotos xgen request v1\nminer_id: {miner_id}\nrequest_id: {request_id}\nsize_bytes: {size_bytes}\n"
            f"sha256: {sha256}\nrequested_at_ms: {requested_at_ms}\ntask: {task_id}@{task_version}\n"
            f"source_kind: {source_kind}\nannotation_sha256: {annotation_sha256}\n").encode()


def source_key(request_id: str, source_kind: str) -> str:
    return f"xgen/{request_id}/source.{SOURCE_EXT[source_kind]}"


class XGenUploads:
    """The XGen routes' logic over an ``IngestService`` (its store, client, emitter,
    rate limiter, request log and secret)."""

    def __init__(self, service: IngestService):
        self.svc = service

    def request_upload(self, req: dict[str, Any], base_url: str) -> dict[str, Any]:
        svc, s = self.svc, self.svc.settings
        miner, rid, kind = req["miner_id"], str(req["request_id"]), req["source_kind"]
        annotation = canonical_annotation(req.get("annotation"))
        if len(annotation) > MAX_ANNOTATION_BYTES:
            raise ApiError(413, "xgen_annotation_too_large", f"annotation over {MAX_ANNOTATION_BYTES} bytes")
        message = xgen_request_message(miner, rid, req["size_bytes"], req["sha256"], req["requested_at_ms"],
                                       req["task_id"], req["task_version"], kind,
                                       hashlib.sha256(annotation.encode()).hexdigest())
        try:
            verify(miner, message, req["signature"])
        except IdentityError as exc:
            raise ApiError(401, exc.reason_code, f"xgen request not signed by {miner[:64]}: {exc}") from exc
        skew = abs(now_ms() - req["requested_at_ms"]) / 1000
        if skew > s.ingest_request_max_skew_s:
            raise ApiError(401, "request_expired", f"requested_at_ms is {skew:.0f}s from the server clock "
                           f"(max {s.ingest_request_max_skew_s}s)")
        if req["size_bytes"] > s.ingest_max_upload_bytes:
            raise ApiError(413, "upload_too_large", f"{req['size_bytes']} bytes > the upload limit "
                           f"{s.ingest_max_upload_bytes}", details={"max_bytes": s.ingest_max_upload_bytes})
        self._check_task(req["task_id"], req["task_version"])
        digest = request_digest(message)
        upload_id = upload_id_for(digest)
        try:
            earlier = svc.requests.spend(SpentRequest(digest, miner, rid, upload_id, req["requested_at_ms"]))
        except ServiceError as exc:
            raise ApiError(503, "service_unavailable", str(exc), headers={"Retry-After": "5"}) from exc
        if earlier is not None:
            raise ApiError(409, "request_replayed", "this signed request was already used; sign a new one",
                           details={"upload_id": earlier.upload_id})
        wait, scope = svc.rate.acquire(miner)
        if wait > 0:
            retry = max(1, int(wait + 0.999))
            raise ApiError(429, "rate_limited", f"{scope} upload rate limit reached; retry in {retry}s",
                           details={"scope": scope, "retry_after_s": retry}, headers={"Retry-After": str(retry)})
        if svc.store.stat(f"xgen/{rid}/request.json") is not None:
            raise ApiError(409, "xgen_request_exists", f"XGen request {rid} was already accepted")
        base = (s.ingest_public_url or base_url).rstrip("/")
        key = f"{INCOMING}/{rid}/{upload_id}.{SOURCE_EXT[kind]}"
        doc = {"request_id": rid, "miner_id": miner, "task_id": req["task_id"], "task_version": req["task_version"],
               "source_kind": kind, "annotation_json": annotation if req.get("annotation") else None}
        svc.store.put_bytes(json.dumps(doc).encode(), f"{INCOMING}/{rid}/{upload_id}.request.json")
        put = svc.store.presign_put(key, size=req["size_bytes"], sha256=req["sha256"],
                                    expires_s=s.ingest_url_ttl_s, base_url=base)
        ticket = UploadTicket(upload_id, rid, miner, key, req["size_bytes"], req["sha256"], int(time.time()),
                              put.expires_at)
        return {"upload_id": upload_id, "request_id": rid, "miner_id": miner, "ticket": ticket.encode(svc.secret),
                "method": put.method, "put_url": put.url, "headers": put.headers, "expires_at": put.expires_at,
                "max_bytes": req["size_bytes"], "complete_url": f"{base}/v1/xgen/uploads/{upload_id}/complete"}

    @staticmethod
    def _check_task(task_id: str, task_version: str) -> None:
        from kibotos.tasks.registry import get_task

        if task_id != "cargo_pickup":
            raise ApiError(422, "xgen_unknown_task", f"XGen knows the task cargo_pickup, not {task_id!r}")
        try:
            get_task(task_id, task_version)
        except KibotosError as exc:
            raise ApiError(422, "xgen_unknown_task", str(exc)) from exc

    def complete(self, upload_id: str, token: str) -> dict[str, Any]:
        svc = self.svc
        try:
            ticket = UploadTicket.decode(token, svc.secret)
        except TicketError as exc:
            raise ApiError(401, exc.reason_code, str(exc)) from exc
        if ticket.upload_id != upload_id or not ticket.key.startswith(f"{INCOMING}/"):
            raise ApiError(401, "ticket_invalid", "the ticket belongs to another upload")
        if time.time() > ticket.expires_at + svc.settings.ingest_complete_grace_s:
            raise ApiError(410, "ticket_expired", "the upload ticket has expired; request a new upload")
        rid = ticket.submission_id
        marker = f"xgen/{rid}/request.json"
        with svc._commit:
            done = self._read_json(marker)
            if done is not None:
                if done.get("upload_id") == upload_id:  # a retried completion: same answer, no new event
                    return self._accepted(done)
                raise ApiError(409, "xgen_request_exists", f"XGen request {rid} was already accepted")
            doc = self._read_json(f"{INCOMING}/{rid}/{upload_id}.request.json")
            if doc is None:
                raise ApiError(404, "upload_missing", "no request recorded for this upload")
            final = source_key(rid, doc["source_kind"])
            key = ticket.key if svc.store.stat(ticket.key) is not None else (
                final if svc.store.stat(final) is not None else None)  # moved by an earlier failed attempt
            if key is None:
                raise ApiError(404, "upload_missing", "nothing was uploaded with this ticket (PUT it to put_url first)")
            try:
                with svc.store.open_local(key, max_bytes=ticket.size_bytes) as path:
                    svc._check_transport(path, ticket)
                uri = svc.store.move(key, final) if key != final else svc.store.uri_for(final)
            except ObjectStoreError as exc:
                raise ApiError(503, "service_unavailable", str(exc)) from exc
            except KibotosError as exc:  # IngestRejection: size or hash mismatch
                svc.store.delete(key)
                raise ApiError(422, exc.reason_code, str(exc)) from exc
            event = {"request_id": rid, "uploader": ticket.miner_id, "task_id": doc["task_id"],
                     "task_version": doc["task_version"], "source_kind": doc["source_kind"], "source_uri": uri,
                     "source_sha256": ticket.sha256, "source_size_bytes": ticket.size_bytes,
                     "annotation_json": doc.get("annotation_json"), "upload_id": upload_id, "requested_at": now_ms()}
            try:
                svc.emitter.emit(svc.catalogue.get("xgen.requests"), event)
                svc.store.put_bytes(json.dumps(event).encode(), marker)
            except ServiceError as exc:
                raise ApiError(503, "service_unavailable", f"{exc}; complete the upload again") from exc
            svc.store.delete(f"{INCOMING}/{rid}/{upload_id}.request.json")
        return self._accepted(event)

    def _read_json(self, key: str) -> dict[str, Any] | None:
        if self.svc.store.stat(key) is None:
            return None
        try:
            return json.loads(self.svc.store.read_bytes(self.svc.store.uri_for(key), 1 << 20))
        except (ValueError, ObjectStoreError):
            return None

    @staticmethod
    def _accepted(event: dict[str, Any]) -> dict[str, Any]:
        return {"request_id": event["request_id"], "upload_id": event["upload_id"], "uploader": event["uploader"],
                "status": "accepted", "source_uri": event["source_uri"], "source_sha256": event["source_sha256"],
                "requested_at": event["requested_at"]}

    def status(self, request_id: str) -> dict[str, Any]:
        from kibotos.xgen.status import xgen_status

        found = xgen_status(self.svc.client, request_id)
        if found is None:
            try:
                queued = self.svc.store.stat(f"xgen/{request_id}/request.json") is not None
            except ObjectStoreError:  # an id no request could have: not found, never a server error
                queued = False
            if queued:
                return {"request_id": request_id, "state": "queued", "progress": 0.0, "stages": [], "clips": [],
                        "clip_count": None, "clips_exported": 0, "clips_verified": 0, "current_stage": "pose",
                        "failed_stage": None, "reason_code": None}
            raise ApiError(404, "xgen_request_not_found", f"no XGen request {request_id}")
        return found


class XGenClient:
    """The uploader's side: ``submit`` (request, PUT, complete) and ``status``, over an
    ``kibotos.ingest.client.IngestClient``."""

    def __init__(self, ingest):
        self.ingest = ingest
        self._last_ms = 0

    def submit(self, keypair: Keypair, path, request_id: str, *, source_kind: str, task_id: str = "cargo_pickup",
               task_version: str = "1", annotation: dict[str, Any] | None = None) -> dict[str, Any]:
        from pathlib import Path

        from kibotos.objectstore import sha256_file

        path = Path(path)
        size, digest = path.stat().st_size, sha256_file(path)
        now = self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        ann_sha = hashlib.sha256(canonical_annotation(annotation).encode()).hexdigest()
        sig = keypair.sign(xgen_request_message(keypair.miner_id, request_id, size, digest, now, task_id,
                                                task_version, source_kind, ann_sha))
        grant = self.ingest._call("POST", "/v1/xgen/uploads", json={
            "miner_id": keypair.miner_id, "request_id": request_id, "size_bytes": size, "sha256": digest,
            "requested_at_ms": now, "task_id": task_id, "task_version": task_version, "source_kind": source_kind,
            "annotation": annotation, "signature": sig})
        self.ingest.put(grant, path)
        return self.ingest._call("POST", grant["complete_url"], json={"ticket": grant["ticket"]})

    def status(self, request_id: str) -> dict[str, Any]:
        return self.ingest._call("GET", f"/v1/xgen/{request_id}")
