"""Signed upload requests are single-use: the ``kibotos.ingest_requests`` table.

A miner signs ``upload_request_message(miner, submission, size, sha256, requested_at_ms)``.
Without a record of what was honoured, one captured request could be sent again and again
while it is fresh (``ingest_request_max_skew_s``): each copy would get a ticket and spend
the miner's rate-limit tokens. So the API keys each request by the SHA-256 of its signed
message (the signature is not the key: another valid signature over the same message is
the same request) and records it before answering; a request found here is refused with
``request_replayed``.

The upload id is derived from the request id, so even two ingest replicas racing on the
same request (ClickHouse has no compare-and-set) grant the same upload, the same object
key and the same completion: one ticket's worth of effect.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass

from kibotos.errors import ServiceError

TABLE = "kibotos.ingest_requests"
_UPLOAD_NS = uuid.UUID("6b1b0f3e-5c7a-4e0b-9a55-0c2f4f3a7d11")  # names upload ids derived from requests


def request_id(message: bytes) -> str:
    """The key of a signed upload request: hex SHA-256 of the exact signed message."""
    return hashlib.sha256(b"kibotos.upload-request-id.v1\n" + message).hexdigest()


def upload_id_for(req_id: str) -> str:
    """The upload id granted to a request (deterministic, a UUID)."""
    return str(uuid.uuid5(_UPLOAD_NS, req_id))


@dataclass(frozen=True)
class SpentRequest:
    request_id: str
    miner_id: str
    submission_id: str
    upload_id: str
    requested_at: int  # epoch ms, the client's clock as signed


class RequestLog:
    """Reads and writes spent requests through a clickhouse-connect client.

    ``spend`` is atomic within one process (a lock around look-up and insert); the table
    makes it hold across restarts and replicas."""

    def __init__(self, client):
        self.client = client
        self._lock = threading.Lock()

    def find(self, req_id: str) -> SpentRequest | None:
        return self._find_by("request_id", req_id)

    def find_upload(self, upload_id: str) -> SpentRequest | None:
        return self._find_by("upload_id", upload_id)

    def _find_by(self, column: str, value: str) -> SpentRequest | None:
        try:
            rows = self.client.query(
                f"SELECT request_id, miner_id, submission_id, upload_id, toUnixTimestamp64Milli(requested_at) "
                f"FROM {TABLE} FINAL WHERE {column} = {{value:String}} LIMIT 1", parameters={"value": value},
            ).result_rows
        except Exception as exc:
            raise ServiceError(f"cannot read spent upload requests: {exc}") from exc
        return SpentRequest(*rows[0]) if rows else None

    def spend(self, spent: SpentRequest) -> SpentRequest | None:
        """Record ``spent`` unless its request was spent already.

        :returns: the earlier record if the request was already spent, else ``None``.
        :raises ServiceError: the table cannot be read or written.
        """
        with self._lock:
            earlier = self.find(spent.request_id)
            if earlier is not None:
                return earlier
            try:
                self.client.insert(TABLE, [[spent.request_id, spent.miner_id, spent.submission_id, spent.upload_id,
                                            spent.requested_at]],
                                   column_names=["request_id", "miner_id", "submission_id", "upload_id",
                                                 "requested_at"])
            except Exception as exc:
                raise ServiceError(f"cannot record the upload request: {exc}") from exc
            return None
