"""Policy routes of the read API (``kibotos.reports.server``):

``GET /policies`` (every policy, its latest SR/GSR), ``GET /policies/<id>`` (the policy
document of ``kibotos.xmimic.policy_reads``), ``GET /policies/<id>.html`` (its page),
``GET /policies/<id>/checkpoint`` (the checkpoint file), ``GET /policies/<id>/preview.mp4``
(the rollout preview, from the object store, else the local registry; the page's ``<video>``
points there). The warehouse first (under the server's query lock), then the local registry
under ``home``.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import cast
from urllib.parse import quote

from kibotos.errors import KibotosError
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


def _preview(home: Path | None, store, policy_id: str) -> bytes | None:
    from kibotos.xmimic.preview import find_preview

    return find_preview(policy_id, store=store, home=home)


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
    if not POLICY_ID.match(pid) or len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("checkpoint", "preview.mp4")):
        return 400, {"error": f"no policy route /{'/'.join(parts)}", "reason_code": "xmimic_policy_id_invalid"}, JSON
    doc = _doc(client, lock, home, pid)
    if doc is None:
        return 404, {"error": f"no policy {pid!r}", "reason_code": "xmimic_policy_unknown"}, JSON
    if len(parts) == 3 and parts[2] == "preview.mp4":
        video = _preview(home, store, pid)
        if video is None:
            return 404, {"error": f"policy {pid!r} has no rollout preview", "reason_code": "xmimic_preview_missing"}, JSON
        return 200, video, "video/mp4"
    if len(parts) == 3:
        data = _checkpoint_bytes(doc, home, store)
        if data is None:
            return 404, {"error": f"policy {pid!r} has no stored checkpoint", "reason_code": "xmimic_policy_unknown"}, JSON
        return 200, data, "application/octet-stream"
    if html:
        from kibotos.xmimic.html import page_for
        from kibotos.xmimic.preview import PREVIEW_NAME, preview_key

        has_ckpt = bool(doc.get("checkpoint_uri")) or (home is not None and policy_reads.registry_model(home, pid))
        has_preview = home is not None and (home / "policies" / pid / PREVIEW_NAME).is_file()
        if store is not None and not has_preview:
            with contextlib.suppress(KibotosError):  # an unreachable store costs the video, not the page
                has_preview = store.stat(preview_key(pid)) is not None
        return 200, page_for(doc, checkpoint_href=f"/policies/{quote(pid)}/checkpoint" if has_ckpt else None,
                             preview_href=f"/policies/{quote(pid)}/preview.mp4" if has_preview else None), \
            "text/html; charset=utf-8"
    return 200, doc, JSON
