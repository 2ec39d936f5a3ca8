"""``kibotos bench faults --scenarios hostile_delay``: how long other miners' verdicts wait
while hostile bundles are in the chain, against the configured budgets.

One ``kibotos up`` (its own process and home, durable broker, no evidence jobs) runs with
a gate config whose time budgets are tightened (``gate_time_budget_s``,
``max_decode_seconds``; every other limit as packaged) so that a run takes minutes, not
the packaged 300 s / 120 s. Then:

1. warm-up: one genuine bundle (first-bundle costs: imports, robot models), not counted;
2. baseline: ``genuine`` bundles of other miners, latency of each (its submission until
   its report can be read);
3. attack: one bundle of each hostile class of issue 12 — codec bombs (zstd without a
   content size, gzip), a zip header that lies, a fill-value array, an 8192x8192 mp4 of
   skip frames, a 3840x2160 mp4 inside every size budget that costs more to decode than
   ``max_decode_seconds``, a NUL in a joint name, ``fps = 1e-4`` — then ``genuine``
   more of other miners behind them; each one's latency again.

``delay`` of a genuine bundle is its latency under attack minus the baseline median;
``delay_ratio`` is the largest delay over ``gate_time_budget_s`` (the budget one gate
may spend on one bundle; <= 1: no other miner waited longer than one budget for all of
the hostile bundles together). The hostile bundles' reason codes and the limit each one
hit are reported with it.

The hostile bundles are built by ``tests/fixtures/hostile.py`` (the corpus the tests
use), so this scenario needs the repository's ``tests`` package.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import yaml

from kibotos.errors import ServiceError

REPO_ROOT = Path(__file__).resolve().parent.parent
HOSTILE_VIDEO_SIDE = (3840, 2160)  # the largest frame every size budget allows
HOSTILE_SECONDS = 20  # the episode the in-budget video covers (30 fps)


def bench_config(home: Path, budget_s: float, decode_s: float) -> Path:
    """The packaged gate config with the two time budgets tightened; its version says so."""
    from kibotos.config.gates import DEFAULT_PATH

    doc = yaml.safe_load(Path(DEFAULT_PATH).read_text())
    doc["config_version"] = f"{doc['config_version']}+bench-budget-{budget_s:g}s"
    doc["limits"] |= {"gate_time_budget_s": float(budget_s), "max_decode_seconds": float(decode_s)}
    path = home / "gates-bench.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def hostile_bundles(root: Path) -> dict[str, Path]:
    """One bundle per hostile class, each its own submission of ``miner-hostile``."""
    from kibotos.robots import get_robot, list_robots
    from kibotos.synthetic.samples import make_episode

    if str(REPO_ROOT) not in sys.path:  # the installed console script sees the packages, not tests/
        sys.path.insert(0, str(REPO_ROOT))
    try:
        from tests.fixtures import hostile as h
    except ImportError as exc:
        raise ServiceError(f"hostile_delay needs the repository's tests package (a checkout): {exc}") from exc

    robot = get_robot("ur5", dict(list_robots())["ur5"])
    base = make_episode(robot, "genuine", seed=900, miner_id="miner-hostile",
                        duration_ms=HOSTILE_SECONDS * 1000).write(root / "hostile-base.zarr.zip")
    w, hgt = HOSTILE_VIDEO_SIDE
    frames = HOSTILE_SECONDS * 30
    classes = {
        "zstd_bomb_no_content_size": lambda s, d: h.replace_chunk(s, d, h.zstd_zeros(h.GiB, False)),
        "gzip_bomb": lambda s, d: h.replace_chunk(s, d, h.gzip_zeros(256 * h.MiB), codecs=[
            {"name": "bytes", "configuration": {"endian": "little"}}, {"name": "gzip", "configuration": {"level": 5}}]),
        "zip_header_lie": h.zip_header_lie,
        "fill_value_array": h.fill_value_array(1_000_000),
        "mp4_8192_square_skip_frames": h.with_video(lambda: h.big_black_mp4(8192, 8192, 2)),
        "mp4_4k_in_size_budget": lambda s, d: h.with_video(lambda: h.big_black_mp4(w, hgt, frames, fps=30))(
            h.edit_manifest(lambda a: a["video"]["primary"].update(fps=30.0, frame_count=frames))(
                s, d.with_name("4k-manifest.zarr.zip")), d),
        "joint_name_nul": h.joint_name("shoulder\x00"),
        "fps_1e-4": h.edit_manifest(lambda a: a["video"]["primary"].update(fps=1e-4)),
    }
    out = {}
    for name, build in classes.items():
        fresh = h.edit_manifest(lambda a: a.update(submission_id=str(uuid.uuid4())))(base, root / f"{name}-src.zarr.zip")
        out[name] = build(fresh, root / f"{name}.zarr.zip")
    return out


def _submit_timed(paths: list[Path], state: dict, store, catalogue) -> list[tuple[str, float]]:
    """``[(sid, wall-clock time its event was acknowledged)]``, one submission at a time."""
    from kibotos.runtime.submit import submit_paths

    out = []
    for path in paths:
        [sub] = submit_paths([path], bootstrap=state["bootstrap"], store=store, catalogue=catalogue)
        out.append((sub.submission_id, time.time()))
    return out


def _wait_reports(settings, submitted: list[tuple[str, float]], timeout_s: float) -> dict[str, tuple[dict, float]]:
    """``{sid: (report, latency_s)}``; the latency runs from the submission to the
    decision's own time (``decided_at``, stamped by the deciding stage), so how often
    and how fast the read API is polled does not enter it."""
    from datetime import datetime

    from kibotos.reports import reads

    found: dict[str, tuple[dict, float]] = {}
    deadline = time.monotonic() + timeout_s
    while len(found) < len(submitted) and time.monotonic() < deadline:
        for sid, t0 in submitted:
            if sid in found:
                continue
            try:
                rep = reads.get_report(settings, sid)
            except ServiceError:
                rep = None
            if rep and rep.get("final", True):
                decided = datetime.fromisoformat(str(rep["decided_at"]).replace("Z", "+00:00")).timestamp()
                found[sid] = (rep, decided - t0)
        time.sleep(0.2)
    return found


def _limit_of(report: dict) -> str | None:
    for gate in report.get("gates") or []:
        if not gate.get("passed"):
            return (gate.get("metrics") or {}).get("limit")
    return None


def _slowest_gate_s(report: dict) -> float:
    return max([float((g.get("metrics") or {}).get("wall_ms") or 0.0) / 1000 for g in report.get("gates") or []]
               or [0.0])


def run_hostile_delay(root: Path, *, workers: int = 2, genuine: int = 4, budget_s: float = 10.0,
                      decode_s: float = 5.0, timeout_s: float = 600.0, progress=lambda m: None) -> dict:
    from benchmarks.faults import UpProcess, _episodes
    from kibotos.config.settings import Settings
    from kibotos.objectstore import store_from_settings
    from topics.catalogue import Catalogue

    home = root / "hostile_delay"
    home.mkdir(parents=True)
    config = bench_config(home, budget_s, decode_s)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIBOTOS_")}
    env.update({"KIBOTOS_HOME": str(home), "KIBOTOS_EVIDENCE_JOBS": "[]", "KIBOTOS_LOG_LEVEL": "WARNING",
                "KIBOTOS_NOVELTY": "false", "KIBOTOS_GATE_CONFIG_PATH": str(config)})
    settings = Settings(home=home, evidence_jobs=(), novelty=False, gate_config_path=config)
    catalogue = Catalogue.from_settings(settings)
    (root / "delay-episodes").mkdir(exist_ok=True)
    others = _episodes(root / "delay-episodes", 1 + 2 * genuine, first_seed=300, miner="miner-other")
    t_build = time.monotonic()
    hostile = hostile_bundles(root / "delay-episodes")
    progress(f"hostile_delay: {len(hostile)} hostile bundles built in {time.monotonic() - t_build:.0f}s")
    up = UpProcess(home, env, workers)
    t0 = time.monotonic()
    state = up.start()
    startup_s = time.monotonic() - t0
    try:
        store = store_from_settings(settings)
        warm = _wait_reports(settings, _submit_timed(others[:1], state, store, catalogue), timeout_s)
        if len(warm) != 1:
            raise ServiceError("hostile_delay: the warm-up bundle got no verdict")
        base = _wait_reports(settings, _submit_timed(others[1:1 + genuine], state, store, catalogue), timeout_s)
        baseline = [lat for _, lat in base.values()]
        progress(f"hostile_delay: baseline latencies {[round(x, 1) for x in baseline]}")
        bad = _submit_timed(list(hostile.values()), state, store, catalogue)
        good = _submit_timed(others[1 + genuine:], state, store, catalogue)
        under = _wait_reports(settings, bad + good, timeout_s)
        base_median = statistics.median(baseline) if baseline else 0.0
        good_lat = [under[sid][1] for sid, _ in good if sid in under]
        delays = [lat - base_median for lat in good_lat]
        hostile_out = {}
        for (name, _), (sid, _) in zip(hostile.items(), bad):
            rep = under.get(sid, ({}, None))[0]
            hostile_out[name] = {"verdict": rep.get("verdict"), "failed_gate": rep.get("failed_gate"),
                                 "reason_code": rep.get("reason_code"), "limit": _limit_of(rep),
                                 "slowest_gate_s": round(_slowest_gate_s(rep), 2)}
        submitted, verdicts = genuine + len(bad) + len(good), len(base) + len(under)
        max_delay = max(delays) if delays else None
        return {
            "scenario": "hostile_delay", "submitted": submitted, "verdicts": verdicts, "lost": submitted - verdicts, "duplicates": 0, "revisions": 0, "paid_twice": 0, "ledger_mismatch": 0, "unpaid": 0,
            # the slowest genuine verdict under attack (the "recovery" of this drill)
            "recovery_s": round(max(good_lat), 1) if good_lat else float("nan"), "startup_s": round(startup_s, 1),
            "gate_time_budget_s": budget_s, "max_decode_seconds": decode_s,
            "baseline_latency_s": [round(x, 2) for x in baseline], "baseline_median_s": round(base_median, 2),
            "latency_under_attack_s": [round(x, 2) for x in good_lat],
            "delay_s": [round(x, 2) for x in delays], "max_delay_s": None if max_delay is None else round(max_delay, 2),
            "delay_ratio": None if max_delay is None else round(max_delay / budget_s, 3),
            "genuine_accepted_under_attack": sum(1 for sid, _ in good if under.get(sid, ({}, 0))[0].get("verdict")
                                                 == "accepted"),
            "hostile": hostile_out,
        }
    finally:
        up.stop()


def summary(result: dict) -> str:
    return json.dumps({k: result[k] for k in ("baseline_median_s", "max_delay_s", "gate_time_budget_s",
                                              "delay_ratio")})
