"""Upload tickets: what the ingest API hands out with a presigned URL and takes back at
completion. A ticket is self-contained and HMAC-signed (``<base64url JSON>.<base64url
MAC>``), so any ingest replica sharing the secret can complete any upload without a
session table, and nothing in it can be altered by the miner."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import asdict, dataclass

from kibotos.errors import KibotosError

_DOMAIN = b"kibotos.upload-ticket.v1"


class TicketError(KibotosError):
    reason_code = "ticket_invalid"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class UploadTicket:
    upload_id: str
    submission_id: str
    miner_id: str
    key: str  # object key the presigned URL writes
    size_bytes: int
    sha256: str
    issued_at: int  # epoch seconds
    expires_at: int  # the presigned URL's expiry

    def encode(self, secret: bytes) -> str:
        body = json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()
        mac = hmac.new(secret, _DOMAIN + b"\n" + body, hashlib.sha256).digest()
        return f"{_b64(body)}.{_b64(mac)}"

    @classmethod
    def decode(cls, token: str, secret: bytes) -> "UploadTicket":
        """:raises TicketError: malformed or not issued with ``secret``."""
        try:
            body_b64, mac_b64 = token.split(".")
            body, mac = _unb64(body_b64), _unb64(mac_b64)
        except (ValueError, AttributeError) as exc:
            raise TicketError("malformed upload ticket") from exc
        expected = hmac.new(secret, _DOMAIN + b"\n" + body, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, mac):
            raise TicketError("upload ticket signature does not match")
        try:
            return cls(**json.loads(body))
        except (ValueError, TypeError) as exc:
            raise TicketError("malformed upload ticket body") from exc
