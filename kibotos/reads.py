"""Read reports and the ledger: through a running stack's API, or straight from the
warehouse when no stack holds it (embedded chdb is locked to its owner process)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from kibotos import warehouse
from kibotos.errors import ServiceError
from kibotos.settings import Settings
from kibotos.stack import running_stack


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
