"""The miner's side of the ingest API: request an upload, PUT the bytes, complete it,
watch the verdict. Used by ``kibotos miner submit`` and the demo."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from kibotos.errors import KibotosError, ServiceError
from kibotos.identity import BundleSignature, Keypair, sidecar_path, sign_bundle, upload_request_message
from kibotos.objectstore import sha256_file


class IngestRefused(KibotosError):
    """The ingest API said no: ``status``, ``reason_code``, the error ``body``."""

    def __init__(self, status: int, body: dict[str, Any], retry_after: float | None = None):
        super().__init__(str(body.get("message") or f"HTTP {status}"), reason_code=str(body.get("reason_code") or
                                                                                         f"http_{status}"))
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.submission_id = body.get("submission_id")


@dataclass(frozen=True)
class SubmitOutcome:
    path: Path
    submission_id: str
    accepted: bool  # accepted at ingestion (the gates decide the verdict)
    reason_code: str | None = None
    detail: str = ""
    status: int = 200
    upload_id: str | None = None  # this upload: its own verdict is GET /v1/uploads/{upload_id}
    resumed: bool = False  # a stuck submission accepted earlier, sent to verification again


class IngestClient:
    """:param base_url: e.g. ``http://127.0.0.1:8800`` (``stack.json``'s ``ingest_url``)."""

    def __init__(self, base_url: str, timeout_s: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(timeout=timeout_s)
        self._last_request_ms = 0

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "IngestClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, url: str, **kwargs) -> dict[str, Any]:
        try:
            resp = self.http.request(method, url if url.startswith("http") else self.base_url + url, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach the ingest API at {self.base_url}: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = {"message": resp.text[:500]}
        if resp.status_code >= 400:
            retry = resp.headers.get("Retry-After")
            raise IngestRefused(resp.status_code, body if isinstance(body, dict) else {"message": str(body)},
                                float(retry) if retry and retry.isdigit() else None)
        return body

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/v1/health")

    def request_upload(self, keypair: Keypair, path: Path, submission_id: str) -> dict[str, Any]:
        size, digest = path.stat().st_size, sha256_file(path)
        # a signed request is single-use (the API refuses a repeat as request_replayed):
        # two requests for the same bundle must differ, even within one millisecond
        now = self._last_request_ms = max(int(time.time() * 1000), self._last_request_ms + 1)
        sig = keypair.sign(upload_request_message(keypair.miner_id, submission_id, size, digest, now))
        return self._call("POST", "/v1/uploads", json={
            "miner_id": keypair.miner_id, "submission_id": submission_id, "size_bytes": size, "sha256": digest,
            "requested_at_ms": now, "signature": sig})

    def put(self, grant: dict[str, Any], path: Path) -> None:
        """PUT the file to the presigned URL with its signed headers (streamed)."""
        try:
            with open(path, "rb") as fh:
                resp = self.http.request(grant.get("method", "PUT"), grant["put_url"], content=fh,
                                         headers=grant.get("headers") or {})
        except httpx.HTTPError as exc:
            raise ServiceError(f"upload to {grant['put_url'].split('?')[0]} failed: {exc}") from exc
        if resp.status_code >= 300:
            raise IngestRefused(resp.status_code, _error_body(resp))

    def complete(self, grant: dict[str, Any], signature: BundleSignature | dict | None) -> dict[str, Any]:
        doc = signature.model_dump(mode="json") if isinstance(signature, BundleSignature) else signature
        return self._call("POST", grant["complete_url"], json={"ticket": grant["ticket"], "signature": doc})

    def fetch_report(self, submission_id: str) -> dict[str, Any]:
        """The submission's final report; :raises IngestRefused: none (404 with the reason:
        ``verification_pending``, or ``report_not_found`` listing rejected upload attempts)."""
        return self._call("GET", f"/v1/reports/{submission_id}")

    def report(self, submission_id: str) -> dict[str, Any] | None:
        try:
            return self.fetch_report(submission_id)
        except IngestRefused as exc:
            if exc.status == 404:
                return None
            raise

    def upload_status(self, upload_id: str) -> dict[str, Any]:
        """One upload's status and its own verdict (``GET /v1/uploads/{upload_id}``)."""
        return self._call("GET", f"/v1/uploads/{upload_id}")

    def wait_upload(self, upload_id: str, timeout_s: float = 300.0, poll_s: float = 0.5) -> dict[str, Any]:
        """Wait for the verdict of this upload — never another upload's: not an
        attacker's rejected attempt under the same submission id, not a verdict judged on
        another bundle. Returns the upload status once ``decided``."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.upload_status(upload_id)
            if status.get("decided"):
                return status
            if time.monotonic() > deadline:
                raise ServiceError(f"no verdict for upload {upload_id} after {timeout_s:.0f}s "
                                   f"(status {status.get('status')})")
            time.sleep(poll_s)

    def wait_report(self, submission_id: str, timeout_s: float = 300.0, poll_s: float = 0.5) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            report = self.report(submission_id)
            if report is not None:
                return report
            if time.monotonic() > deadline:
                raise ServiceError(f"no verdict for {submission_id} after {timeout_s:.0f}s")
            time.sleep(poll_s)

    def ledger(self, miner_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/miners/{miner_id}/ledger")

    def submit(self, path: str | Path, keypair: Keypair, signature: BundleSignature | None = None,
               *, sign: bool = True, max_wait_s: float = 0.0) -> SubmitOutcome:
        """Upload one bundle with its signature: the sidecar next to it, else (``sign``)
        a fresh signature. Refusals by the API become a ``SubmitOutcome`` with the
        reason code; transport failures raise.

        :param max_wait_s: when rate limited (429) or busy (503), wait as ``Retry-After``
            says and try again, for at most this long in total.
        """
        path = Path(path)
        if signature is None:
            side = sidecar_path(path)
            if side.is_file():
                signature = BundleSignature.model_validate_json(side.read_text())
            elif sign:
                signature = sign_bundle(path, keypair, write=False)
            else:
                raise KibotosError(f"{path} has no signature sidecar {side.name}", reason_code="signature_missing")
        sid = str(signature.submission_id)
        deadline = time.monotonic() + max_wait_s
        while True:
            grant: dict[str, Any] = {}
            try:
                grant = self.request_upload(keypair, path, sid)
                self.put(grant, path)
                done = self.complete(grant, signature)
            except IngestRefused as exc:
                wait = exc.retry_after or 1.0
                if exc.status in (429, 503) and time.monotonic() + wait <= deadline:
                    time.sleep(wait)
                    continue
                return SubmitOutcome(path, sid, False, exc.reason_code, str(exc), exc.status,
                                     upload_id=grant.get("upload_id"))
            return SubmitOutcome(path, done["submission_id"], True, None, done.get("merkle_root", ""),
                                 upload_id=done.get("upload_id"), resumed=bool(done.get("resumed")))


def _error_body(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
        if isinstance(body, dict):
            return body
    except ValueError:
        pass
    # S3 servers answer in XML: keep the code and message
    code = re.search(r"<Code>([^<]+)</Code>", resp.text)
    msg = re.search(r"<Message>([^<]+)</Message>", resp.text)
    return {"reason_code": f"s3_{code.group(1)}" if code else f"http_{resp.status_code}",
            "message": msg.group(1) if msg else resp.text[:300]}
