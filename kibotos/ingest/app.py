"""The ingest HTTP API (FastAPI): routes, request/response models, error mapping.

Every answer that is not a success has the same JSON body (``ErrorBody``: reason code,
message, details) and a documented status; the OpenAPI spec is served at
``/openapi.json`` (Swagger UI at ``/docs``) and is what the contract test checks.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from kibotos.errors import KibotosError, ServiceError
from kibotos.ingest.service import ApiError, IngestService
from kibotos.objectstore import LocalObjectStore, ObjectStoreError

log = logging.getLogger("kibotos.ingest")

_B58 = r"^[1-9A-HJ-NP-Za-km-z]+$"
_HEX64 = r"^[0-9a-f]{64}$"
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class ErrorBody(BaseModel):
    reason_code: str = Field(description="stable snake_case code, e.g. rate_limited, hash_mismatch")
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    submission_id: str | None = None


class UploadRequest(BaseModel):
    """Ask for an upload URL. ``signature`` is the miner's Ed25519 signature (base58) of
    ``kibotos.identity.upload_request_message(miner_id, submission_id, size_bytes,
    sha256, requested_at_ms)``."""

    model_config = ConfigDict(extra="forbid")

    miner_id: str = Field(min_length=32, max_length=44, pattern=_B58, description="base58 Ed25519 public key")
    submission_id: str = Field(pattern=_UUID, description="the manifest's submission_id")
    size_bytes: int = Field(ge=1, le=1 << 40, description="exact size of the bundle file")
    sha256: str = Field(pattern=_HEX64, description="hex SHA-256 of the bundle file")
    requested_at_ms: int = Field(ge=0, le=1 << 53, description="client clock, epoch milliseconds")
    signature: str = Field(min_length=64, max_length=100, pattern=_B58)


class UploadGrant(BaseModel):
    upload_id: str
    submission_id: str
    miner_id: str
    ticket: str = Field(description="opaque, HMAC-signed; send it back to complete the upload")
    method: str = Field(description="always PUT")
    put_url: str = Field(description="presigned: expires, bound to this object key, size and SHA-256")
    headers: dict[str, str] = Field(description="send these headers verbatim with the PUT (they are signed)")
    expires_at: int = Field(description="epoch seconds")
    max_bytes: int
    complete_url: str


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticket: str = Field(min_length=1, max_length=8192)
    signature: dict[str, Any] | None = Field(
        default=None, description="the signature sidecar <bundle>.sig.json (kibotos.identity.BundleSignature); "
                                  "an upload without one is rejected as unsigned")


class Accepted(BaseModel):
    submission_id: str
    upload_id: str
    miner_id: str
    status: str = Field(description="accepted: verified at ingestion and sent to the gates")
    resumed: bool = Field(default=False, description="true: a re-upload of a submission accepted earlier and "
                                                      "stuck without a verdict, sent to the gates again")
    merkle_root: str
    manifest_sha256: str
    bundle_uri: str
    received_at: int


class Stored(BaseModel):
    key: str
    size_bytes: int
    sha256: str


class Health(BaseModel):
    status: str
    store: str


class Report(BaseModel):
    """The verification report (see ``kibotos.reports.model.VerificationReport``) plus the
    ingestion receipt (hash tree, manifest hash, signature) under ``ingest``."""

    model_config = ConfigDict(extra="allow")

    submission_id: str
    verdict: str
    reason_code: str | None = None
    failed_gate: str | None = None
    ingest: dict[str, Any] | None = None


class UploadStatus(BaseModel):
    """One upload and the verdict that is its own. ``status``: ``requested`` (ticket
    issued, not completed), ``rejected`` (this attempt failed the ingest checks: a verdict
    on the attempt, never on the submission), ``verification_pending``, ``decided`` (the
    submission's final verdict, judged on this upload's bundle), ``superseded`` (the
    submission was decided on another upload)."""

    upload_id: str
    submission_id: str
    miner_id: str
    status: str
    decided: bool
    bundle_sha256: str | None = None
    verdict: str | None = None
    reason_code: str | None = None
    failed_gate: str | None = None
    points: float | None = None
    report: dict[str, Any] | None = None


class LedgerEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    entry_id: str
    miner_id: str
    submission_id: str
    kind: str
    points: float
    created_at: str | None = None


class Ledger(BaseModel):
    miner_id: str
    balance: float
    entries: list[LedgerEntry]


class XGenUploadRequest(BaseModel):
    """Ask for an upload URL for an XGen source (a human demonstration). ``signature``:
    the uploader's Ed25519 signature (base58) of ``kibotos.ingest.xgen.xgen_request_message``."""

    model_config = ConfigDict(extra="forbid")

    miner_id: str = Field(min_length=32, max_length=44, pattern=_B58, description="base58 Ed25519 public key")
    request_id: str = Field(pattern=_UUID, description="the XGen request id the uploader chose")
    size_bytes: int = Field(ge=1, le=1 << 40)
    sha256: str = Field(pattern=_HEX64)
    requested_at_ms: int = Field(ge=0, le=1 << 53)
    task_id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    task_version: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    source_kind: Literal["video", "keypoints"]
    annotation: dict[str, Any] | None = Field(default=None, description="ts/te (s), anchor type, key bodies")
    signature: str = Field(min_length=64, max_length=100, pattern=_B58)


