"""The novelty candidate query's cost per check (``kibotos.novelty.index.find_candidates``)
on synthetic indexes of several sizes (``tests/kibotos/novelty/synthetic_index.py``: no
video, so building the index is cheap).

Per size: wall and process CPU time of one check (p50 over the last ``queries`` rows, each
compared with every row before it), and of ClickHouse's analysis alone (``EXPLAIN`` of the
same SQL: what a check costs before it reads a row). chdb runs in this process, so the
CPU time is the engine's work on all threads, less sensitive to other load than the wall.

    python -m benchmarks.novelty_query --sizes 1,30,120 --queries 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from infra.migrate import apply_migrations
from kibotos.errors import ServiceError
from kibotos.novelty import index, load_novelty_config
from kibotos.warehouse import open_client

REPO_ROOT = Path(__file__).resolve().parents[1]


def _explain_cost(client, rows, cfg, module) -> float:
    """CPU seconds of ``EXPLAIN`` of ``module``'s candidate query for the last row."""
    captured: dict[str, Any] = {}
    query = module._query

    def capture(c, sql, parameters):
        if "traj_scaled" in parameters or any(k.startswith("traj_s") for k in parameters):
            captured.update(sql=sql, parameters=parameters)
        return query(c, sql, parameters)

    module._query = capture
    try:
        r = rows[-1]
        module.find_candidates(client, r["submission_id"], r["created_at_ms"], r["fingerprint"].motion_variants, cfg)
    finally:
        module._query = query
    t = time.process_time()
    client.query("EXPLAIN " + captured["sql"], parameters=captured["parameters"])
    return time.process_time() - t


def run_novelty_query_bench(sizes: list[int], queries: int = 5, seed: int = 0,
                            modules: dict[str, Any] | None = None) -> dict[str, Any]:
    """``modules``: label -> a module with ``find_candidates`` and ``_query`` (default: the
    current ``kibotos.novelty.index``); several are timed alternately, check by check, on
    one index (a before/after comparison in one run)."""
    if str(REPO_ROOT) not in sys.path:  # the installed console script sees the packages, not tests/
        sys.path.insert(0, str(REPO_ROOT))
    try:
        from tests.kibotos.novelty.synthetic_index import insert_rows, make_rows
    except ImportError as exc:
        raise ServiceError(f"the novelty bench needs the repository's tests package (a checkout): {exc}") from exc

    cfg = load_novelty_config().novelty
    modules = modules or {"current": index}
    client = open_client(f"chdb://{tempfile.mkdtemp(prefix='novelty-bench-')}")
    apply_migrations(client)
    out: dict[str, Any] = {"queries": queries, "sizes": {}}
    try:
        rows: list[dict[str, Any]] = []
        for n in sorted(sizes):
            more = make_rows(n, cfg, seed=seed)[len(rows):]
            insert_rows(client, more)
            rows += more
            times: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": [], "n": []} for k in modules}
            for r in rows[-queries:]:
                for label, module in modules.items():
                    t, c = time.perf_counter(), time.process_time()
                    best = module.find_candidates(client, r["submission_id"], r["created_at_ms"],
                                                  r["fingerprint"].motion_variants, cfg)
                    times[label]["wall"].append(time.perf_counter() - t)
                    times[label]["cpu"].append(time.process_time() - c)
                    times[label]["n"].append(sum(b.candidates for b in best.values() if b))
            out["sizes"][str(n)] = {label: {
                "check_wall_s_p50": round(statistics.median(times[label]["wall"]), 4),
                "check_cpu_s_p50": round(statistics.median(times[label]["cpu"]), 4),
                "explain_cpu_s": round(_explain_cost(client, rows, cfg, module), 4),
                "candidates_p50": statistics.median(times[label]["n"]),
            } for label, module in modules.items()}
    finally:
        client.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,30,120")
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = run_novelty_query_bench([int(s) for s in args.sizes.split(",")], args.queries)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
