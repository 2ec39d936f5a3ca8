"""``kibotos demo``: the whole pipeline on the embedded stack, end to end.

Generates a realistic mix of submissions from several miners (genuine and faulty,
three robot models), starts the stack, submits them, waits for every verdict, then
prints what each submission earned and the miners' balances — read back from ClickHouse.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kibotos import warehouse
from kibotos.errors import ServiceError
from kibotos.robots import get_robot, list_robots
from kibotos.samples import make_episode
from kibotos.settings import Settings
from kibotos.stack import Stack
from kibotos.submit import submit_paths
from streams.verdict_feed import follow_verdicts

# (miner, robot model id, variant, seed): an honest miner, a careless one, a cheater
MIX = [
    ("miner-alice", "franka_panda", "genuine", 1),
    ("miner-alice", "unitree_g1", "genuine", 2),
    ("miner-alice", "ur5", "genuine", 3),
    ("miner-alice", "franka_panda", "genuine", 4),
    ("miner-bob", "ur5", "genuine", 5),
    ("miner-bob", "franka_panda", "nan", 6),
    ("miner-bob", "unitree_g1", "gap", 7),
    ("miner-bob", "ur5", "degrees", 8),
    ("miner-carol", "ur5", "sync_lie", 0),
    ("miner-carol", "unitree_g1", "teleport", 10),
    ("miner-carol", "ur5", "jerk", 11),
    ("miner-carol", "franka_panda", "limit_violation", 12),
    ("miner-carol", "unitree_g1", "flatline", 13),
]


def _revision(model_id: str) -> str:
    return next(rev for m, rev in list_robots() if m == model_id)


def generate(out: Path, console: Console) -> list[tuple[str, str, Path]]:
    out.mkdir(parents=True, exist_ok=True)
    items = []
    with Progress(TextColumn("generating samples"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("gen", total=len(MIX) + 1)
        for miner, model_id, variant, seed in MIX:
            ep = make_episode(get_robot(model_id, _revision(model_id)), variant, seed=seed, miner_id=miner)
            items.append((miner, variant, ep.write(out / f"{miner}-{model_id}-{variant}-{seed}.zarr.zip")))
            progress.advance(task)
        # a truncated upload: half of a genuine bundle
        good = items[0][2].read_bytes()
        broken = out / "miner-dave-truncated.zarr.zip"
        broken.write_bytes(good[: len(good) // 2])
        items.append(("miner-dave", "truncated", broken))
        progress.advance(task)
    return items


def run_demo(settings: Settings, console: Console, workers: int = 1, timeout_s: float = 900) -> int:
    home = settings.home / "demo"
    if home.exists():
        shutil.rmtree(home)
    settings = settings.model_copy(update={"home": home})
    console.rule("[bold]Kibotos demo")
    items = generate(home / "samples", console)
    console.print(f"{len(items)} submissions from {len({m for m, _, _ in items})} miners written to {home / 'samples'}")
    with Stack(settings, workers=workers, log=lambda m: console.print(f"[dim]{m}[/dim]")) as stack:
        variants = {}
        for miner, variant, path in items:
            sub = submit_paths([path], bootstrap=stack.bootstrap, store=stack.store, catalogue=stack.catalogue,
                               miner_id=miner)[0]
            variants[sub.submission_id] = (sub.miner_id, variant)
        console.print(f"submitted {len(variants)} bundles to {stack.catalogue.submissions_received.name}")
        verdicts: dict[str, dict] = {}
        deadline = time.monotonic() + timeout_s
        with Progress(TextColumn("waiting for verdicts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("verdicts", total=len(variants))

            def done() -> bool:
                stack.check_workers()
                if time.monotonic() > deadline:
                    raise ServiceError(f"timed out after {timeout_s:.0f}s with {len(verdicts)}/{len(variants)} verdicts")
                return len(verdicts) >= len(variants)

            for verdict in follow_verdicts(stack.bootstrap, stack.catalogue, stop=done):
                if verdict["submission_id"] in variants and verdict["submission_id"] not in verdicts:
                    verdicts[verdict["submission_id"]] = verdict
                    progress.update(task, completed=len(verdicts))
        # the sink writes in batches: wait until every report is in the warehouse
        while True:
            n = stack.client.query("SELECT count() FROM kibotos.verification_reports FINAL").result_rows[0][0]
            if n >= len(variants) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        reports = {sid: warehouse.get_report(stack.client, sid) for sid in variants}
        balances = warehouse.balances(stack.client)

    table = Table(title="verdicts (read back from ClickHouse)")
    for col in ("submission", "miner", "sample", "verdict", "reason", "gate", "points"):
        table.add_column(col)
    for sid, (miner, variant) in sorted(variants.items(), key=lambda kv: (kv[1][0], kv[1][1])):
        rep = reports.get(sid) or {}
        verdict = rep.get("verdict", "missing")
        colour = "green" if verdict == "accepted" else "red"
        table.add_row(sid[:8], miner, variant, f"[{colour}]{verdict}[/{colour}]", rep.get("reason_code") or "",
                      rep.get("failed_gate") or "", f"{rep.get('points', 0):g}")
    console.print(table)
    bal = Table(title="ledger balances")
    for col in ("miner", "points", "entries"):
        bal.add_column(col)
    for row in balances:
        bal.add_row(row["miner_id"], f"{row['points']:g}", str(row["entries"]))
    console.print(bal)
    console.print(f"reports and ledger persist in {home}; e.g. "
                  f"KIBOTOS_HOME={home} kibotos report {next(iter(variants))}")
    missing = [sid for sid in variants if not reports.get(sid)]
    return 1 if missing else 0
