"""Where an XGen request stands, read from the warehouse (``xgen_requests``,
``xgen_stage_results``, ``xgen_clips``; migration 0009). What ``kibotos xgen status`` and
``GET /v1/xgen/{request_id}`` answer.

``state``: ``queued`` (no stage finished yet), ``running``, ``rejected`` (a request-level
stage refused it: ``failed_stage``, ``reason_code``), ``done`` (every clip exported and
judged). ``progress`` is the finished fraction of the work: the four request-level stages
plus one export per clip (the clip count is known once augment has run).
"""

from __future__ import annotations

import json
from typing import Any

from kibotos.warehouse import _rows, iso_ms
from topics.catalogue import XGEN_STAGES

REQUEST_STAGES = XGEN_STAGES[:-1]


def _ms(value) -> int | None:
    if value is None:
        return None
    return int(round(value.timestamp() * 1000)) if hasattr(value, "timestamp") else int(value)


def xgen_status(client, request_id: str) -> dict[str, Any] | None:
    """The request's state, stage results and clips; None when nothing is known of it."""
    reqs = _rows(client, "SELECT * EXCEPT inserted_at FROM kibotos.xgen_requests FINAL "
                         "WHERE request_id = {rid:String}", {"rid": request_id})
    stages = _rows(client, "SELECT * EXCEPT inserted_at FROM kibotos.xgen_stage_results FINAL "
                           "WHERE request_id = {rid:String} ORDER BY at, stage, clip_index", {"rid": request_id})
    clips = _rows(client, "SELECT * EXCEPT inserted_at FROM kibotos.xgen_clips FINAL "
                          "WHERE request_id = {rid:String} ORDER BY clip_index", {"rid": request_id})
    if not reqs and not stages and not clips:
        return None
    req = reqs[0] if reqs else {"request_id": request_id}
    for row in stages:
        row["at"] = iso_ms(_ms(row["at"]))
        try:
            row["metrics"] = json.loads(row.pop("metrics_json") or "{}")
        except ValueError:
            row["metrics"] = {}
    for row in clips:
        row["created_at"] = iso_ms(_ms(row["created_at"]))
    return summarize(req, stages, clips)


def summarize(req: dict[str, Any], stages: list[dict[str, Any]], clips: list[dict[str, Any]]) -> dict[str, Any]:
    """The status document from the rows (pure: tested without a database)."""
    whole = {r["stage"]: r for r in stages if r["clip_index"] == -1}
    failed = next((whole[s] for s in REQUEST_STAGES if s in whole and not whole[s]["passed"]), None)
    counts = [r["clip_count"] for r in stages if r.get("clip_count")]
    clip_count = max(counts) if counts else None
    # a clip is finished once its row is in, or its export job refused it; an export
    # progress row alone is not enough (the clip's row may land in a later sink batch)
    exported = {c["clip_index"] for c in clips} | {
        r["clip_index"] for r in stages if r["stage"] == "export" and r["clip_index"] >= 0 and not r["passed"]}
    done_stages = sum(1 for s in REQUEST_STAGES if s in whole and whole[s]["passed"])
    verified = sum(1 for c in clips if c["verified"])
    if failed is not None:
        state = "rejected"
    elif clip_count is not None and len(exported) >= clip_count:
        state = "done"
    elif stages:
        state = "running"
    else:
        state = "queued"
    total = len(REQUEST_STAGES) + (clip_count or 0)
    progress = 1.0 if state in ("done", "rejected") else (done_stages + len(exported)) / max(total, 1)
    if clip_count is None and state == "running":
        progress = min(progress, done_stages / (len(REQUEST_STAGES) + 1))
    current = next((s for s in XGEN_STAGES if s not in whole), None) if state in ("queued", "running") else None
    requested_at = req.get("requested_at")
    return {
        "request_id": req["request_id"], "uploader": req.get("uploader"), "task_id": req.get("task_id"),
        "source_kind": req.get("source_kind"), "source_sha256": req.get("source_sha256"),
        "requested_at": iso_ms(_ms(requested_at)) if requested_at is not None else None,
        "state": state, "progress": round(progress, 4), "current_stage": current,
        "failed_stage": failed["stage"] if failed else None, "reason_code": failed["reason_code"] if failed else None,
        "clip_count": clip_count, "clips_exported": len(clips), "clips_finished": len(exported),
        "clips_verified": verified,
        "stages": stages, "clips": clips,
    }
