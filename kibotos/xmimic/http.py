"""Policy routes of the read API (``kibotos.reports.server``):

``GET /policies`` (every policy, its latest SR/GSR), ``GET /policies/<id>`` (the policy
document of ``kibotos.xmimic.policy_reads``), ``GET /policies/<id>.html`` (its page),
``GET /policies/<id>/checkpoint`` (the checkpoint file). The warehouse first (under the
server's query lock), then the local registry under ``home``.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import cast
from urllib.parse import quote

from kibotos.xmimic import policy_reads

POLICY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
JSON = "application/json"


def _doc(client, lock, home: Path | None, policy_id: str) -> dict | None:
    doc = None
    if client is not None:
        with lock or contextlib.nullcontext():
            doc = policy_reads.warehouse_policy(client, policy_id)
    if home is not None:
        doc = policy_reads.merge(doc, policy_reads.registry_doc(home, policy_id))
    return doc


def _checkpoint_bytes(doc: dict, home: Path | None, store) -> bytes | None:
    if home is not None and (local := policy_reads.registry_model(home, doc["policy_id"])) is not None:
        return local.read_bytes()
    uri = doc.get("checkpoint_uri")
    if uri and store is not None:
        with contextlib.suppress(Exception):
            return store.read_bytes(uri, max_bytes=1 << 31)
    if uri and uri.startswith("file://"):
        p = Path(uri[len("file://"):])
        return p.read_bytes() if p.is_file() else None
    return None


def _preview(home: Path | None, policy_id: str) -> bytes | None:
    if home is None:
        return None
    p = home / "policies" / policy_id / "preview.mp4"
    return p.read_bytes() if p.is_file() else None


def policy_route(parts: list[str], *, client=None, lock=None, home: Path | None = None,
                 store=None) -> tuple[int, object, str] | None:
    """``(status, body, content type)`` for a ``/policies`` path, None for other paths."""
    if not parts or parts[0] != "policies":
        return None
    if parts == ["policies"]:
        rows = []
        if client is not None:
            with lock or contextlib.nullcontext():
                rows = policy_reads.warehouse_policies(client)
        if home is not None:
            local = {r["policy_id"]: r for r in policy_reads.registry_list(home)}
            rows = [cast(dict, policy_reads.merge(r, local.get(r["policy_id"]))) for r in rows]  # r is a row
            known = {r["policy_id"] for r in rows}
            rows += [r for pid, r in local.items() if pid not in known]
        return 200, rows, JSON
    html = len(parts) == 2 and parts[1].endswith(".html")
    pid = parts[1][: -len(".html")] if html else parts[1]
    if not POLICY_ID.match(pid) or len(parts) > 3 or (len(parts) == 3 and parts[2] != "checkpoint"):
        return 400, {"error": f"no policy route /{'/'.join(parts)}", "reason_code": "xmimic_policy_id_invalid"}, JSON
    doc = _doc(client, lock, home, pid)
    if doc is None:
        return 404, {"error": f"no policy {pid!r}", "reason_code": "xmimic_policy_unknown"}, JSON
    if len(parts) == 3:
        data = _checkpoint_bytes(doc, home, store)
        if data is None:
            return 404, {"error": f"policy {pid!r} has no stored checkpoint", "reason_code": "xmimic_policy_unknown"}, JSON
        return 200, data, "application/octet-stream"
    if html:
        from kibotos.xmimic.html import page_for

        has_ckpt = bool(doc.get("checkpoint_uri")) or (home is not None and policy_reads.registry_model(home, pid))
        return 200, page_for(doc, checkpoint_href=f"/policies/{quote(pid)}/checkpoint" if has_ckpt else None,
                             preview_mp4=_preview(home, pid)), "text/html; charset=utf-8"
    return 200, doc, JSON
