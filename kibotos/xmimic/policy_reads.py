"""What ``kibotos policies list|show`` and the policy pages read: the ``policies``,
``training_runs``, ``training_progress`` and ``policy_evals`` tables (migration 0011),
through a running stack's read API, else the warehouse, else the local registry
(``kibotos.xmimic.registry``). Every answer is one document shape, whatever the source:

``{"policy_id", "role", "task", "run_id", "config_version", "iterations", "env_steps",
"checkpoint_uri", "dataset_versions", "created_at", "source", "eval": {summary, "rows"} |
None, "evals": [summary, ...], "progress": [{"iteration", "env_steps", "success_rate",
"reward_terms"}], "run": {...} | None}``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from kibotos.warehouse import _rows, iso_ms
from kibotos.xmimic.evals import eval_rows, summarize

DB = "kibotos"
EVAL_COLUMNS = ("eval_id", "policy_id", "dataset", "split", "clip_id", "episodes", "successes", "success_rate",
                "baseline_success_rate", "tracking_error_m", "final_height_error_m", "config_version")


def _ms(value) -> int | None:
    if value is None:
        return None
    return int(round(value.timestamp() * 1000)) if hasattr(value, "timestamp") else int(value)


def _tables_exist(client) -> bool:
    return bool(int(client.command(f"EXISTS TABLE {DB}.policy_evals")))


def _eval_groups(rows: list[dict]) -> list[dict]:
    """Eval rows grouped by eval id, newest first, each with its summary."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["eval_id"], []).append(r)
    out = []
    for group in by.values():
        created = max(_ms(r["created_at"]) or 0 for r in group)
        group.sort(key=lambda r: (r["split"] != "train", r["clip_id"]))
        for r in group:
            r["created_at"] = iso_ms(_ms(r["created_at"]))
        out.append({**summarize(group).as_dict(), "dataset": group[0]["dataset"],
                    "config_version": group[0]["config_version"], "created_at": iso_ms(created),
                    "_created": created, "rows": group})
    out.sort(key=lambda e: -e["_created"])
    for e in out:
        e.pop("_created")
    return out


def _doc(policy: dict[str, Any], run: dict | None, evals: list[dict], progress: list[dict], source: str) -> dict:
    latest = evals[0] if evals else None
    return {"policy_id": policy["policy_id"], "role": policy.get("role"), "task": policy.get("task"),
            "run_id": policy.get("run_id"), "config_version": policy.get("config_version"),
            "iterations": policy.get("iterations"), "env_steps": policy.get("env_steps"),
            "checkpoint_uri": policy.get("checkpoint_uri") or policy.get("uri"),
            "dataset_versions": list(policy.get("dataset_versions") or []),
            "created_at": policy.get("created_at"), "source": source,
            "sr": latest["sr"] if latest else None, "gsr": latest["gsr"] if latest else None,
            "eval": latest, "evals": [{k: v for k, v in e.items() if k != "rows"} for e in evals],
            "progress": progress, "run": run}


def warehouse_policy(client, policy_id: str) -> dict | None:
    """The document of one policy from the warehouse; None when it holds nothing of it."""
    if not _tables_exist(client):
        return None
    pol = _rows(client, f"SELECT * EXCEPT inserted_at FROM {DB}.policies FINAL WHERE policy_id = {{p:String}}",
                {"p": policy_id})
    evals = _rows(client, f"SELECT {', '.join(EVAL_COLUMNS)}, created_at FROM {DB}.policy_evals FINAL "
                          "WHERE policy_id = {p:String}", {"p": policy_id})
    if not pol and not evals:
        return None
    policy: dict[str, Any] = pol[0] if pol else {"policy_id": policy_id}
    if pol:
        policy["created_at"] = iso_ms(_ms(policy["created_at"]))
    run, progress = None, []
    if policy.get("run_id"):
        runs = _rows(client, f"SELECT * EXCEPT inserted_at FROM {DB}.training_runs FINAL WHERE run_id = {{r:String}}",
                     {"r": policy["run_id"]})
        if runs:
            run = runs[0]
            run["updated_at"] = iso_ms(_ms(run["updated_at"]))
        for r in _rows(client, f"SELECT iteration, env_steps, success_rate, reward_terms_json FROM "
                               f"{DB}.training_progress FINAL WHERE run_id = {{r:String}} ORDER BY iteration",
                       {"r": policy["run_id"]}):
            progress.append({"iteration": r["iteration"], "env_steps": r["env_steps"],
                             "success_rate": r["success_rate"], "reward_terms": json.loads(r["reward_terms_json"] or "{}")})
    return _doc(policy, run, _eval_groups(evals), progress, "warehouse")


def warehouse_policies(client) -> list[dict]:
    """Every policy the warehouse knows (trained through the stack, or evaluated), with
    its latest evaluation's SR/GSR; newest first."""
    if not _tables_exist(client):
        return []
    pols = {r["policy_id"]: r for r in _rows(client, f"SELECT * EXCEPT inserted_at FROM {DB}.policies FINAL")}
    evals = _rows(client, f"SELECT {', '.join(EVAL_COLUMNS)}, created_at FROM {DB}.policy_evals FINAL")
    by: dict[str, list[dict]] = {}
    for r in evals:
        by.setdefault(r["policy_id"], []).append(r)
    out = []
    for pid in sorted(set(pols) | set(by)):
        policy = pols.get(pid, {"policy_id": pid})
        if "created_at" in policy:
            policy["created_at"] = iso_ms(_ms(policy["created_at"]))
        doc = _doc(policy, None, _eval_groups(by.get(pid, [])), [], "warehouse")
        out.append(list_row(doc))
    return out


