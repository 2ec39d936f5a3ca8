"""The ingest edge's logic, free of HTTP: request an upload, receive a local upload,
complete an upload (verify, record, emit), read reports and ledgers.

``IngestService`` is what the FastAPI routes call (``kibotos.ingest.app``). Failures are
``ApiError`` (HTTP status + reason code + details), never an unhandled exception.

The ``submissions.received`` event is emitted only after the object is fully stored,
moved to its final key and has passed every pre-verification check. A bundle refused by
a check still gets a verdict: a ``verdicts`` record (rejected, ``failed_gate =
ingest_integrity``, the reason code and metrics) keyed to the upload attempt
(``upload_id``): anyone may upload under any submission id, so the sink stores it per
attempt (``upload_verdicts``), never as the submission's verdict. Replays get no
verdict: the API answers 409.

Guarantees against an adversarial client: a signed upload request is single-use
(``kibotos.ingest.nonces``); ``upload_status`` gives an upload its own verdict; an
accepted submission stuck without a final verdict for ``ingest_resume_after_s`` is
resumed by its owner's re-upload of the same bytes (its stored claim-check event is
emitted again) instead of being refused as a replay.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kibotos import warehouse
from kibotos.bundle.reader import Limits
from kibotos.config.settings import Settings
from kibotos.errors import ConfigError, KibotosError, ServiceError
from kibotos.identity import IdentityError, upload_request_message, verify
from kibotos.ingest.checks import INGEST_GATE, IngestRejection, VerifiedBundle, verify_upload
from kibotos.ingest.nonces import RequestLog, SpentRequest, request_id, upload_id_for
from kibotos.ingest.ratelimit import RateLimiter
from kibotos.ingest.receipts import Receipt, Receipts
from kibotos.ingest.tickets import TicketError, UploadTicket
from kibotos.objectstore import ObjectStore, ObjectStoreError, sha256_file
from kibotos.reports.model import GateResult
from kibotos.warehouse import LockedClient
from topics.catalogue import Catalogue, TopicSpec

SWEEP_INTERVAL_S = 600.0  # how often abandoned uploads are looked for


class ApiError(KibotosError):
    """An answer other than success: HTTP ``status``, ``reason_code``, ``details``."""

    def __init__(self, status: int, reason_code: str, message: str, *, details: dict | None = None,
                 headers: dict[str, str] | None = None, submission_id: str | None = None):
        super().__init__(message, reason_code=reason_code)
        self.status = status
        self.details = details or {}
        self.headers = headers or {}
        self.submission_id = submission_id

    def body(self) -> dict[str, Any]:
        return {"reason_code": self.reason_code, "message": str(self), "details": self.details,
                "submission_id": self.submission_id}


def now_ms() -> int:
    return int(time.time() * 1000)


def ingest_secret(settings: Settings) -> bytes:
    """The HMAC key of tickets and local upload URLs: ``KIBOTOS_INGEST_SECRET``, or in
    embedded mode a random key kept in ``<home>/ingest.secret`` (0600) so that tickets
    survive a restart of the stack."""
    if settings.ingest_secret:
        return settings.ingest_secret.encode()
    if settings.mode == "production":
        raise ConfigError("production mode needs KIBOTOS_INGEST_SECRET (shared by every ingest replica)")
    path = settings.home / "ingest.secret"
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip().encode()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


class Emitter:
    """Produce one event and wait for the broker's acknowledgement."""

    def __init__(self, bootstrap: str):
        from kibotos.runtime.submit import producer

        self.bootstrap = bootstrap
        self._producer = producer(bootstrap)

    def emit(self, spec: TopicSpec, record: dict[str, Any], timeout_s: float = 15.0) -> None:
        errors: list[str] = []

        def delivered(err, _msg) -> None:
            if err is not None:
                errors.append(str(err))

        try:
            self._producer.produce(spec.name, key=spec.key(record), value=spec.serialize(record), on_delivery=delivered)
        except Exception as exc:
            raise ServiceError(f"cannot produce to {spec.name}: {exc}") from exc
        if self._producer.flush(timeout_s) or errors:
            raise ServiceError(f"{spec.name} not acknowledged by {self.bootstrap}: {errors or 'timeout'}")

    def close(self) -> None:
        self._producer.flush(5)
        self._producer.close()


