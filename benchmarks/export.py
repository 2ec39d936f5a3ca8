"""Cost of publishing and exporting a dataset version against reading the same bundles.

``N`` accepted episodes (verdict events as the decision stage publishes them) over a pool
of ``P`` genuine sample bundles (the robots of the registry in turn; episodes share the
pool's files, each episode is read and converted on its own):

==========  ===============================================================================
stage       what is timed
==========  ===============================================================================
publish     the builder selecting the N verdicts and publishing version 1 (episodes.jsonl,
            changelog, card, attribution)
read        ``kibotos.export.bundle_frames.read_bundle`` on every episode's bundle: open,
            manifest, kinematics, object and contact streams, the mp4 bytes -- what an
            exporter must read, with nothing written
export      ``export_version`` to LeRobot v3.0 + HumanX clips (every file written, hashed)
export_1/10 the same on a version of N/10 episodes, run first (it pays the libraries'
            first-use costs): the peak RSS growth of the two exports shows how memory
            grows with N (streaming: it should not)
==========  ===============================================================================

Throughput is episodes per second of wall time; the headline ratio is export/read.
Peak memory is this process's RSS high-water during each stage (psutil sampling),
less its RSS before the stage. Absolute numbers depend on the machine: compare ratios.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.pipeline import PeakRSS, machine
from kibotos.datasets.builder import DatasetBuilder
from kibotos.datasets.spec import parse_spec
from kibotos.datasets.store import DatasetStore
from kibotos.export.bundle_frames import read_bundle
from kibotos.export.runner import export_version
from kibotos.objectstore import LocalObjectStore

Progress = Callable[[str], None]


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _verdict(n: int, miner: str, robot: str, rev: str, score: float, uri: str, decided_at: int) -> dict:
    import uuid

    sid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"kibotos-bench-export-{n}"))
    report = {"submission_id": sid, "miner_id": miner, "verdict": "accepted", "gates": [
        {"gate": "gate_a_integrity", "passed": True, "metrics": {}, "thresholds": {}, "flags": []}],
        "sync": {}, "config_version": "bench", "robot_model_id": robot, "robot_model_revision": rev,
        "scores": {"score": score, "reward": 10 * score, "config_version": "bench",
                   "components": [{"name": "task", "value": score}]}}
    return {"submission_id": sid, "miner_id": miner, "verdict": "accepted", "reason_code": None, "failed_gate": None,
            "config_version": "bench", "decided_at": decided_at, "points": 10 * score,
            "report_json": json.dumps(report), "bundle_uri": uri, "upload_id": None}


def _timed(fn, n: int) -> dict:
    before = _rss_mb()
    with PeakRSS(interval_s=0.05) as mem:
        t0 = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
    return {"episodes": n, "wall_s": round(wall, 3), "episodes_per_s": round(n / wall, 2) if wall else None,
            "peak_rss_growth_mb": round(max(0.0, mem.self_mb - before), 1), "rss_before_mb": round(before, 1),
            "result": out}


def run_export_bench(episodes: int = 1000, pool: int = 6, formats: tuple[str, ...] = ("lerobot", "humanx"),
                     work: Path | None = None, progress: Progress = print) -> dict:
    from kibotos.robots import get_robot, list_robots
    from kibotos.synthetic.samples import make_episode

    tmp = tempfile.TemporaryDirectory(prefix="kibotos-bench-export-") if work is None else None
    root = Path(tmp.name if tmp else work)
    try:
        objects = LocalObjectStore(root / "objects")
        robots = list_robots()
        uris = []
        for k in range(pool):
            robot, rev = robots[k % len(robots)]
            progress(f"sample bundle {k + 1}/{pool} ({robot})")
            path = make_episode(get_robot(robot, rev), "genuine", seed=100 + k, miner_id="bench").write(
                root / f"pool-{k}.zarr.zip")
            uris.append((robot, rev, objects.put_file(path, f"submissions/pool-{k}.zarr.zip").uri))
        store = DatasetStore(root / "datasets")
        t0 = 1_796_000_000_000

        def publish(name: str, n: int):
            store.create(parse_spec({"name": name}))
            b = DatasetBuilder(store, name)
            for i in range(n):
                robot, rev, uri = uris[i % len(uris)]
                b.offer("verdicts", _verdict(i, f"miner-{i % 7}", robot, rev, 0.5 + (i % 50) / 100, uri, t0 + i))
            return b.publish(now_ms=t0 + n)["content_hash"]

        progress(f"publish {episodes} episodes")
        pub = _timed(lambda: publish("bench", episodes), episodes)
        small_n = max(1, episodes // 10)
        publish("bench-small", small_n)

        def read_all():
            frames = 0
            for ep in store.episodes("bench", 1):
                frames += len(read_bundle(objects.local_path(ep.bundle_uri)).timestamps_ms)
            return {"kinematic_samples": frames}

        progress(f"read {episodes} bundles")
        read = _timed(read_all, episodes)
        # the small export first: it also pays the first-use costs (codec and parquet
        # libraries), so the large one's RSS growth is what N episodes add
        progress(f"export {small_n} episodes")
        small = _timed(lambda: export_version(store, "bench-small", 1, root / "exports", objects, formats), small_n)
        progress(f"export {episodes} episodes ({', '.join(formats)})")
        exp = _timed(lambda: export_version(store, "bench", 1, root / "exports", objects, formats), episodes)
        for stage in (exp, small):
            r = stage.pop("result")
            stage["skipped"] = len(r["skipped"])
            stage["files"] = len(r["files"])
        pub.pop("result")
        read.pop("result")
        export_bytes = sum(p.stat().st_size for p in (root / "exports" / "bench").rglob("*") if p.is_file())
        return {"machine": machine(), "episodes": episodes, "pool_bundles": pool, "formats": list(formats),
                "stages": {"publish": pub, "read": read, "export": exp, f"export_{small_n}": small},
                "export_mb": round(export_bytes / 2**20, 1),
                "ratios": {"export_over_read_throughput": round(exp["episodes_per_s"] / read["episodes_per_s"], 3),
                           "publish_over_read_throughput": round(pub["episodes_per_s"] / read["episodes_per_s"], 3),
                           "peak_rss_growth_export_n_over_n_div_10": round(
                               exp["peak_rss_growth_mb"] / max(small["peak_rss_growth_mb"], 1.0), 2)}}
    finally:
        if tmp is not None:
            tmp.cleanup()


def write_json(result: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path