class XGenGrant(BaseModel):
    upload_id: str
    request_id: str
    miner_id: str
    ticket: str
    method: str
    put_url: str
    headers: dict[str, str]
    expires_at: int
    max_bytes: int
    complete_url: str


class XGenCompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticket: str = Field(min_length=1, max_length=8192)


class XGenAccepted(BaseModel):
    request_id: str
    upload_id: str
    uploader: str
    status: str
    source_uri: str
    source_sha256: str
    requested_at: int


class XGenStatus(BaseModel):
    """``kibotos.xgen.status``: state (queued | running | rejected | done), progress in
    [0, 1], the stage results and the clips with their quality."""

    model_config = ConfigDict(extra="allow")

    request_id: str
    state: str
    progress: float


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


_PUT_STATUS = {"url_signature_invalid": 403, "url_expired": 403, "length_required": 411,
               "upload_size_mismatch": 400, "upload_hash_mismatch": 400, "upload_too_large": 413,
               "object_uri_invalid": 400}


def create_app(service: IngestService) -> FastAPI:
    """The ingest API over ``service`` (build one with ``kibotos.ingest.service.build_service``)."""
    app = FastAPI(
        title="Kibotos ingest API",
        version="1.0.0",
        description="Signed, presigned, rate-limited uploads of robot demonstration bundles. Miner workflow: "
                    "POST /v1/uploads -> PUT put_url -> POST complete_url -> GET /v1/reports/{submission_id}.",
    )
    app.state.service = service

    def error(exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))[:200]}
                    for e in exc.errors()[:10]]
        return error(ApiError(422, "request_invalid", "the request does not match the API schema",
                              details={"problems": problems}))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # an unparseable body: the same answer as any invalid request
            return error(ApiError(422, "request_invalid", str(exc.detail)))
        return error(ApiError(exc.status_code, "not_found" if exc.status_code == 404 else "http_error",
                              str(exc.detail)))

    @app.exception_handler(KibotosError)
    async def _domain(_request: Request, exc: KibotosError) -> JSONResponse:
        # a backing service failed (broker, ClickHouse, S3): the miner may retry
        status = 503 if isinstance(exc, ServiceError) else 500
        return error(ApiError(status, exc.reason_code, str(exc)[:500], headers={"Retry-After": "5"}))

    @app.exception_handler(Exception)
    async def _crash(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("ingest API: unhandled error")
        return error(ApiError(500, "internal_error", f"{type(exc).__name__}"))

    @app.get("/v1/health", response_model=Health, tags=["operations"])
    def health() -> dict[str, Any]:
        """Liveness: the API answers."""
        return {"status": "ok", "store": service.store.scheme}

    @app.post("/v1/uploads", status_code=201, response_model=UploadGrant, tags=["miners"],
              responses=_errors(401, 409, 413, 422, 429, 503))
    def request_upload(body: UploadRequest, request: Request) -> dict[str, Any]:
        """Request a presigned, expiring, size- and content-bound upload URL for one bundle.

        401 unsigned/forged request or stale clock, 409 ``request_replayed`` (a signed
        request is single-use) or ``bundle_replayed`` (submission already accepted and
        not stuck), 413 over the global size limit, 429 rate limited (with ``Retry-After``).
        """
        return service.request_upload(body.model_dump(), str(request.base_url))

    @app.put("/v1/objects/{key:path}", status_code=201, response_model=Stored, tags=["miners"],
             responses=_errors(400, 403, 404, 411, 413, 422),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def put_object(
        request: Request,
        key: str = PathParam(description="object key from put_url"),
        expires: str = Query(max_length=20), size: str = Query(max_length=20),
        sha256: str = Query(max_length=64), signature: str = Query(max_length=64),
    ) -> dict[str, Any]:
        """The embedded store's presigned PUT (S3 stores are written directly): the URL's
        HMAC, expiry, ``Content-Length`` and SHA-256 are checked; the object appears only
        once complete and intact."""
        store = service.store
        if not isinstance(store, LocalObjectStore):
            raise ApiError(404, "not_found", "uploads go to the S3 server named in put_url")
        try:
            upload = store.begin_upload(key, expires=expires, size=size, sha256=sha256, signature=signature,
                                        content_length=request.headers.get("content-length"),
                                        checksum=request.headers.get("x-amz-checksum-sha256"))
        except ObjectStoreError as exc:
            raise ApiError(_PUT_STATUS.get(exc.reason_code, 400), exc.reason_code, str(exc)) from exc
        try:
            async for chunk in request.stream():
                upload.write(chunk)
            stored = upload.commit()
        except ObjectStoreError as exc:
            upload.abort()
            raise ApiError(_PUT_STATUS.get(exc.reason_code, 400), exc.reason_code, str(exc)) from exc
        except BaseException:
            upload.abort()
            raise
        return {"key": key, "size_bytes": stored.size_bytes, "sha256": stored.sha256}

    @app.post("/v1/uploads/{upload_id}/complete", response_model=Accepted, tags=["miners"],
              responses=_errors(401, 404, 409, 410, 422, 503))
    def complete_upload(body: CompleteRequest, upload_id: str = PathParam(max_length=64)) -> dict[str, Any]:
        """Verify the stored bundle (hashes, signature, structure, limits) and, if it
        passes, emit ``submissions.received``.

        422: rejected at ingestion — the body's ``reason_code`` says why, and a verdict
        with that reason is recorded for this upload attempt (not for the submission,
        which its owner may still upload). 409: a replay of an accepted bundle. 404:
        nothing uploaded yet. 410: the ticket expired. A re-upload of a submission
        accepted earlier but stuck without a verdict is sent to the gates again
        (``resumed: true``).
        """
        return service.complete(upload_id, body.ticket, body.signature)

    @app.get("/v1/uploads/{upload_id}", response_model=UploadStatus, tags=["miners"],
             responses=_errors(404, 422))
    def get_upload(upload_id: str = PathParam(max_length=64)) -> dict[str, Any]:
        """One upload's status and its own verdict: what ``kibotos miner submit --wait``
        waits for. 404 ``upload_not_found``."""
        return service.upload_status(upload_id)

    @app.get("/v1/reports/{submission_id}", response_model=Report, tags=["miners", "validators"],
             responses=_errors(404, 422))
    def get_report(submission_id: str = PathParam(max_length=64)) -> dict[str, Any]:
        """The submission's final verification report, with the accepted upload's
        ingestion receipt under ``ingest``. 404 ``verification_pending`` while the gates
        are still judging; 404 ``report_not_found`` otherwise — upload attempts rejected
        at ingestion are not the submission's verdict (``details.rejected_uploads``
        lists them; see ``GET /v1/uploads/{upload_id}``)."""
        return service.report(submission_id)

    @app.get("/v1/miners/{miner_id}/ledger", response_model=Ledger, tags=["miners"], responses=_errors(422))
    def get_ledger(miner_id: str = PathParam(max_length=128)) -> dict[str, Any]:
        """A miner's points ledger: every entry and the balance."""
        return service.ledger(miner_id)

    from kibotos.ingest.xgen import XGenUploads

    xgen = XGenUploads(service)

    @app.post("/v1/xgen/uploads", status_code=201, response_model=XGenGrant, tags=["xgen"],
              responses=_errors(401, 409, 413, 422, 429, 503))
    def xgen_request_upload(body: XGenUploadRequest, request: Request) -> dict[str, Any]:
        """Request a presigned upload URL for an XGen source (video .mp4 or keypoints .npz);
        signed and rate limited like bundle uploads. 409 ``xgen_request_exists``."""
        return xgen.request_upload(body.model_dump(), str(request.base_url))

    @app.post("/v1/xgen/uploads/{upload_id}/complete", response_model=XGenAccepted, tags=["xgen"],
              responses=_errors(401, 404, 409, 410, 422, 503))
    def xgen_complete(body: XGenCompleteRequest, upload_id: str = PathParam(max_length=64)) -> dict[str, Any]:
        """Check the stored source (size, SHA-256) and emit ``xgen.requests``."""
        return xgen.complete(upload_id, body.ticket)

    @app.get("/v1/xgen/{request_id}", response_model=XGenStatus, tags=["xgen"], responses=_errors(404, 422))
    def xgen_status(request_id: str = PathParam(pattern=_UUID)) -> dict[str, Any]:
        """An XGen request's state, progress, stage results and clips. 404 ``xgen_request_not_found``;
        422 ``request_invalid`` for an id that is not a UUID (every request id is one)."""
        return xgen.status(request_id)

    return app
