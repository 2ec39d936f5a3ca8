"""The records a published version sends to the topics (the ClickHouse sink stores them):
one ``datasets.versions`` record, one ``datasets.episodes`` record per changelog line,
one ``datasets.attributions`` record and one ``ledger.entries`` record (kind
``attribution``) per attribution entry. Every record is a pure function of the immutable
version, so re-sending a version (after a crash between publishing and sending) writes
the same rows and the same ledger ids."""

from __future__ import annotations

import json

from kibotos.datasets.attribution import ledger_entry
from kibotos.datasets.store import DatasetStore


def version_record(store: DatasetStore, name: str, version: int) -> dict:
    info = store.info(name, version)
    spec = store.spec(name)
    return {"schema_version": 1, "dataset": name, "version": version, "content_hash": info["content_hash"],
            "parent_hash": info["parent_hash"], "episodes": info["episodes"], "added": info["added"],
            "removed": info["removed"], "spec_json": spec.canonical_json(), "spec_hash": info["spec_hash"],
            "rule_version": info["rule_version"], "attribution_points": info["attribution_points"],
            "card_json": json.dumps(store.card(name, version), sort_keys=True),
            "created_at": info["created_at_ms"]}


def episode_record(name: str, version: int, op: str, ep) -> dict:
    return {"schema_version": 1, "dataset": name, "submission_id": ep.submission_id, "miner_id": ep.miner_id,
            "source": ep.source, "robot_model_id": ep.robot_model_id, "task_id": ep.task_id,
            "score": ep.score, "reward": ep.reward, "attribution_points": ep.attribution_points,
            "components_json": json.dumps(ep.components, sort_keys=True), "soft_flags": list(ep.soft_flags),
            "evidence_uris": list(ep.evidence_uris), "bundle_uri": ep.bundle_uri, "decided_at": ep.decided_at,
            "added_in_version": version if op == "added" else 0,
            "removed_in_version": version if op == "removed" else 0, "changed_in_version": version}


def version_events(store: DatasetStore, name: str, version: int):
    """``(topic_id, record)`` for everything publishing ``version`` announces (streams)."""
    yield "datasets.versions", version_record(store, name, version)
    for op, ep in store.changelog(name, version):
        yield "datasets.episodes", episode_record(name, version, op, ep)
    for entry in store.attribution(name, version):
        yield "datasets.attributions", {"schema_version": 1, **entry}
        yield "ledger.entries", ledger_entry(entry)


def policy_events(entries: list[dict]):
    """``(topic_id, record)`` for a policy's attribution entries."""
    for entry in entries:
        yield "datasets.attributions", {"schema_version": 1, **entry}
        yield "ledger.entries", ledger_entry(entry)
