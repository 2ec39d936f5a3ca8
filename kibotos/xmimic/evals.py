"""An evaluation as warehouse rows, the pass rule, and the attribution a pass pays
(README "XMimic: evaluation rows, pass rule, attribution").

``kibotos eval POLICY`` turns its report into ``policy_evals`` rows, one per (split,
clip): ``train`` clips give SR, ``heldout`` variants GSR, each row with the open-loop
reference's outcome on the same clip. The rows' ``eval_id`` is a uuid5 of the policy,
the dataset it was evaluated on, the config version and the seed, so a rerun replaces
its rows (the table is a ReplacingMergeTree keyed by it) instead of adding a second
evaluation.

Where the rows go: with a running stack (or a deployment's broker) to the
``policy.evals`` topic, which the ClickHouse sink stores; otherwise this process owns the
warehouse (embedded chdb under ``$KIBOTOS_HOME``) and inserts them itself, after applying
the migrations. The attribution a passing policy owes goes the same way
(``kibotos.datasets.policy``: ``datasets.attributions`` + ``ledger.entries``).

Pass rule (config ``eval.pass_rule``): SR >= ``min_sr``, GSR >= ``min_gsr`` (an
evaluation without held-out variants never passes) and SR - reference SR >=
``min_sr_over_reference``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from kibotos.xmimic.config import PassRule

# the eval ids' own namespace (not the ledger's: an eval id is never a payment)
EVAL_NAMESPACE = uuid.UUID("3a8f6c1e-52d4-4b7a-9e0f-7d1c2b4a6e93")
SPLITS = ("train", "heldout")


def eval_id(policy_id: str, dataset: str, config_version: str, seed: int) -> str:
    return str(uuid.uuid5(EVAL_NAMESPACE, f"xmimic-eval:{policy_id}:{dataset}:{config_version}:{seed}"))


def policy_id_for_checkpoint(path: Path) -> str:
    """The id ``kibotos.xmimic.registry.register`` would give this checkpoint."""
    from kibotos.xmimic.train import checkpoint_infos  # torch and rsl-rl: only where a checkpoint is read

    infos = checkpoint_infos(path)
    run = infos.get("run_id") or Path(path).resolve().parents[1].name
    return f"{infos.get('role', 'policy')}-{run}-it{infos.get('iteration', 0)}"


def _clip_row(base: dict[str, Any], split: str, clip, ref) -> dict[str, Any]:
    return {**base, "split": split, "clip_id": clip.clip, "episodes": 1, "successes": int(clip.success),
            "success_rate": float(clip.success), "baseline_success_rate": float(ref.success) if ref else float("nan"),
            "tracking_error_m": float(clip.mean_hand_box_error_m),
            "final_height_error_m": float(clip.final_height_error_m)}


def eval_rows(report, *, policy_id: str, dataset: str, seed: int = 0, created_at_ms: int | None = None) -> list[dict]:
    """The ``policy.evals`` records of an ``EvalReport`` (``kibotos.xmimic.evaluate``)."""
    created = int(time.time() * 1000) if created_at_ms is None else created_at_ms
    base = {"eval_id": eval_id(policy_id, dataset, report.config_version, seed), "policy_id": policy_id,
            "dataset": dataset, "config_version": report.config_version, "created_at": created}
    ref = report.baseline_clips.get("reference_pd", {})
    rows = []
    for split, key, result in (("train", "sr", report.sr), ("heldout", "gsr", report.gsr)):
        if result is None:
            continue
        ref_by_clip = {c.clip: c for c in ref.get(key, [])}
        rows += [_clip_row(base, split, c, ref_by_clip.get(c.clip)) for c in result.clips]
    return rows


@dataclass
class Summary:
    """SR / GSR and the reference's, from eval rows (what the read side shows)."""
    eval_id: str
    sr: float | None
    gsr: float | None
    reference_sr: float | None
    reference_gsr: float | None
    clips: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"eval_id": self.eval_id, "sr": self.sr, "gsr": self.gsr, "reference_sr": self.reference_sr,
                "reference_gsr": self.reference_gsr, "clips": self.clips}


