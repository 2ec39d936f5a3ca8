"""Read access to the ClickHouse warehouse: reports, gate results, the points ledger.

Only the ClickHouse sink writes (``streams/sink.py``); everything else reads through
these helpers, which know how to read the replacing tables correctly. Delivery is
at-least-once, so a table may briefly hold duplicates (or superseded decisions) until
ClickHouse merges them; every read here uses ``FINAL`` so that it sees one row per key,
the one with the highest version (``decided_at`` for reports and gate results).

Results are JSON-safe dicts (the CLI and the HTTP API print them as they are);
timestamps are ISO-8601 UTC strings with milliseconds.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import clickhouse_connect

from kibotos.errors import ServiceError

DB = "kibotos"


def open_client(dsn: str):
    """A clickhouse-connect client for ``dsn``.

    ``chdb:///abs/dir`` opens the embedded engine in this process (one directory per
    process at a time, and a directory is locked to one process); ``http(s)://user:pw@host:port``
    reaches a ClickHouse server.
    """
    try:
        return clickhouse_connect.get_client(dsn=dsn)
    except Exception as exc:
        raise ServiceError(f"cannot open ClickHouse at {_redact(dsn)}: {exc}") from exc


def _redact(dsn: str) -> str:
    scheme, sep, rest = dsn.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"


def iso_ms(epoch_ms: int | None) -> str | None:
    """Epoch milliseconds → ``2024-01-02T03:04:05.678Z``."""
    if epoch_ms is None:
        return None
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def _rows(client, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    try:
        result = client.query(sql, parameters=parameters or {})
    except Exception as exc:
        raise ServiceError(f"ClickHouse query failed: {exc}") from exc
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


ATTEMPT_GATE = "ingest_integrity"  # its verdicts judge one upload attempt (streams/sink_rows.py)


def get_report(client, submission_id: str, *, attempts: bool = True) -> dict[str, Any] | None:
    """The latest verification report of a submission, or ``None`` if there is none.

    Returns the full report as the deciding processor wrote it (``report_json``), plus
    ``decided_at`` and ``bundle_uri`` from the verdict, and ``final``: ``True`` for the
    submission's verdict. Without one, and with ``attempts``, the latest upload attempt
    rejected by the ingest checks stands in, marked ``final: False`` with its
    ``upload_id``: the attempt's uploader (``miner_id``) may be anyone, and another upload
    of the submission may still be accepted — an attempt never replaces or pre-empts the
    submission's verdict, whatever the order of the decisions.
    """
    rows = _rows(
        client,
        f"""SELECT report_json, bundle_uri, toUnixTimestamp64Milli(decided_at) AS decided_at_ms,
               ifNull(failed_gate, '') = '{ATTEMPT_GATE}' AS attempt
        FROM {DB}.verification_reports FINAL WHERE submission_id = {{sid:String}}""",
        {"sid": submission_id},
    )
    # rows written before upload_verdicts existed held ingest rejections too: not final
    if rows and not rows[0]["attempt"]:
        return _report(rows[0], final=True)
    if not attempts:
        return None
    latest = upload_verdicts(client, submission_id)
    if latest:
        return latest[-1]
    return _report(rows[0], final=False) if rows else None


def _report(row: dict[str, Any], *, final: bool) -> dict[str, Any]:
    report = json.loads(row["report_json"])
    report.setdefault("bundle_uri", row["bundle_uri"])
    report["decided_at"] = iso_ms(row["decided_at_ms"])
    report["final"] = final
    return report


def upload_verdicts(client, submission_id: str | None = None, *,
                    upload_id: str | None = None) -> list[dict[str, Any]]:
    """Upload attempts rejected by the ingest checks (``upload_verdicts``), oldest first:
    of one submission, or the one ``upload_id``. Each is its report with ``upload_id``,
    ``decided_at`` and ``final: False`` (an attempt is never a submission's verdict)."""
    clauses, params = [], {}
    if submission_id is not None:
        clauses.append("submission_id = {sid:String}")
        params["sid"] = submission_id
    if upload_id is not None:
        clauses.append("upload_id = {uid:String}")
        params["uid"] = upload_id
    if not clauses:
        raise ValueError("upload_verdicts needs a submission_id or an upload_id")
    rows = _rows(
        client,
        f"""SELECT upload_id, report_json, bundle_uri, toUnixTimestamp64Milli(decided_at) AS decided_at_ms
        FROM {DB}.upload_verdicts FINAL WHERE {' AND '.join(clauses)}
        ORDER BY decided_at, upload_id""",
        params,
    )
    return [_report(r, final=False) | {"upload_id": r["upload_id"]} for r in rows]


def gate_results(client, submission_id: str) -> list[dict[str, Any]]:
    """Gate results of the latest decision on a submission, in pipeline order.

    Rows of an earlier, superseded decision (e.g. a gate the new decision never reached)
    are left out.
    """
    rows = _rows(
        client,
        f"""SELECT gate, gate_order, passed, reason_code, metrics_json, thresholds_json, flags, wall_ms,
               config_version, toUnixTimestamp64Milli(decided_at) AS decided_at_ms
        FROM {DB}.gate_results FINAL
        WHERE submission_id = {{sid:String}}
          AND decided_at = (SELECT max(decided_at) FROM {DB}.gate_results WHERE submission_id = {{sid:String}})
        ORDER BY gate_order""",
        {"sid": submission_id},
    )
    return [
        {
            "gate": r["gate"],
            "gate_order": r["gate_order"],
            "passed": bool(r["passed"]),
            "reason_code": r["reason_code"],
            "metrics": json.loads(r["metrics_json"]),
            "thresholds": json.loads(r["thresholds_json"]),
            "flags": list(r["flags"]),
            "wall_ms": r["wall_ms"],
            "config_version": r["config_version"],
            "decided_at": iso_ms(r["decided_at_ms"]),
        }
        for r in rows
    ]


def ledger_entries(client, miner_id: str | None = None) -> list[dict[str, Any]]:
    """Ledger entries (each ``entry_id`` once), oldest first, optionally for one miner."""
    where = "WHERE miner_id = {miner:String}" if miner_id is not None else ""
    rows = _rows(
        client,
        f"""SELECT entry_id, miner_id, submission_id, kind, points, config_version,
               toUnixTimestamp64Milli(created_at) AS created_at_ms
        FROM {DB}.points_ledger FINAL {where}
        ORDER BY created_at, entry_id""",
        {"miner": miner_id} if miner_id is not None else None,
    )
    for r in rows:
        r["created_at"] = iso_ms(r.pop("created_at_ms"))
    return rows


def balances(client) -> list[dict[str, Any]]:
    """Every miner's points total and entry count, each ``entry_id`` counted once; highest first."""
    return _rows(
        client,
        f"""SELECT miner_id, sum(points) AS points, count() AS entries
        FROM {DB}.points_ledger FINAL
        GROUP BY miner_id
        ORDER BY points DESC, miner_id""",
    )


class LockedClient:
    """Serializes every call on one client: the embedded stack shares one chdb session
    between the sink thread and the query API threads."""

    def __init__(self, client, lock=None):
        import threading

        self._client = client
        self._lock = lock or threading.RLock()

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def locked(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)

        return locked
