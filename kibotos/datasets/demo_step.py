"""The demo's last step: publish a dataset from its accepted episodes, export it to both
formats, and show attribution per miner (``kibotos.runtime.demo`` calls ``publish_demo_dataset``
inside its running stack). The spec is created in the stack's dataset store and the
stack's own dataset builder process (``streams.dataset_builder``) builds it: the demo asks
it to catch up and publish now (``kibotos.datasets.requests``) instead of waiting for the
builder's cadence."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from kibotos.datasets.attribution import shares
from kibotos.datasets.spec import parse_spec
from kibotos.datasets.store import DatasetStore
from kibotos.export.runner import export_dir, export_version

DEMO_DATASET = "demo-accepted"
DEMO_SPEC = {"name": DEMO_DATASET, "sources": ["verdicts", "xgen.clips"],
             "description": "every accepted demo episode and verified XGen clip (copies of earlier uploads left out)"}


def publish_demo_dataset(stack, console: Console, timeout_s: float = 120.0) -> dict:
    """Have the stack's builder publish ``demo-accepted`` from the verdicts so far, export
    it, wait until the sink holds its attribution ledger entries. Returns what the demo prints."""
    from kibotos.datasets.requests import request_publish

    settings = stack.settings
    store = DatasetStore(settings.home / "datasets", objects=stack.store)
    topic_ids = {t.id for t in stack.catalogue.all()}
    store.create(parse_spec(DEMO_SPEC | {"sources": [s for s in DEMO_SPEC["sources"] if s in topic_ids]}))
    if any(slot.kind == "datasets" for slot in stack.slots):  # the stack's builder process
        outcomes = request_publish(store, DEMO_DATASET, timeout_s=timeout_s)["outcomes"]
    else:  # a stack without one: read the sources here until idle
        from streams.dataset_builder import build_until_idle, group_id

        outcomes = build_until_idle(store, DEMO_DATASET, stack.catalogue, stack.bootstrap,
                                    group_id(settings.consumer_group_prefix, stack.catalogue, DEMO_DATASET),
                                    idle_s=1.5, timeout_s=timeout_s).outcomes
    version = store.latest(DEMO_DATASET)
    if version is None:
        console.print("[yellow]no accepted episode: no dataset published[/yellow]")
        return {"version": None}
    out = settings.home / "exports"
    exported = export_version(store, DEMO_DATASET, version, out, stack.store)
    entries = store.attribution(DEMO_DATASET, version)
    ids = [e["entry_id"] for e in entries]
    deadline = time.monotonic() + timeout_s
    while ids and time.monotonic() < deadline:  # the sink writes in batches
        n = stack.client.query("SELECT count() FROM kibotos.points_ledger FINAL WHERE entry_id IN {ids:Array(String)}",
                               parameters={"ids": ids}).result_rows[0][0]
        if n >= len(ids):
            break
        time.sleep(0.3)
    return {"version": version, "info": store.info(DEMO_DATASET, version), "export": exported,
            "export_dir": export_dir(out, DEMO_DATASET, version), "shares": shares(store.episodes(DEMO_DATASET, version)),
            "entries": entries, "outcomes": outcomes,
            "sources": store.card(DEMO_DATASET, version)["sources"]}


def print_demo_dataset(console: Console, result: dict, names: dict[str, str]) -> None:
    if not result.get("version"):
        return
    info, exp = result["info"], result["export"]
    console.print(f"[bold]dataset[/bold] {DEMO_DATASET}@v{result['version']}: {info['episodes']} episodes "
                  f"({', '.join(f'{n} from {k}' for k, n in result['sources'].items())}), "
                  f"content hash {info['content_hash'][:16]}…; exported to {result['export_dir']}: "
                  + ", ".join(f"LeRobot v3.0 {g} ({v['episodes']} ep)" for g, v in exp["lerobot"].items())
                  + f", {sum(1 for f in exp['files'] if f.startswith('humanx/') and f.endswith('clip.npz'))} HumanX clips")
    paid = {e["miner_id"]: e["points"] for e in result["entries"]}
    t = Table(title=f"attribution per miner ({DEMO_DATASET}@v{result['version']}, rule {info['rule_version']})")
    for col in ("miner", "episodes", "share (S-weighted)", "attribution points (ledger)"):
        t.add_column(col)
    for r in result["shares"]:
        t.add_row(names.get(r["miner_id"], r["miner_id"][:12]), str(r["episodes"]), f"{100 * r['share']:.1f}%",
                  f"{paid.get(r['miner_id'], 0.0):.3f}")
    console.print(t)
    console.print(f"[dim]kibotos datasets show {DEMO_DATASET} · kibotos attribution {DEMO_DATASET} · "
                  f"kibotos datasets export {DEMO_DATASET}[/dim]")