def _rate(values: list[float]) -> float | None:
    vals = [v for v in values if v == v]  # NaN: no baseline for that clip
    return round(sum(vals) / len(vals), 6) if vals else None


def summarize(rows: list[dict]) -> Summary:
    by = {s: [r for r in rows if r["split"] == s] for s in SPLITS}
    return Summary(eval_id=rows[0]["eval_id"] if rows else "",
                   sr=_rate([r["success_rate"] for r in by["train"]]),
                   gsr=_rate([r["success_rate"] for r in by["heldout"]]),
                   reference_sr=_rate([r["baseline_success_rate"] for r in by["train"]]),
                   reference_gsr=_rate([r["baseline_success_rate"] for r in by["heldout"]]),
                   clips={s: len(by[s]) for s in SPLITS})


@dataclass
class Verdict:
    passed: bool
    reasons: list[str]
    rule: dict

    def as_dict(self) -> dict:
        return {"passed": self.passed, "reasons": self.reasons, "rule": self.rule}


def judge(summary: Summary, rule: PassRule) -> Verdict:
    """Whether the evaluated policy passes; ``reasons`` name every bound it missed."""
    reasons = []
    if summary.sr is None or summary.sr < rule.min_sr:
        reasons.append("sr_below_minimum")
    if summary.gsr is None:
        reasons.append("gsr_not_measured")
    elif summary.gsr < rule.min_gsr:
        reasons.append("gsr_below_minimum")
    if summary.sr is not None and summary.reference_sr is not None \
            and summary.sr - summary.reference_sr < rule.min_sr_over_reference - 1e-9:
        reasons.append("sr_not_above_reference")
    return Verdict(passed=not reasons, reasons=reasons, rule=rule.model_dump())


# --- delivery: the topics of a running stack, else the warehouse this process owns -----------

def broker_for(settings) -> str | None:
    """The broker to send to: a deployment's, or the running embedded stack's; None when
    this process must write the warehouse itself."""
    from kibotos.runtime.stack import running_stack

    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    state = running_stack(settings)
    return state["bootstrap"] if state else None


def produce(events: list[tuple[str, dict]], catalogue, bootstrap: str) -> int:
    from kibotos.errors import ServiceError
    from kibotos.runtime.submit import producer

    p = producer(bootstrap)
    for topic_id, rec in events:
        spec = catalogue.get(topic_id)
        p.produce(spec.name, key=spec.key(rec), value=spec.serialize(rec))
    if p.flush(30) != 0:
        raise ServiceError("policy evaluation records not delivered to the broker")
    return len(events)


def insert(events: list[tuple[str, dict]], client) -> int:
    """Write the records as the sink would (same conversion), in one insert per table."""
    from collections import defaultdict

    from streams.sink_rows import TABLE_COLUMNS, rows_for

    tables: dict[str, list[dict]] = defaultdict(list)
    for topic_id, rec in events:
        for table, row in rows_for(topic_id, {"schema_version": 1, **rec}):
            tables[table].append(row)
    for table, rows in tables.items():
        cols = TABLE_COLUMNS[table]
        client.insert(f"kibotos.{table}", [[r[c] for c in cols] for r in rows], column_names=list(cols))
    return len(events)


def deliver(events: list[tuple[str, dict]], settings) -> str:
    """Send ``(topic_id, record)`` pairs; returns ``"topic"`` or ``"warehouse"``."""
    if not events:
        return "none"
    bootstrap = broker_for(settings)
    if bootstrap:
        from topics.admin import ensure_topics
        from topics.catalogue import Catalogue

        catalogue = Catalogue.from_settings(settings)
        ensure_topics(bootstrap, [catalogue.get(t) for t in {t for t, _ in events}])
        produce(events, catalogue, bootstrap)
        return "topic"
    from infra.migrate import apply_migrations
    from kibotos.warehouse import open_client

    client = open_client(settings.chdb_dsn)
    try:
        apply_migrations(client)
        insert(events, client)
    finally:
        client.close()
    return "warehouse"


