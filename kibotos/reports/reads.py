"""Read reports and the ledger: through a running stack's API, or straight from the
warehouse when no stack holds it (embedded chdb is locked to its owner process)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from kibotos import warehouse
from kibotos.config.settings import Settings
from kibotos.errors import ServiceError
from kibotos.runtime.stack import running_stack


def _http(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise ServiceError(f"read API error {exc.code}: {exc.read()[:300]!r}") from exc
    except urllib.error.URLError as exc:
        raise ServiceError(f"cannot reach the stack's read API at {url}: {exc.reason}") from exc


def _with_client(settings: Settings, fn):
    client = warehouse.open_client(settings.chdb_dsn)
    try:
        return fn(client)
    finally:
        client.close()


def get_report(settings: Settings, submission_id: str) -> dict | None:
    state = running_stack(settings)
    if state:
        return _http(f"{state['query_url']}/reports/{quote(submission_id)}")
    return _with_client(settings, lambda c: warehouse.get_report(c, submission_id))


def stored_report_count(settings: Settings) -> tuple[int, str] | None:
    """How many reports the local embedded warehouse holds, and what that means for a
    user who found none: ``(0, explanation)`` when it is empty or was never created.
    None when a stack owns the store or a deployment's ClickHouse is configured (its
    count says nothing about this machine)."""
    if running_stack(settings) is not None or settings.clickhouse_dsn:
        return None
    directory = settings.home / "chdb"
    if not directory.exists():
        return 0, (f"no warehouse at {directory}: nothing has been verified with this KIBOTOS_HOME yet. "
                   "Start the stack (kibotos up), submit a bundle (kibotos submit PATH), or set "
                   "KIBOTOS_HOME / KIBOTOS_CLICKHOUSE_DSN to where the reports are; "
                   "`kibotos verify PATH` checks a bundle without a warehouse.")

    def count(client) -> int:
        table = f"{warehouse.DB}.verification_reports"
        if not int(client.command(f"EXISTS TABLE {table}")):  # no stack ever created the tables here
            return 0
        return int(client.command(f"SELECT count() FROM {table}"))

    n = _with_client(settings, count)
    return n, ("the warehouse at " + str(directory) + " holds no reports yet: start the stack (kibotos up) "
               "and submit a bundle (kibotos submit PATH); `kibotos verify PATH` checks a bundle without one.")


def ledger(settings: Settings, miner_id: str | None = None) -> list[dict]:
    state = running_stack(settings)
    if state:
        return _http(f"{state['query_url']}/ledger" + (f"?miner={quote(miner_id)}" if miner_id else "")) or []
    return _with_client(settings, lambda c: warehouse.ledger_entries(c, miner_id))


def balances(settings: Settings) -> list[dict]:
    state = running_stack(settings)
    if state:
        return _http(f"{state['query_url']}/balances") or []
    return _with_client(settings, warehouse.balances)


def bootstrap_for(settings: Settings) -> str:
    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    state = running_stack(settings)
    if not state:
        raise ServiceError("no broker: start `kibotos up` (embedded stack) or set KIBOTOS_BOOTSTRAP_SERVERS")
    return state["bootstrap"]
