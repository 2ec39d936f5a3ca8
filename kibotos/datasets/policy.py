"""Policies trained on dataset versions: what they trained on, whether they passed
evaluation, and the attribution that pays the miners behind them.

The training side (XMimic) calls ``record_policy_evaluation`` once a policy's evaluation
is known::

    from kibotos.datasets.policy import record_policy_evaluation, send_policy_events
    rec = record_policy_evaluation(store, "policy-cargo-7", ["g1-cargo@v3"], passed=True,
                                   metrics={"SR": 0.82}, checkpoint_uri="file:///.../ckpt.pt")
    send_policy_events(rec, catalogue, bootstrap)   # attribution + ledger entries to the topics

The record lives at ``<datasets root>/_policies/<policy_id>.json``: the dataset versions
(``name@vN``, each resolved and checked against its content hash), the evaluation, and
the attribution entries (``kibotos.datasets.attribution.policy_entries``). Recording the
same policy again gives the same entry ids (one per policy and miner), so a replayed
evaluation pays nobody twice; a failed evaluation pays nothing, and a later passing one
for the same policy id pays then.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator

from kibotos.datasets.attribution import policy_entries, shares
from kibotos.datasets.episode import Episode
from kibotos.datasets.events import policy_events
from kibotos.datasets.store import DatasetError, DatasetStore

POLICY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
POLICIES_DIR = "_policies"


def _episodes(store: DatasetStore, versions: list[tuple[str, int]]) -> Iterator[Episode]:
    for name, v in versions:
        yield from store.episodes(name, v)


def resolve_versions(store: DatasetStore, trained_on: list[str]) -> list[tuple[str, int]]:
    out = []
    for ref in trained_on:
        name, v = store.resolve(ref)
        if not store.verify(name, v):
            raise DatasetError(f"{name}@v{v} does not match its content hash", reason_code="dataset_tampered")
        out.append((name, v))
    if not out:
        raise DatasetError("a policy names at least one dataset version it trained on",
                           reason_code="policy_without_dataset")
    return out


def policy_path(store: DatasetStore, policy_id: str):
    if not POLICY_ID_RE.match(policy_id):
        raise DatasetError(f"bad policy id {policy_id!r}", reason_code="policy_id_invalid")
    return store.root / POLICIES_DIR / f"{policy_id}.json"


def record_policy_evaluation(store: DatasetStore, policy_id: str, trained_on: list[str], passed: bool, *,
                             metrics: dict | None = None, checkpoint_uri: str | None = None,
                             now_ms: int | None = None) -> dict:
    """Record a policy's evaluation and the attribution it owes; returns the record."""
    path = policy_path(store, policy_id)
    versions = resolve_versions(store, trained_on)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    entries = policy_entries(policy_id, _episodes(store, versions), passed, now_ms, store.cfg)
    prev = json.loads(path.read_text()) if path.exists() else None
    if prev and prev["attribution"] and [e["entry_id"] for e in prev["attribution"]] == [e["entry_id"] for e in entries]:
        entries = prev["attribution"]  # a replay: the entries already recorded, unchanged (same created_at)
    record = {"policy_id": policy_id, "trained_on": [f"{n}@v{v}" for n, v in versions],
              "content_hashes": {f"{n}@v{v}": store.info(n, v)["content_hash"] for n, v in versions},
              "checkpoint_uri": checkpoint_uri, "evaluation": {"passed": bool(passed), "metrics": metrics or {}},
              "rule_version": store.cfg.config_version, "attribution": entries, "recorded_at": now_ms}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return record


def get_policy(store: DatasetStore, policy_id: str) -> dict:
    path = policy_path(store, policy_id)
    if not path.exists():
        raise DatasetError(f"no policy {policy_id!r} recorded", reason_code="policy_not_found")
    return json.loads(path.read_text())


def policy_shares(store: DatasetStore, policy_id: str) -> list[dict]:
    rec = get_policy(store, policy_id)
    return shares(_episodes(store, resolve_versions(store, rec["trained_on"])))


def send_policy_events(record: dict, catalogue, bootstrap: str) -> int:
    """Produce the record's attribution and ledger entries; returns how many records."""
    from kibotos.runtime.submit import producer

    p = producer(bootstrap)
    n = 0
    for topic_id, rec in policy_events(record["attribution"]):
        spec = catalogue.get(topic_id)
        p.produce(spec.name, key=spec.key(rec), value=spec.serialize(rec))
        n += 1
    if p.flush(30) != 0:
        raise DatasetError("policy attribution events not delivered", reason_code="broker_unavailable")
    return n
