"""The ``kibotos.ingest_receipts`` table: what ingestion stored about each upload, and
the durable record of accepted Merkle roots that replay detection reads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from kibotos.errors import ServiceError

TABLE = "kibotos.ingest_receipts"
COLUMNS = ("submission_id", "upload_id", "miner_id", "status", "reason_code", "merkle_root", "manifest_sha256",
           "bundle_sha256", "bundle_size_bytes", "bundle_uri", "signature", "nodes_json", "manifest_json",
           "details_json", "received_at")


@dataclass(frozen=True)
class Receipt:
    submission_id: str
    upload_id: str
    miner_id: str
    status: str  # "accepted" (sent to verification) | "rejected" | "resumed" (a stuck accepted one re-sent)
    reason_code: str | None
    merkle_root: str
    manifest_sha256: str
    bundle_sha256: str
    bundle_size_bytes: int
    bundle_uri: str
    signature: str
    nodes_json: str
    manifest_json: str
    details_json: str
    received_at: int  # epoch ms

    def public(self) -> dict[str, Any]:
        """The receipt as the API shows it (JSON columns decoded)."""
        out = asdict(self)
        for name in ("nodes_json", "manifest_json", "details_json"):
            out[name.removesuffix("_json")] = json.loads(out.pop(name) or "null")
        return out


class Receipts:
    """Reads and writes receipts through a clickhouse-connect client."""

    def __init__(self, client):
        self.client = client

    def insert(self, receipt: Receipt) -> None:
        row = asdict(receipt)
        try:
            self.client.insert(TABLE, [[row[c] for c in COLUMNS]], column_names=list(COLUMNS))
        except Exception as exc:
            raise ServiceError(f"cannot record the ingestion receipt: {exc}") from exc

    def _query(self, where: str, params: dict) -> list[Receipt]:
        sql = (f"SELECT {', '.join(COLUMNS[:-1])}, toUnixTimestamp64Milli(received_at) FROM {TABLE} FINAL "
               f"WHERE {where} ORDER BY received_at")
        try:
            rows = self.client.query(sql, parameters=params).result_rows
        except Exception as exc:
            raise ServiceError(f"cannot read ingestion receipts: {exc}") from exc
        return [Receipt(*row) for row in rows]

    def accepted(self, *, submission_id: str | None = None, merkle_root: str | None = None) -> Receipt | None:
        """The accepted receipt with this submission id or Merkle root, if any."""
        clauses, params = [], {}
        if submission_id is not None:
            clauses.append("submission_id = {sid:String}")
            params["sid"] = submission_id
        if merkle_root is not None:
            clauses.append("merkle_root = {root:String}")
            params["root"] = merkle_root
        if not clauses:
            return None
        rows = self._query(f"status = 'accepted' AND ({' OR '.join(clauses)})", params)
        return rows[0] if rows else None

    def for_submission(self, submission_id: str) -> list[Receipt]:
        return self._query("submission_id = {sid:String}", {"sid": submission_id})

    def for_upload(self, upload_id: str) -> Receipt | None:
        rows = self._query("upload_id = {uid:String}", {"uid": upload_id})
        return rows[-1] if rows else None

    def last_emitted_ms(self, submission_id: str) -> int | None:
        """When the submission was last sent to verification: accepted, or resumed since."""
        rows = self._query("submission_id = {sid:String} AND status IN ('accepted', 'resumed')", {"sid": submission_id})
        return max((r.received_at for r in rows), default=None)