def pay_attribution(settings, policy_id: str, trained_on: list[str], verdict: Verdict, summary: Summary,
                    checkpoint_uri: str | None = None, now_ms: int | None = None) -> dict:
    """Record the evaluation with the dataset store (``record_policy_evaluation``) and send
    the attribution entries it owes. Returns what happened; a dataset version that cannot
    be resolved is reported by reason code, the evaluation's rows stand."""
    from kibotos.datasets.events import policy_events
    from kibotos.datasets.policy import record_policy_evaluation, send_policy_events
    from kibotos.datasets.store import DatasetStore
    from kibotos.errors import KibotosError

    if not trained_on:
        return {"status": "skipped", "reason_code": "policy_without_dataset"}
    from kibotos.objectstore import store_from_settings

    # as `kibotos datasets` opens it: the local directory caches the object store's versions
    store = DatasetStore(settings.home / "datasets", objects=store_from_settings(settings))
    try:
        rec = record_policy_evaluation(store, policy_id, list(trained_on), verdict.passed,
                                       metrics={**summary.as_dict(), "pass": verdict.as_dict()},
                                       checkpoint_uri=checkpoint_uri, now_ms=now_ms)
    except KibotosError as exc:
        return {"status": "skipped", "reason_code": exc.reason_code, "error": str(exc)}
    bootstrap = broker_for(settings)
    if bootstrap and rec["attribution"]:
        from topics.admin import ensure_topics
        from topics.catalogue import Catalogue

        catalogue = Catalogue.from_settings(settings)
        ensure_topics(bootstrap, [catalogue.get("datasets.attributions"), catalogue.get("ledger.entries")])
        send_policy_events(rec, catalogue, bootstrap)
        via = "topic"
    else:
        via = deliver(list(policy_events(rec["attribution"])), settings)
    return {"status": "paid" if rec["attribution"] else "nothing_owed", "via": via,
            "trained_on": rec["trained_on"], "entries": [{k: e[k] for k in ("entry_id", "miner_id", "points")}
                                                         for e in rec["attribution"]]}


def record_eval(settings, report, *, policy_id: str, dataset: str, rule: PassRule, seed: int = 0,
                trained_on: list[str] | None = None, checkpoint_uri: str | None = None,
                now_ms: int | None = None) -> dict:
    """What ``kibotos eval`` does after evaluating: the rows, the pass verdict, and (for a
    policy naming the dataset versions it trained on) the attribution."""
    rows = eval_rows(report, policy_id=policy_id, dataset=dataset, seed=seed, created_at_ms=now_ms)
    via = deliver([("policy.evals", r) for r in rows], settings)
    summary = summarize(rows)
    verdict = judge(summary, rule)
    out = {"eval_id": summary.eval_id, "dataset": dataset, "rows": len(rows), "via": via, **summary.as_dict(),
           **verdict.as_dict()}
    out["attribution"] = pay_attribution(settings, policy_id, list(trained_on or []), verdict, summary,
                                         checkpoint_uri=checkpoint_uri, now_ms=now_ms)
    return out


def record_from_cli(settings, report, policy: str, checkpoint: Path, *, dataset: str | None, clips: Path | None,
                    rule: PassRule, seed: int = 0, trained_on: list[str] | None = None) -> dict:
    """``record_eval`` with what the command line names: a registry id or a checkpoint
    file (its would-be registry id), the dataset (an XGen request id, else the clips
    directory), the dataset versions from ``--trained-on`` or the policy's metadata."""
    from kibotos.xmimic.registry import registry_root

    is_file = Path(policy).is_file()
    policy_id = policy_id_for_checkpoint(checkpoint) if is_file else policy
    meta_file = registry_root(settings.home) / policy_id / "policy.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return record_eval(settings, report, policy_id=policy_id, dataset=dataset or f"clips:{Path(cast(Path, clips)).resolve()}",
                       rule=rule, seed=seed, trained_on=list(trained_on or []) or list(meta.get("dataset_versions") or []),
                       checkpoint_uri=meta.get("uri") or meta.get("checkpoint_uri"))