def list_row(doc: dict) -> dict:
    ev = doc.get("eval") or {}
    return {k: doc.get(k) for k in ("policy_id", "role", "task", "iterations", "env_steps", "config_version",
                                    "dataset_versions", "sr", "gsr", "source")} | {
        "reference_sr": ev.get("reference_sr"), "eval_id": ev.get("eval_id"), "evaluated_at": ev.get("created_at")}


# --- the local registry (no warehouse): the same document from policy.json + eval.json --------

def registry_doc(home: Path, policy_id: str) -> dict | None:
    from kibotos.errors import KibotosError
    from kibotos.xmimic.registry import show

    try:
        meta = show(home, policy_id)
    except KibotosError:
        return None
    evals = []
    if meta.get("eval"):
        rep = _report_from_dict(meta["eval"])
        recorded = meta["eval"].get("recorded") or {}
        rows = eval_rows(rep, policy_id=policy_id, dataset=recorded.get("dataset", "local"), created_at_ms=0)
        for r in rows:
            r["eval_id"] = recorded.get("eval_id") or r["eval_id"]
        evals = _eval_groups(rows)
    progress = []
    run_dir = meta.get("run_dir")
    if run_dir and (Path(run_dir) / "progress.jsonl").is_file():
        for line in (Path(run_dir) / "progress.jsonl").read_text().splitlines():
            ev = json.loads(line)
            progress.append({"iteration": ev["iteration"], "env_steps": ev.get("env_steps"),
                             "success_rate": ev.get("success_rate"), "reward_terms": ev.get("reward_terms") or {}})
    policy = {**meta, "iterations": meta.get("iteration"), "checkpoint_uri": meta.get("uri")
              or (cast(Path, registry_model(home, policy_id)).resolve().as_uri() if registry_model(home, policy_id) else None)}
    return _doc(policy, None, evals, progress, "registry")


def registry_model(home: Path, policy_id: str) -> Path | None:
    from kibotos.xmimic.registry import registry_root

    p = registry_root(home) / policy_id / "model.pt"
    return p if p.is_file() else None


def _report_from_dict(d: dict):
    from kibotos.xmimic.evaluate import ClipResult, EvalReport, SetResult

    def set_result(s):
        return None if not s else SetResult(rate=s["rate"], clips=[ClipResult(**c) for c in s.get("clips", [])])

    base = {b: {k: [ClipResult(**c) for c in v] for k, v in sets.items()}
            for b, sets in (d.get("baseline_clips") or {}).items()}
    return EvalReport(policy=d.get("policy", ""), config_version=d.get("config_version", ""),
                      sr=set_result(d["sr"]), gsr=set_result(d.get("gsr")), baselines=d.get("baselines") or {},
                      baseline_clips=base)


def registry_list(home: Path) -> list[dict]:
    from kibotos.xmimic.registry import list_policies

    out = []
    for meta in list_policies(home):
        doc = registry_doc(home, meta["policy_id"])
        if doc:
            out.append(list_row(doc))
    return out


# --- the command line's reads: API, else warehouse, else registry ------------------------------

def _warehouse_available(settings) -> bool:
    return bool(settings.clickhouse_dsn) or (settings.home / "chdb").exists()


def _with_client(settings, fn):
    from kibotos.warehouse import open_client

    client = open_client(settings.chdb_dsn)
    try:
        return fn(client)
    finally:
        client.close()


def read_policies(settings) -> list[dict]:
    """Every policy: the stack's or the warehouse's, then registry-only ones."""
    from kibotos.reports.reads import _http
    from kibotos.runtime.stack import running_stack

    state = running_stack(settings)
    if state:
        rows = _http(f"{state['query_url']}/policies") or []
    elif _warehouse_available(settings):
        rows = _with_client(settings, warehouse_policies)
    else:
        rows = []
    local = {r["policy_id"]: r for r in registry_list(settings.home)}
    rows = [merge(r, local.get(r["policy_id"])) for r in rows]
    known = {r["policy_id"] for r in rows}
    return rows + [r for pid, r in local.items() if pid not in known]


def merge(primary: dict | None, fallback: dict | None) -> dict | None:
    """``primary`` with its empty fields filled from ``fallback`` (a policy trained here and
    evaluated into the warehouse: the registry knows its role, run and dataset versions)."""
    if primary is None or fallback is None:
        return primary or fallback
    return {k: (fallback.get(k) if v in (None, [], {}, "") else v) for k, v in primary.items()} | {
        k: v for k, v in fallback.items() if k not in primary}


def read_policy(settings, policy_id: str) -> dict | None:
    from urllib.parse import quote

    from kibotos.reports.reads import _http
    from kibotos.runtime.stack import running_stack

    state = running_stack(settings)
    doc = None
    if state:
        doc = _http(f"{state['query_url']}/policies/{quote(policy_id, safe='')}")
    elif _warehouse_available(settings):
        doc = _with_client(settings, lambda c: warehouse_policy(c, policy_id))
    return merge(doc, registry_doc(settings.home, policy_id))