@dataclass
class IngestService:
    """Everything the ingest API needs. ``client`` is a clickhouse-connect client (shared
    with the stack's sink in the embedded stack); ``emitter`` publishes events."""

    settings: Settings
    store: ObjectStore
    client: Any
    emitter: Emitter
    catalogue: Catalogue
    secret: bytes
    config_version: str
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        s = self.settings
        self.client = LockedClient(self.client)
        self.receipts = Receipts(self.client)
        self.requests = RequestLog(self.client)
        self.rate = RateLimiter(s.ingest_rate_per_minute, s.ingest_rate_burst, s.ingest_global_rate_per_minute,
                                s.ingest_global_burst)
        self._verifying = threading.BoundedSemaphore(s.ingest_max_concurrent_verifications)
        self._commit = threading.Lock()  # replay check -> emit -> receipt, one upload at a time
        self._last_sweep = 0.0

    # --- request an upload ---------------------------------------------------------------

    def request_upload(self, req: dict[str, Any], base_url: str) -> dict[str, Any]:
        miner, sid = req["miner_id"], str(req["submission_id"])
        message = upload_request_message(miner, sid, req["size_bytes"], req["sha256"], req["requested_at_ms"])
        try:
            verify(miner, message, req["signature"])
        except IdentityError as exc:
            raise ApiError(401, exc.reason_code, f"upload request not signed by {miner[:64]}: {exc}") from exc
        skew = abs(now_ms() - req["requested_at_ms"]) / 1000
        if skew > self.settings.ingest_request_max_skew_s:
            raise ApiError(401, "request_expired", f"requested_at_ms is {skew:.0f}s from the server clock "
                           f"(max {self.settings.ingest_request_max_skew_s}s)")
        if req["size_bytes"] > self.settings.ingest_max_upload_bytes:
            raise ApiError(413, "bundle_too_large", f"{req['size_bytes']} bytes > the upload limit "
                           f"{self.settings.ingest_max_upload_bytes}", details={"max_bytes": self.settings.ingest_max_upload_bytes})
        # single use: recorded before any rate-limit token is spent or ticket issued, so a
        # captured request sent again gets neither (clients sign a fresh request per try)
        rid = request_id(message)
        upload_id = upload_id_for(rid)
        try:
            earlier = self.requests.spend(SpentRequest(rid, miner, sid, upload_id, req["requested_at_ms"]))
        except ServiceError as exc:
            raise ApiError(503, "service_unavailable", str(exc), headers={"Retry-After": "5"}) from exc
        if earlier is not None:
            raise ApiError(409, "request_replayed", "this signed upload request was already used; sign a new one "
                           "(a fresh requested_at_ms) to upload again", submission_id=sid,
                           details={"upload_id": earlier.upload_id})
        wait, scope = self.rate.acquire(miner)
        if wait > 0:
            retry = max(1, int(wait + 0.999))
            raise ApiError(429, "rate_limited", f"{scope} upload rate limit reached; retry in {retry}s",
                           details={"scope": scope, "retry_after_s": retry}, headers={"Retry-After": str(retry)})
        done = self.receipts.accepted(submission_id=sid)
        if done is not None:
            self._check_resumable(done, miner, req["sha256"])  # a stuck submission's owner may resume it
        self._maybe_sweep()
        key = f"incoming/{sid}/{upload_id}.zarr.zip"  # the URL signs the key: bound to this submission
        base = (self.settings.ingest_public_url or base_url).rstrip("/")
        put = self.store.presign_put(key, size=req["size_bytes"], sha256=req["sha256"],
                                     expires_s=self.settings.ingest_url_ttl_s, base_url=base)
        ticket = UploadTicket(upload_id, sid, miner, key, req["size_bytes"], req["sha256"], int(time.time()),
                              put.expires_at)
        return {"upload_id": upload_id, "submission_id": sid, "miner_id": miner, "ticket": ticket.encode(self.secret),
                "method": put.method, "put_url": put.url, "headers": put.headers, "expires_at": put.expires_at,
                "max_bytes": req["size_bytes"], "complete_url": f"{base}/v1/uploads/{upload_id}/complete"}

    # --- complete an upload ----------------------------------------------------------------

    def complete(self, upload_id: str, token: str, signature_doc: Any) -> dict[str, Any]:
        try:
            ticket = UploadTicket.decode(token, self.secret)
        except TicketError as exc:
            raise ApiError(401, exc.reason_code, str(exc)) from exc
        if ticket.upload_id != upload_id or ticket.key.startswith("incoming/xgen/"):  # an XGen ticket is no bundle's
            raise ApiError(401, "ticket_invalid", "the ticket belongs to another upload")
        if time.time() > ticket.expires_at + self.settings.ingest_complete_grace_s:
            raise ApiError(410, "ticket_expired", "the upload ticket has expired; request a new upload")
        sid = ticket.submission_id
        done = self.receipts.accepted(submission_id=sid)
        if done is not None:
            if done.upload_id == upload_id:  # a retried completion: same answer, no new event
                return self._accepted_body(done)
            resumed = self.receipts.for_upload(upload_id)
            if resumed is not None and resumed.status == "resumed":  # a retried resume: same answer
                return self._accepted_body(done) | {"upload_id": upload_id, "resumed": True}
            try:
                self._check_resumable(done, ticket.miner_id, ticket.sha256)
            except ApiError:
                self.store.delete(ticket.key)  # the duplicate's bytes are not kept
                raise
            return self._resume(ticket, done)
        if not self._verifying.acquire(timeout=10):
            raise ApiError(503, "ingest_busy", "too many uploads being verified; retry shortly",
                           headers={"Retry-After": "5"})
        try:
            return self._verify_and_commit(ticket, signature_doc)
        finally:
            self._verifying.release()

    # --- resume a stuck submission -------------------------------------------------------

    def _check_resumable(self, done: Receipt, miner_id: str, sha256: str) -> None:
        """Pass when a re-upload may resume the accepted submission ``done``: same miner,
        same bytes, no final verdict, and nothing sent to verification for
        ``ingest_resume_after_s``. Otherwise the replay answer, 409 ``bundle_replayed``.

        :raises ApiError: not resumable.
        """
        sid = done.submission_id
        if miner_id != done.miner_id or sha256 != done.bundle_sha256:
            raise ApiError(409, "bundle_replayed", f"submission {sid} was already accepted", submission_id=sid)
        if warehouse.get_report(self.client, sid, attempts=False) is not None:
            raise ApiError(409, "bundle_replayed", f"submission {sid} was already accepted and judged",
                           submission_id=sid, details={"decided": True})
        last = self.receipts.last_emitted_ms(sid) or done.received_at
        wait_s = self.settings.ingest_resume_after_s - (now_ms() - last) / 1000
        if wait_s > 0:
            retry = max(1, int(wait_s + 0.999))
            raise ApiError(409, "bundle_replayed", f"submission {sid} was already accepted and is being verified; "
                           f"a re-upload resumes it if it has no verdict in {retry}s", submission_id=sid,
                           details={"decided": False, "resume_after_s": retry})

    def _resume(self, ticket: UploadTicket, done: Receipt) -> dict[str, Any]:
        """Send the stuck submission ``done`` to verification again: its stored
        claim-check event (the accepted bundle's URI, hashes and metadata) is emitted
        once more; every downstream effect absorbs a redelivery idempotently. The new
        upload's bytes are kept only if the stored copy is gone."""
        sid = ticket.submission_id
        with self._commit:
            self._check_resumable(done, ticket.miner_id, ticket.sha256)  # not resumed meanwhile
            key = ticket.key if self.store.stat(ticket.key) is not None else None
            if key is None:
                raise ApiError(404, "upload_missing", "nothing was uploaded with this ticket (PUT the bundle "
                               "to put_url first)", submission_id=sid)
            try:
                with self.store.open_local(key, max_bytes=ticket.size_bytes) as path:
                    self._check_transport(path, ticket)
            except IngestRejection as rej:
                self.store.delete(key)
                raise ApiError(422, rej.reason_code, str(rej), submission_id=sid, details=_json_safe(rej.metrics)) \
                    from rej
            except ObjectStoreError as exc:
                raise ApiError(503, "service_unavailable", str(exc)) from exc
            original = f"bundles/{sid}/{done.upload_id}.zarr.zip"
            try:
                if self.store.stat(original) is None:  # the accepted copy was lost: these bytes are the same
                    self.store.move(key, original)
                else:
                    self.store.delete(key)
            except (ObjectStoreError, OSError) as exc:
                raise ApiError(503, "service_unavailable", f"cannot store the bundle: {exc}") from exc
            manifest = json.loads(done.manifest_json or "{}")
            task = manifest.get("task") if isinstance(manifest.get("task"), dict) else {}
            event = {"submission_id": sid, "miner_id": done.miner_id, "bundle_uri": done.bundle_uri,
                     "bundle_sha256": done.bundle_sha256, "bundle_size_bytes": done.bundle_size_bytes,
                     "received_at": done.received_at, "robot_model_id": manifest.get("robot_model_id"),
                     "task_id": task.get("task_id")}
            try:
                self.emitter.emit(self.catalogue.submissions_received, event)
                self.receipts.insert(replace(done, upload_id=ticket.upload_id, status="resumed",
                                             received_at=now_ms()))
            except ServiceError as exc:
                raise ApiError(503, "service_unavailable", f"{exc}; complete the upload again") from exc
        return self._accepted_body(done) | {"upload_id": ticket.upload_id, "resumed": True}

    def _final_key(self, ticket: UploadTicket) -> str:
        return f"bundles/{ticket.submission_id}/{ticket.upload_id}.zarr.zip"

    def _verify_and_commit(self, ticket: UploadTicket, signature_doc: Any) -> dict[str, Any]:
        key = ticket.key
        if self.store.stat(key) is None:
            if self.store.stat(self._final_key(ticket)) is None:
                raise ApiError(404, "upload_missing", "nothing was uploaded with this ticket (PUT the bundle "
                               "to put_url first)", submission_id=ticket.submission_id)
            key = self._final_key(ticket)  # moved by an earlier attempt that failed to emit
        received_at, started = now_ms(), time.perf_counter()
        try:
            with self.store.open_local(key, max_bytes=ticket.size_bytes) as path:
                self._check_transport(path, ticket)
                verified = verify_upload(path, signature_doc, miner_id=ticket.miner_id,
                                         submission_id=ticket.submission_id, limits=self.limits)
        except ObjectStoreError as exc:
            if exc.reason_code in ("service_unavailable", "upload_missing"):
                raise ApiError(503 if exc.reason_code == "service_unavailable" else 404, exc.reason_code,
                               str(exc)) from exc
            rejection = IngestRejection(exc.reason_code, str(exc))
        except IngestRejection as rej:
            rejection = rej
        else:
            return self._accept(ticket, key, verified, received_at)
        rejection.metrics["wall_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return self._reject(ticket, key, rejection, received_at)

    def _check_transport(self, path: Path, ticket: UploadTicket) -> None:
        size = path.stat().st_size
        if size != ticket.size_bytes:
            raise IngestRejection("upload_size_mismatch", f"stored {size} bytes, declared {ticket.size_bytes}")
        digest = sha256_file(path)
        if digest != ticket.sha256:
            raise IngestRejection("upload_hash_mismatch", "stored bytes do not match the declared SHA-256",
                                  sha256=digest, declared_sha256=ticket.sha256)

    def _accept(self, ticket: UploadTicket, key: str, v: VerifiedBundle, received_at: int) -> dict[str, Any]:
        sid = ticket.submission_id
        with self._commit:
            earlier = self.receipts.accepted(submission_id=sid, merkle_root=v.tree.merkle_root)
            if earlier is not None:
                if key != self._final_key(ticket):
                    self.store.delete(key)
                raise ApiError(409, "bundle_replayed", f"this bundle (Merkle root {v.tree.merkle_root[:16]}…) "
                               f"was already accepted as submission {earlier.submission_id}", submission_id=sid,
                               details={"merkle_root": v.tree.merkle_root, "accepted_upload_id": earlier.upload_id})
            final = self._final_key(ticket)
            try:
                uri = self.store.move(key, final) if key != final else self.store.uri_for(final)
            except (ObjectStoreError, OSError) as exc:
                raise ApiError(503, "service_unavailable", f"cannot store the bundle: {exc}") from exc
            m = v.manifest
            event = {"submission_id": sid, "miner_id": ticket.miner_id, "bundle_uri": uri,
                     "bundle_sha256": ticket.sha256, "bundle_size_bytes": ticket.size_bytes,
                     "received_at": received_at, "robot_model_id": m.robot_model_id,
                     "task_id": m.task.task_id if m.task else None}
            try:
                self.emitter.emit(self.catalogue.submissions_received, event)
            except ServiceError as exc:
                raise ApiError(503, "service_unavailable", f"{exc}; complete the upload again") from exc
            receipt = Receipt(
                submission_id=sid, upload_id=ticket.upload_id, miner_id=ticket.miner_id, status="accepted",
                reason_code=None, merkle_root=v.tree.merkle_root, manifest_sha256=v.tree.manifest_sha256 or "",
                bundle_sha256=ticket.sha256, bundle_size_bytes=ticket.size_bytes, bundle_uri=uri,
                signature=v.signature.signature,
                nodes_json=json.dumps({n.path: {"kind": n.kind, "sha256": n.sha256, "bytes": n.size_bytes,
                                                "entries": len(n.entries)} for n in v.tree.nodes}),
                manifest_json=json.dumps(v.manifest_attrs, default=str), details_json=json.dumps({"arrays": v.arrays}),
                received_at=received_at)
            try:
                self.receipts.insert(receipt)
            except ServiceError as exc:
                # the event is out: verification goes on; a retry re-emits the same
                # submission id, which every downstream effect absorbs idempotently
                raise ApiError(503, "service_unavailable", str(exc)) from exc
        return self._accepted_body(receipt)

    @staticmethod
    def _accepted_body(r: Receipt) -> dict[str, Any]:
        return {"submission_id": r.submission_id, "upload_id": r.upload_id, "miner_id": r.miner_id,
                "status": "accepted", "merkle_root": r.merkle_root, "manifest_sha256": r.manifest_sha256,
                "bundle_uri": r.bundle_uri, "received_at": r.received_at}

    def _thresholds(self) -> dict[str, Any]:
        return {"max_upload_bytes": self.settings.ingest_max_upload_bytes, **vars(self.limits)}

    def _reject(self, ticket: UploadTicket, key: str, rej: IngestRejection, received_at: int) -> dict[str, Any]:
        from processors.chain import build_report

        sid = ticket.submission_id
        metrics = {"error": str(rej)[:500], **_json_safe(rej.metrics)}
        report = build_report(sid, [GateResult(gate=INGEST_GATE, passed=False, metrics=metrics,
                                               thresholds=self._thresholds(), reason_code=rej.reason_code)],
                              self.config_version, miner_id=ticket.miner_id)
        uri = self.store.uri_for(key)
        with self._commit:
            if self.receipts.accepted(submission_id=sid) is not None:
                # never let a failed upload overwrite the verdict of an accepted one
                raise ApiError(409, "bundle_replayed", f"submission {sid} was already accepted", submission_id=sid)
            verdict = {"submission_id": sid, "miner_id": ticket.miner_id, "verdict": "rejected",
                       "reason_code": rej.reason_code, "failed_gate": INGEST_GATE,
                       "config_version": self.config_version, "decided_at": now_ms(), "points": 0.0,
                       "report_json": report.model_dump_json(), "bundle_uri": uri,
                       "upload_id": ticket.upload_id}  # judges this attempt, not the submission
            try:
                self.emitter.emit(self.catalogue.verdicts, verdict)
                self.receipts.insert(Receipt(
                    submission_id=sid, upload_id=ticket.upload_id, miner_id=ticket.miner_id, status="rejected",
                    reason_code=rej.reason_code, merkle_root=str(rej.metrics.get("merkle_root") or ""),
                    manifest_sha256=str(rej.metrics.get("manifest_sha256") or ""), bundle_sha256=ticket.sha256,
                    bundle_size_bytes=ticket.size_bytes, bundle_uri=uri, signature="", nodes_json="{}",
                    manifest_json="{}", details_json=json.dumps(metrics, default=str), received_at=received_at))
            except ServiceError as exc:
                raise ApiError(503, "service_unavailable", f"{exc}; complete the upload again") from exc
        if not self.settings.ingest_keep_rejected:
            try:
                self.store.delete(key)
            except (ObjectStoreError, OSError):
                pass  # the incoming/ prefix is swept by age as well
        raise ApiError(422, rej.reason_code, str(rej), details=metrics, submission_id=sid)

    def close(self) -> None:
        self.emitter.close()

    # --- reads ---------------------------------------------------------------------------

    def report(self, submission_id: str) -> dict[str, Any]:
        """The submission's final verdict only: an upload attempt rejected by the ingest
        checks is not one (anyone may upload under any submission id), so without a
        final verdict the answer is 404 and the rejected attempts are listed in its
        details (``GET /v1/uploads/{upload_id}`` has each one's report)."""
        report = warehouse.get_report(self.client, submission_id, attempts=False)
        accepted = self.receipts.accepted(submission_id=submission_id)
        if report is None:
            if accepted is not None:
                raise ApiError(404, "verification_pending", "accepted at ingestion; no verdict yet",
                               submission_id=submission_id, details={"upload_id": accepted.upload_id})
            rejected = [{"upload_id": r.upload_id, "miner_id": r.miner_id, "reason_code": r.reason_code,
                         "received_at": warehouse.iso_ms(r.received_at)}
                        for r in self.receipts.for_submission(submission_id) if r.status == "rejected"]
            raise ApiError(404, "report_not_found", f"no verdict for {submission_id}" +
                           (f" ({len(rejected)} upload attempt(s) rejected at ingestion)" if rejected else ""),
                           submission_id=submission_id, details={"rejected_uploads": rejected} if rejected else None)
        report["ingest"] = accepted.public() if accepted else None
        report["upload_id"] = accepted.upload_id if accepted else None
        return report

    def upload_status(self, upload_id: str) -> dict[str, Any]:
        """Where one upload stands, and the verdict that is its own: the attempt's own
        rejection, or the submission's final verdict when it was judged on this upload's
        bundle (its accepted or resumed receipt names the same stored object)."""
        receipt = self.receipts.for_upload(upload_id)
        if receipt is None:
            spent = self.requests.find_upload(upload_id)
            if spent is None:
                raise ApiError(404, "upload_not_found", f"no upload {upload_id}")
            return {"upload_id": upload_id, "submission_id": spent.submission_id, "miner_id": spent.miner_id,
                    "status": "requested", "decided": False}
        out: dict[str, Any] = {"upload_id": upload_id, "submission_id": receipt.submission_id,
                               "miner_id": receipt.miner_id, "bundle_sha256": receipt.bundle_sha256}
        if receipt.status == "rejected":
            own = warehouse.upload_verdicts(self.client, receipt.submission_id, upload_id=upload_id)
            return out | {"status": "rejected", "decided": True, "verdict": "rejected",
                          "reason_code": receipt.reason_code, "failed_gate": INGEST_GATE, "points": 0.0,
                          "report": own[-1] if own else None}
        report = warehouse.get_report(self.client, receipt.submission_id, attempts=False)
        if report is None:
            return out | {"status": "verification_pending", "decided": False}
        if report.get("bundle_uri") != receipt.bundle_uri:
            # decided on another upload's bundle (only one upload of a submission is accepted)
            return out | {"status": "superseded", "decided": True}
        return out | {"status": "decided", "decided": True, "verdict": report.get("verdict"),
                      "reason_code": report.get("reason_code"), "failed_gate": report.get("failed_gate"),
                      "points": report.get("points"), "report": report}

    def ledger(self, miner_id: str) -> dict[str, Any]:
        entries = warehouse.ledger_entries(self.client, miner_id)
        return {"miner_id": miner_id, "balance": float(sum(e["points"] for e in entries)), "entries": entries}

    def _maybe_sweep(self) -> None:
        # piggy-backs on upload requests (no extra thread): at most once per interval
        now = time.monotonic()
        if now - self._last_sweep >= SWEEP_INTERVAL_S:
            self._last_sweep = now
            try:
                self.sweep_incoming()
            except (ObjectStoreError, OSError):
                pass  # best effort: the next interval tries again

    def sweep_incoming(self, older_than_s: float | None = None) -> int:
        """Delete uploads never completed (their tickets have expired past the grace)."""
        horizon = time.time() - (older_than_s if older_than_s is not None else
                                 self.settings.ingest_url_ttl_s + self.settings.ingest_complete_grace_s)
        removed = 0
        for obj in list(self.store.list("incoming/")):
            if obj.modified_at < horizon:
                self.store.delete(obj.key)
                removed += 1
        return removed


def _json_safe(metrics: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(metrics, default=str))


def build_service(settings: Settings, *, client, bootstrap: str, store: ObjectStore | None = None,
                  catalogue: Catalogue | None = None) -> IngestService:
    """An ``IngestService`` from settings: object store (with the upload secret), gate
    config version, topic catalogue, producer."""
    from kibotos.config.gates import load_config
    from kibotos.objectstore import LocalObjectStore, S3ObjectStore, store_from_settings

    secret = ingest_secret(settings)
    put_secret = hashlib.sha256(b"local-put\n" + secret).digest()  # a key of its own for upload URLs
    if store is None:
        store = store_from_settings(settings, upload_secret=put_secret)
    elif isinstance(store, LocalObjectStore):
        store = LocalObjectStore(store.root, upload_secret=put_secret)
    if isinstance(store, S3ObjectStore):
        store.ensure_bucket()
    return IngestService(settings=settings, store=store, client=client, emitter=Emitter(bootstrap),
                         catalogue=catalogue or Catalogue.from_settings(settings), secret=secret,
                         config_version=load_config(settings.gate_config_path).config_version)