def eval_via_stack(settings, policy: str, *, dataset: str | None, config: Path | None = None, task: str | None = None,
                   heldout: bool = True, seed: int = 0, trained_on: list[str] | None = None,
                   timeout_s: float = 600.0, poll_s: float = 1.0, preview: bool = False) -> dict:
    """``kibotos eval --via-stack``: put an ``eval.requests`` record for the running stack's
    ``eval`` job (``gpu_consumers/policy_eval_jobs.py``) and wait until the read API shows
    its rows (the eval id with this request's time). Returns the evaluation's summary and
    the pass verdict under ``config``'s rule; ``preview``: the job also stores the rollout
    preview next to the policy (``preview_uri`` in the answer)."""
    from urllib.parse import quote

    from kibotos.errors import ServiceError
    from kibotos.objectstore import store_from_settings
    from kibotos.reports.reads import _http
    from kibotos.runtime.stack import running_stack
    from kibotos.warehouse import iso_ms
    from kibotos.xmimic.clips import XMimicError
    from kibotos.xmimic.config import load_xmimic_config
    from kibotos.xmimic.registry import checkpoint_path, registry_root
    from topics.admin import ensure_topics
    from topics.catalogue import Catalogue

    state = running_stack(settings)
    if not state:
        raise ServiceError(f"no stack is running under {settings.home}: start `kibotos up` with the eval job kind "
                           "(KIBOTOS_TRAINING_JOBS='[\"train\",\"eval\"]') or evaluate in-process")
    if not dataset:
        raise XMimicError("--via-stack evaluates on --dataset ID (an XGen request id or NAME@vN)",
                          reason_code="xmimic_arguments_invalid")
    cfg = load_xmimic_config(config)
    path = checkpoint_path(settings.home, policy)
    policy_id = policy_id_for_checkpoint(path) if Path(policy).is_file() else policy
    meta_file = registry_root(settings.home) / policy_id / "policy.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    store = store_from_settings(settings)
    uri = store.put_file(path, f"xmimic/policies/{policy_id}/model.pt").uri  # the key the train job uses too
    req: dict[str, Any] = {"policy_id": policy_id, "checkpoint_uri": uri, "dataset": dataset, "clips": [],
           "trained_on": list(trained_on or []) or list(meta.get("dataset_versions") or []),
           "config_yaml": Path(config).read_text() if config else None, "task": task, "heldout": heldout,
           "seed": seed, "requested_by": "kibotos-cli", "requested_at": int(time.time() * 1000), "preview": preview}
    catalogue = Catalogue.from_settings(settings)
    ensure_topics(state["bootstrap"], [catalogue.get("eval.requests")])
    produce([("eval.requests", req)], catalogue, state["bootstrap"])
    eid, at = eval_id(policy_id, dataset, cfg.config_version, seed), iso_ms(req["requested_at"])
    deadline = time.monotonic() + timeout_s
    while True:
        doc = _http(f"{state['query_url']}/policies/{quote(policy_id, safe='')}") or {}
        done = [e for e in doc.get("evals") or [] if e["eval_id"] == eid and e["created_at"] == at]
        if done:
            ev = done[0]
            summary = Summary(eid, ev["sr"], ev["gsr"], ev["reference_sr"], ev["reference_gsr"], ev.get("clips") or {})
            from kibotos.xmimic.preview import preview_key

            out = {"policy": policy_id, "config_version": cfg.config_version, "recorded": {
                "eval_id": eid, "dataset": dataset, "via": "stack", **summary.as_dict(),
                **judge(summary, cfg.eval.pass_rule).as_dict(), "trained_on": req["trained_on"]}}
            if preview:  # the job stores it before it answers with the rows
                stored = store.stat(preview_key(policy_id))
                out["preview"] = {"uri": store.uri_for(preview_key(policy_id)) if stored else None}
            return out
        if time.monotonic() > deadline:
            raise XMimicError(f"no evaluation rows for {policy_id} (eval {eid}) within {timeout_s:.0f} s: is the eval "
                              "job kind running (KIBOTOS_TRAINING_JOBS)? a refused request is a dead letter",
                              reason_code="xmimic_eval_timeout")
        time.sleep(poll_s)
