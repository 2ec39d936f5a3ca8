"""End-to-end cost of verifying episodes: the gate chain and the stream pipeline against
the bare cost of reading what the gates read, and against ``lerobot-doctor``.

``N`` genuine episodes per size class (``SIZES``; the robots of the registry in turn)
go through each stage below, all measured in one run on the same bundles:

==============  ==========================================================================
stage           what one episode costs
==============  ==========================================================================
floor           open the bundle, validate the manifest, read every float array (gate A's
                NaN scan: kinematics and object streams) and the timestamps, decode the
                video's luma plane downsized to gate C's ``decode_width`` -- the data the
                gates read, with no check run on it
floor_fast      the floor with the fast decode: no loop filter, frames halved before the resize
                (``decode_luma(fast=True)``); gate C is run on both decodes of every
                episode (untimed) and the differences of its estimate are reported
chain           ``open_bundle`` + ``run_chain``: gates A-E in-process, as ``kibotos verify``
gates_abde      ``open_bundle`` + gates A, B, D and E (no video): the counterpart of
                lerobot-doctor's equivalent checks less ``videos``
stack_<w>w      the embedded stack (Tansu, faust gate workers, ClickHouse sink) with ``w``
                gate worker processes, no evidence jobs and no novelty stage (the cheap
                chain, as in ``chain``): every episode submitted at once
                (``submit_paths``), until every verdict is on the ``verdicts`` topic
lerobot_doctor  the same episodes converted to LeRobot v3 datasets (one per episode, as a
                per-submission verifier would check them), ``load_dataset`` + its checks;
                then ``paired_abde``: gates_abde and the doctor's checks less ``videos``
                alternated on each episode (``PAIRED_ROUNDS``, medians), one load for both
==============  ==========================================================================

Throughput is episodes (and bundle MB) per second of wall time. Latency per episode is
its own wall time for the in-process stages (run one after another) and
``received_at`` (the ``submissions.received`` event, read back from the warehouse) to
``decided_at`` (its verdict) for the stack, where episodes overlap; for the stack,
``outside_gates_ms`` is that latency less the episode's summed gate ``wall_ms``: the
topic hops, queueing behind other episodes and (de)serialisation. Per-gate cost is each
gate result's ``wall_ms``. Ratios are of wall times measured in this run: chain/floor
(overall and per size class: summed per-episode latencies), floor_fast/floor,
stack/chain, and the throughput of each stack run against the one with the fewest workers.
Peak memory is the RSS high-water of this process and of its children (worker processes,
broker), sampled per stage with psutil, plus this process's ``getrusage`` high-water over
the whole run (not the children's: Linux carries a child's pre-``exec`` RSS, a copy of
this process, into its ``ru_maxrss``).

Every stack run is warmed first (a few short episodes per worker and robot, left out of
the numbers): worker start-up, consumer-group joins and robot model loading are not part
of the per-episode cost. Absolute times depend on the machine (shared CPUs here):
compare ratios, or runs on the same machine.
"""

from __future__ import annotations

import contextlib
import json
import resource
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np

from kibotos.bundle import open_bundle
from kibotos.bundle.reader import TIMESTAMPS, VIDEO_ENCODED, VIDEO_FRAMES
from kibotos.config.gates import GateConfig, load_config
from kibotos.export.lerobot import VIDEO_KEY as LEROBOT_VIDEO_KEY  # noqa: F401  (re-exported)

# size class -> episode duration (ms)
SIZES = {"small": 5_000.0, "medium": 20_000.0, "large": 60_000.0}
WARMUP_DURATION_MS = 4_000.0
MINER = "miner-bench"

# lerobot-doctor 0.2.0's checks, and the gates each one overlaps with; the others judge a
# whole dataset (episode length spread, policy compatibility, portability), not an episode
DOCTOR_VERSION = "0.2.0"
DOCTOR_EQUIVALENT_CHECKS = {
    "metadata": "gate A: manifest and required streams",
    "temporal": "gate B: timestamps monotonic, no gaps, declared rate",
    "actions": "gates A/D/E: NaN, clipped and frozen values, jumps",
    "videos": "gate C: video present, fps and frame count (decodes the first frame only)",
    "statistics": "gate A: NaN/Inf, constant streams",
    "per_episode": "gates B/E: gaps and jumps per episode",
}
DOCTOR_OTHER_CHECKS = ("episodes", "consistency", "training", "anomalies", "portability")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchEpisode:
    path: Path
    size: str
    robot: str
    duration_ms: float
    bytes: int
    submission_id: str
    seed: int


def parse_sizes(spec: str) -> list[str]:
    """``"small,medium"`` -> size class names; ``ValueError`` naming the known ones."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in names if s not in SIZES]
    if unknown or not names:
        raise ValueError(f"unknown size(s) {unknown or [spec]}; known: "
                         + ", ".join(f"{k} ({v / 1000:g} s)" for k, v in SIZES.items()))
    return list(dict.fromkeys(names))


def parse_workers(spec: str, max_workers: int) -> list[int]:
    """``"1,2"`` -> worker counts, each in 1..``max_workers`` (the topics' partitions)."""
    try:
        counts = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        counts = []
    if not counts or any(not 1 <= c <= max_workers for c in counts):
        raise ValueError(f"workers must be a comma-separated list of integers in 1..{max_workers} "
                         f"(the topic partitions), got {spec!r}")
    return sorted(set(counts))


# --- measurement helpers --------------------------------------------------------------

def distribution(values_ms: list[float]) -> dict:
    """p50 / p95 / mean / max of a list of milliseconds (linear-interpolated percentiles)."""
    if not values_ms:
        return {"p50": None, "p95": None, "mean": None, "max": None}
    a = np.asarray(values_ms, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "mean": round(float(a.mean()), 2), "max": round(float(a.max()), 2)}


class PeakRSS:
    """RSS high-water of this process and of its children while the block runs, sampled
    every ``interval_s`` with psutil (children: the sum over every descendant; gate
    workers are told apart by their command line)."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.self_mb = self.children_mb = self.workers_mb = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while True:
            children = workers = 0
            try:
                own = me.memory_info().rss
                for child in me.children(recursive=True):
                    try:
                        rss = child.memory_info().rss
                        children += rss
                        if "streams.worker" in " ".join(child.cmdline()):
                            workers += rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                        continue
            except psutil.Error:
                own = 0
            self.self_mb = max(self.self_mb, own / 2**20)
            self.children_mb = max(self.children_mb, children / 2**20)
            self.workers_mb = max(self.workers_mb, workers / 2**20)
            self.samples += 1
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "PeakRSS":
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def as_dict(self) -> dict:
        return {"self_mb": round(self.self_mb, 1), "children_mb": round(self.children_mb, 1),
                "gate_workers_mb": round(self.workers_mb, 1), "samples": self.samples,
                "interval_s": self.interval_s}


def tree_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process and every descendant alive
    now (the stack's broker, workers, builder): on CPUs shared with other work, the cost of
    a stage that wall time hides behind the run queue."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def rusage_peaks() -> dict:
    """This process's ``getrusage`` RSS high-water over the whole run."""
    kib = 1024 / 2**20  # ru_maxrss is in KiB on Linux
    return {"self_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib, 1)}


def _stage_summary(wall_s: float, episodes: list[BenchEpisode], latency_ms: dict[Path, float]) -> dict:
    total = sum(e.bytes for e in episodes)
    by_size: dict[str, dict] = {}
    for size in dict.fromkeys(e.size for e in episodes):
        eps = [e for e in episodes if e.size == size]
        by_size[size] = {"episodes": len(eps), "latency_ms": distribution([latency_ms[e.path] for e in eps])}
    return {"episodes": len(episodes), "bytes": total, "wall_s": round(wall_s, 4),
            "episodes_per_s": round(len(episodes) / wall_s, 3), "mb_per_s": round(total / 1e6 / wall_s, 3),
            "latency_ms": distribution(list(latency_ms.values())), "by_size": by_size}


def _gate_costs(results_per_episode: list[list[dict]]) -> dict:
    """Per gate: how many episodes it ran on, p50 / mean / total ``wall_ms``, share of the total."""
    per_gate: dict[str, list[float]] = {}
    for results in results_per_episode:
        for res in results:
            wall = (res.get("metrics") or {}).get("wall_ms")
            if wall is not None:
                per_gate.setdefault(res["gate"], []).append(float(wall))
    grand = sum(sum(v) for v in per_gate.values()) or 1.0
    return {gate: {"runs": len(v), "p50_ms": round(float(np.median(v)), 3), "mean_ms": round(float(np.mean(v)), 3),
                   "total_ms": round(sum(v), 2), "share": round(sum(v) / grand, 4)} for gate, v in per_gate.items()}


# --- episodes ---------------------------------------------------------------------------

def generate_episodes(out: Path, n: int, sizes: list[str], robots: list[tuple[str, str]], progress: Progress,
                      seed: int = 0) -> list[BenchEpisode]:
    """``n`` genuine episodes per size class, the robots in turn; distinct submission ids."""
    from kibotos.robots import get_robot
    from kibotos.synthetic.samples import make_episode

    episodes = []
    for size in sizes:
        for i in range(n):
            model_id, revision = robots[i % len(robots)]
            ep_seed = seed * 100_000 + list(SIZES).index(size) * 1000 + i
            progress(f"generate {size} {i + 1}/{n}  ({model_id}, {SIZES[size] / 1000:g} s)")
            ep = make_episode(get_robot(model_id, revision), "genuine", seed=ep_seed, miner_id=MINER,
                              duration_ms=SIZES[size])
            path = ep.write(out / f"{size}-{i:03d}-{model_id}.zarr.zip")
            episodes.append(BenchEpisode(path, size, model_id, SIZES[size], path.stat().st_size,
                                         ep.manifest["submission_id"], ep_seed))
    return episodes


def warmup_episodes(out: Path, count: int, robots: list[tuple[str, str]]) -> list[Path]:
    """Short episodes under another miner id (other submission ids): the warm-up set."""
    from kibotos.robots import get_robot
    from kibotos.synthetic.samples import make_episode

    paths = []
    for i in range(count):
        model_id, revision = robots[i % len(robots)]
        ep = make_episode(get_robot(model_id, revision), "genuine", seed=900_000 + i, miner_id=f"{MINER}-warmup",
                          duration_ms=WARMUP_DURATION_MS)
        paths.append(ep.write(out / f"warmup-{i:03d}-{model_id}.zarr.zip"))
    return paths


# --- (a) the floor, (b) the chain -------------------------------------------------------

def read_what_gates_read(path: Path, config: GateConfig, fast: bool = False) -> int:
    """The data gates A-E read, with no check on it; returns the decoded frame count.
    ``fast``: the video decoded without the loop filter (``decode_luma(fast=True)``)."""
    from kibotos.media.video import decode_luma, luma_from_frames

    with open_bundle(path) as view:
        _ = view.manifest  # validated, as every gate does
        for info in view.arrays():
            if np.dtype(info.dtype).kind == "f":
                view.read(info.path)  # gate A's NaN/Inf scan reads every float array
        view.read(TIMESTAMPS)
        width = config.gate_c.decode_width
        if view.has(VIDEO_ENCODED):
            return int(decode_luma(view.read(VIDEO_ENCODED).tobytes(), target_width=width, fast=fast).frames.shape[0])
        return int(luma_from_frames(view.read(VIDEO_FRAMES), target_width=width).shape[0])


def bench_floor(episodes: list[BenchEpisode], warmup: list[Path], config: GateConfig, progress: Progress,
                fast: bool = False) -> dict:
    label = "floor_fast" if fast else "floor"
    for path in warmup:
        read_what_gates_read(path, config, fast)
    latency: dict[Path, float] = {}
    frames = 0
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        for k, ep in enumerate(episodes, 1):
            t = time.perf_counter()
            frames += read_what_gates_read(ep.path, config, fast)
            latency[ep.path] = (time.perf_counter() - t) * 1000.0
            progress(f"{label} {k}/{len(episodes)}")
        wall = time.perf_counter() - t0
    return _stage_summary(wall, episodes, latency) | {"frames_decoded": frames, "peak_rss": mem.as_dict()}


def bench_chain(episodes: list[BenchEpisode], warmup: list[Path], config: GateConfig, progress: Progress) -> dict:
    from processors.chain import build_report, run_chain

    def verify(path: Path):
        with open_bundle(path) as view:
            return run_chain(view, config)

    for path in warmup:  # robot models and kinematics loaded, as in a warm worker
        verify(path)
    latency: dict[Path, float] = {}
    results: list[list[dict]] = []
    verdicts: dict[str, int] = {}
    with PeakRSS() as mem:
        cpu0 = tree_cpu_s()  # first: walking /proc is not the chain's wall time
        t0 = time.perf_counter()
        for k, ep in enumerate(episodes, 1):
            t = time.perf_counter()
            res = verify(ep.path)
            latency[ep.path] = (time.perf_counter() - t) * 1000.0
            results.append([r.model_dump() for r in res])
            report = build_report(ep.submission_id, res, config.config_version)
            key = report.verdict if report.verdict == "accepted" else f"rejected:{report.reason_code}"
            verdicts[key] = verdicts.get(key, 0) + 1
            progress(f"chain {k}/{len(episodes)}")
        wall, cpu_s = time.perf_counter() - t0, tree_cpu_s() - cpu0
    return _stage_summary(wall, episodes, latency) | {"cpu_s": round(cpu_s, 3), "verdicts": verdicts, "gates": _gate_costs(results),
                                                      "peak_rss": mem.as_dict()}


# gates A, B, D and E: what lerobot-doctor's checks overlap with, apart from gate C's video
GATES_WITHOUT_VIDEO = ("gate_a_integrity", "gate_b_timestamps", "gate_d_limits", "gate_e_plausibility")


# rounds of the paired comparison: gates A/B/D/E and the doctor alternated on each episode
PAIRED_ROUNDS = 5


def gates_abde_verifier(config: GateConfig) -> Callable[[Path], list]:
    """``open_bundle`` + gates A, B, D and E on one bundle path."""
    from processors.base import get_gate, run_gate

    chosen = [get_gate(g) for g in GATES_WITHOUT_VIDEO]

    def verify(path: Path):
        with open_bundle(path) as view:
            return [run_gate(g, view, config) for g in chosen]

    return verify


def bench_gates_abde(episodes: list[BenchEpisode], warmup: list[Path], config: GateConfig,
                     progress: Progress) -> dict:
    """``open_bundle`` + gates A, B, D and E (not C): the counterpart of lerobot-doctor's
    ``load_dataset`` + its equivalent checks less ``videos``, each reading its own format."""
    verify = gates_abde_verifier(config)
    for path in warmup:
        verify(path)
    latency: dict[Path, float] = {}
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        for k, ep in enumerate(episodes, 1):
            t = time.perf_counter()
            verify(ep.path)
            latency[ep.path] = (time.perf_counter() - t) * 1000.0
            progress(f"gates A/B/D/E {k}/{len(episodes)}")
        wall = time.perf_counter() - t0
    return _stage_summary(wall, episodes, latency) | {"gate_ids": list(GATES_WITHOUT_VIDEO), "peak_rss": mem.as_dict()}


def fast_decode_differences(episodes: list[BenchEpisode], config: GateConfig, progress: Progress) -> dict:
    """Gate C with the full and the fast decode on every episode (not timed): the verdicts
    that differ and how far the sync estimate moves (``|estimated_offset_ms|`` difference;
    the fast decode is acceptable where it stays within 10 ms)."""
    from processors.gate_c_sync import check_sync

    rows = []
    for k, ep in enumerate(episodes, 1):
        with open_bundle(ep.path) as view:
            full = check_sync(view, config)
            fast = check_sync(view, config, fast_decode=True)
        est = [r.metrics.get("estimated_offset_ms") for r in (full, fast)]
        conf = [r.metrics.get("sync_confidence") for r in (full, fast)]
        rows.append({"episode": ep.path.name, "size": ep.size, "same_verdict": (full.passed, full.reason_code)
                     == (fast.passed, fast.reason_code), "estimated_offset_ms": est, "sync_confidence": conf,
                     "offset_diff_ms": None if None in est else round(abs(est[0] - est[1]), 2)})
        progress(f"fast decode vs full decode {k}/{len(episodes)}")
    diffs = [r["offset_diff_ms"] for r in rows if r["offset_diff_ms"] is not None]
    return {"episodes": len(rows), "verdicts_differ": sum(not r["same_verdict"] for r in rows),
            "offset_diff_ms": {"max": max(diffs, default=None),
                               "mean": round(float(np.mean(diffs)), 3) if diffs else None},
            "within_10_ms": all(d <= 10.0 for d in diffs), "per_episode": rows}


# lone small episodes per stack run, each submitted alone to the idle stack: the median is
# reported (one episode's latency on these shared CPUs moved by 2x between runs)
LONE_EPISODES = 3
# the pause before each lone episode: longer than the worker's busy window
# (streams.app.FETCH_BUSY_WINDOW_S), so each one meets an idle worker
LONE_PAUSE_S = 1.0


def lone_episode(out: Path, robot: tuple[str, str], index: int = 0) -> Path:
    """One small genuine episode under its own miner id: submitted alone to an idle stack."""
    from kibotos.robots import get_robot
    from kibotos.synthetic.samples import make_episode

    ep = make_episode(get_robot(*robot), "genuine", seed=800_000 + index, miner_id=f"{MINER}-lone",
                      duration_ms=SIZES["small"])
    return ep.write(out / f"lone-small-{index}-{robot[0]}.zarr.zip")


def lone_episodes(out: Path, robot: tuple[str, str], count: int = LONE_EPISODES) -> list[Path]:
    return [lone_episode(out, robot, i) for i in range(count)]


def chain_latency(path: Path, config: GateConfig, runs: int = 3) -> float:
    """Median wall ms of ``open_bundle`` + ``run_chain`` on one episode (after one warm run)."""
    from processors.chain import run_chain

    times = []
    for k in range(runs + 1):
        t = time.perf_counter()
        with open_bundle(path) as view:
            run_chain(view, config)
        if k:
            times.append((time.perf_counter() - t) * 1000.0)
    return round(float(np.median(times)), 2)


def _by_size_ratio(num: dict, den: dict) -> dict[str, float | None]:
    """Per size class: the ratio of the two stages' summed per-episode latencies."""
    out = {}
    for size in num.get("by_size", {}):
        a, b = num["by_size"][size], den.get("by_size", {}).get(size)
        if b is None:
            continue
        out[size] = _ratio(a["latency_ms"]["mean"] * a["episodes"] if a["latency_ms"]["mean"] else None,
                           b["latency_ms"]["mean"] * b["episodes"] if b["latency_ms"]["mean"] else None)
    return out


# --- (c) the stream pipeline ------------------------------------------------------------

class _VerdictCollector:
    """Follows the stack's ``verdicts`` topic in a thread: verdict and local arrival time
    per submission id."""

    def __init__(self, bootstrap: str, catalogue):
        self.bootstrap, self.catalogue = bootstrap, catalogue
        self.seen: dict[str, tuple[dict, float]] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-verdicts", daemon=True)

    def _run(self) -> None:
        from streams.verdict_feed import follow_verdicts

        try:
            for v in follow_verdicts(self.bootstrap, self.catalogue, stop=self._stop.is_set):
                self.seen.setdefault(v["submission_id"], (v, time.time()))
        except BaseException as exc:  # reported by wait(): the benchmark must not hang on it
            self.error = exc

    def __enter__(self) -> "_VerdictCollector":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)

    def wait(self, sids: set[str], stack, deadline: float, progress: Progress, label: str) -> None:
        from kibotos.errors import ServiceError

        last_report, last_count = 0.0, -1
        while True:
            count = len(sids & self.seen.keys())
            if count == len(sids):
                return
            if self.error is not None:
                raise ServiceError(f"{label}: the verdict feed failed: {self.error}")
            stack.check_workers()
            if time.monotonic() > deadline:
                raise ServiceError(f"{label}: {len(sids) - count} of {len(sids)} verdicts missing after the timeout "
                                   f"(see {stack.settings.home}/worker-*.log)")
            if count != last_count and time.monotonic() - last_report > 2.0:
                progress(f"{label}: {count}/{len(sids)} verdicts")
                last_report, last_count = time.monotonic(), count
            time.sleep(0.1)


def _received_at(stack, sids: list[str], deadline: float) -> dict[str, int]:
    """``received_at`` (epoch ms) of each submission, from the warehouse once the sink
    has written every row."""
    from kibotos.errors import ServiceError
    from kibotos.warehouse import DB

    while True:
        rows = stack.client.query(
            f"SELECT submission_id, toUnixTimestamp64Milli(received_at) FROM {DB}.submissions FINAL "
            "WHERE has({sids:Array(String)}, submission_id)", parameters={"sids": sids}).result_rows
        found = {str(sid): int(ms) for sid, ms in rows}
        if len(found) == len(set(sids)):
            return found
        if time.monotonic() > deadline:
            raise ServiceError(f"the warehouse holds {len(found)} of {len(sids)} submissions after the timeout")
        time.sleep(0.2)


def hop_trace(bootstrap: str, catalogue, sids: list[str], timeout_s: float = 10.0) -> dict:
    """Where a lone episode's time went between ``submissions.received`` and its verdict:
    per topic of the gate path, the median time from the record before it (the records'
    producer timestamps) and that less the ``wall_ms`` of the gate that produced it
    (``outside_ms``: the fetch wait of the hop, the stage's decode, bundle open and
    encode, the send). Read back from the topics' first offsets, so nothing in the stack
    is instrumented."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    path = [catalogue.submissions_received, *(catalogue.gate_passed(g) for g in "abcde"),
            catalogue.evidence_completed, catalogue.verdicts]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-hops-{uuid.uuid4().hex[:12]}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(t.name, p, OFFSET_BEGINNING) for t in path for p in range(t.partitions)])
    seen: dict[str, dict[str, tuple[int, float | None]]] = {}
    wanted = set(sids)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and sum(len(v) for v in seen.values()) < len(path) * len(wanted):
            msg = consumer.poll(0.2)
            if msg is None or msg.error() or msg.value() is None:
                continue
            spec = catalogue.by_name(msg.topic())
            try:
                rec = spec.deserialize(msg.value())
            except Exception:  # noqa: BLE001  (a record of another shape: not on the path)
                continue
            if rec.get("submission_id") not in wanted:
                continue
            results = rec.get("gate_results") or []
            wall = json.loads(results[-1]["metrics_json"]).get("wall_ms") if results and spec.id.startswith("gates.") \
                else None
            seen.setdefault(rec["submission_id"], {})[spec.id] = (msg.timestamp()[1], wall)
    finally:
        consumer.close()
    hops: dict[str, dict[str, list[float]]] = {}
    for per in seen.values():
        for before, topic in zip(path, path[1:]):
            if before.id in per and topic.id in per:
                hop = float(per[topic.id][0] - per[before.id][0])
                wall = per[topic.id][1]
                hops.setdefault(topic.id, {"hop_ms": [], "outside_ms": []})["hop_ms"].append(hop)
                hops[topic.id]["outside_ms"].append(hop - float(wall or 0.0))
    return {topic: {k: round(float(np.median(v)), 1) for k, v in d.items()} for topic, d in hops.items()}


def bench_stack(episodes: list[BenchEpisode], warmup: list[Path], workers: int, home: Path, progress: Progress,
                timeout_s: float, lone: Path | list[Path] | None = None) -> dict:
    from kibotos.config.settings import Settings
    from kibotos.runtime.stack import Stack
    from kibotos.runtime.submit import submit_paths

    label = f"stack {workers}w"
    # its own home (chdb, object store) and topics; nothing from a developer's environment
    # no GPU consumer either (no XGen or training jobs): off the gate path, it only took
    # the shared CPUs (Ray and its polling: ~20 % of a core idle, issue 17)
    settings = Settings(home=home, topic_prefix=f"bench{uuid.uuid4().hex[:10]}.", evidence_jobs=(), novelty=False,
                        xgen_jobs=(), training_jobs=(),
                        bootstrap_servers=None, clickhouse_dsn=None, object_store_url=None, log_level="WARNING")
    # the broker's log in memory, as in the reference runs: the cost of the durable log
    # is measured on its own (benchmarks/broker_storage.py, RESULTS.md)
    stack = Stack(settings, workers=workers, log=lambda m: progress(f"{label}: {m}"), ephemeral=True)
    with PeakRSS() as mem:
        t_start = time.perf_counter()
        # faust workers keep a data directory in their working directory: in the stack's
        # home, not wherever the benchmark was started
        home.mkdir(parents=True, exist_ok=True)
        with contextlib.chdir(home):
            stack.start()
        try:
            startup_s = time.perf_counter() - t_start
            submit = dict(bootstrap=stack.bootstrap, store=stack.store, catalogue=stack.catalogue)
            with _VerdictCollector(stack.bootstrap, stack.catalogue) as feed:
                t_warm = time.perf_counter()
                warm = submit_paths(warmup, **submit)
                feed.wait({s.submission_id for s in warm}, stack, time.monotonic() + timeout_s, progress,
                          f"{label} warm-up")
                warmup_s = time.perf_counter() - t_warm
                progress(f"{label}: warm ({len(warm)} warm-up episodes); submitting {len(episodes)}")
                cpu0 = tree_cpu_s()
                t0 = time.time()
                subs = submit_paths([e.path for e in episodes], **submit)
                submit_s = time.time() - t0
                sids = [s.submission_id for s in subs]
                feed.wait(set(sids), stack, time.monotonic() + timeout_s, progress, label)
                # every process of the stack (and this one's sink, chdb, verdict reader)
                cpu_s = tree_cpu_s() - cpu0
                arrived = {sid: feed.seen[sid] for sid in sids}
                lone_all: list[float] = []
                lone_hops: dict = {}
                lone_sids: list[str] = []
                for one in ([lone] if isinstance(lone, Path) else lone or []):
                    # one small episode on an idle stack: no queue in its latency
                    time.sleep(LONE_PAUSE_S)
                    [single] = submit_paths([one], **submit)
                    feed.wait({single.submission_id}, stack, time.monotonic() + timeout_s, progress, f"{label} lone")
                    [lone_received] = _received_at(stack, [single.submission_id], time.monotonic() + 60).values()
                    lone_all.append(float(feed.seen[single.submission_id][0]["decided_at"] - lone_received))
                    lone_sids.append(single.submission_id)
                lone_ms = round(float(np.median(lone_all)), 1) if lone_all else None
                if lone_sids:
                    lone_hops = hop_trace(cast(str, stack.bootstrap), stack.catalogue, lone_sids)
            wall = max(t for _, t in arrived.values()) - t0
            received = _received_at(stack, sids, time.monotonic() + 60)
        finally:
            t_stop = time.perf_counter()
            stack.stop()
            stop_s = time.perf_counter() - t_stop
    latency, observed, outside, results, verdicts = {}, [], [], [], {}
    for ep, sid in zip(episodes, sids):
        verdict, arrival = arrived[sid]
        latency[ep.path] = float(verdict["decided_at"] - received[sid])
        observed.append(arrival * 1000.0 - received[sid])
        gates = json.loads(verdict["report_json"]).get("gates", [])
        outside.append(latency[ep.path] - sum(float((g.get("metrics") or {}).get("wall_ms") or 0.0) for g in gates))
        results.append(gates)
        key = verdict["verdict"] if verdict["verdict"] == "accepted" else f"rejected:{verdict['reason_code']}"
        verdicts[key] = verdicts.get(key, 0) + 1
    return _stage_summary(wall, episodes, latency) | {
        "workers": workers, "latency_source": "received_at (submissions table) -> decided_at (verdict)",
        "validator_latency_ms": distribution(observed), "outside_gates_ms": distribution(outside),
        "cpu_s": round(cpu_s, 3), "verdicts": verdicts, "gates": _gate_costs(results), "lone_small_latency_ms": lone_ms,
        "lone_small_latencies_ms": lone_all, "lone_small_hops": lone_hops,
        "startup_s": round(startup_s, 2),
        "warmup_s": round(warmup_s, 2), "warmup_episodes": len(warmup), "submit_s": round(submit_s, 3),
        "stop_s": round(stop_s, 2), "peak_rss": mem.as_dict()}


# --- lerobot-doctor ---------------------------------------------------------------------

def to_lerobot_v3(bundle: Path, root: Path) -> Path:
    """Write ``bundle`` as a one-episode LeRobot v3.0 dataset under ``root``: the product's
    converter (``kibotos.export.lerobot.bundle_to_lerobot``), as a dataset export writes it."""
    from kibotos.export.lerobot import bundle_to_lerobot

    return bundle_to_lerobot(bundle, root)


def _dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def doctor_check(root: Path) -> dict:
    """``load_dataset`` + every check of lerobot-doctor on one local dataset, each timed."""
    from lerobot_doctor.dataset_loader import load_dataset
    from lerobot_doctor.runner import run_checks

    root = root.resolve()
    if not root.is_dir():  # a path that does not exist is taken for a Hub repo id: never
        raise FileNotFoundError(root)
    t = time.perf_counter()
    dataset = load_dataset(str(root))
    load_ms = (time.perf_counter() - t) * 1000.0
    if dataset.info is None:
        raise ValueError(f"lerobot-doctor cannot read the converted dataset: {dataset.info_error}")
    checks = {}
    for name in (*DOCTOR_EQUIVALENT_CHECKS, *DOCTOR_OTHER_CHECKS):
        t = time.perf_counter()
        [res] = run_checks(dataset, checks=[name]).results
        checks[name] = {"ms": (time.perf_counter() - t) * 1000.0, "severity": res.severity.value,
                        "messages": [f"{msg.severity.value}: {msg.message}" for msg in res.messages
                                     if msg.severity.value != "PASS"][:5]}
    return {"load_ms": load_ms, "checks": checks}


def bench_lerobot_doctor(episodes: list[BenchEpisode], warmup: list[Path], work: Path, progress: Progress,
                         paired: Callable[[Path], object] | None = None, rounds: int = PAIRED_ROUNDS) -> dict:
    """lerobot-doctor on the same episodes, or ``status`` "unavailable"/"failed" with the
    exact reason (never a number that was not measured).

    ``paired`` (gates A/B/D/E on a bundle path): also the paired comparison, ``rounds``
    times on each episode the gates then the doctor's equivalent checks less ``videos``,
    one right after the other, each episode's median of each (``paired_abde``). The
    stages above run minutes apart; on shared CPUs whose load moves by several times in
    that span, only the alternated pair meets the same load."""
    from importlib import metadata

    try:
        import lerobot_doctor  # noqa: F401
        version = metadata.version("lerobot-doctor")
    except ImportError as exc:
        return {"status": "unavailable",
                "reason": f"lerobot-doctor is not importable here ({type(exc).__name__}: {exc}); "
                          f"it comes with the bench extra: pip install -e '.[bench]' "
                          f"(lerobot-doctor=={DOCTOR_VERSION})"}
    except metadata.PackageNotFoundError as exc:
        return {"status": "unavailable", "reason": f"lerobot_doctor imports but has no package metadata: {exc}"}
    base = {"version": version, "format": "LeRobot v3.0, one dataset per episode (to_lerobot_v3)",
            "equivalent_checks": DOCTOR_EQUIVALENT_CHECKS, "other_checks": list(DOCTOR_OTHER_CHECKS),
            "note": "the videos check opens each mp4 and decodes its first frame; gate C decodes every frame"}
    try:
        roots = {}
        for k, path in enumerate([*warmup[:1], *[e.path for e in episodes]]):
            progress(f"lerobot-doctor: convert {k}/{len(episodes)}")
            roots[path] = to_lerobot_v3(path, work / f"lerobot-{k:03d}")
        for path in warmup[:1]:
            doctor_check(roots[path])  # imports and first-use costs
        latency_eq, latency_abde, latency_all, per_check, severities = {}, {}, {}, {}, {}
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            for k, ep in enumerate(episodes, 1):
                res = doctor_check(roots[ep.path])
                eq = res["load_ms"] + sum(res["checks"][c]["ms"] for c in DOCTOR_EQUIVALENT_CHECKS)
                latency_eq[ep.path] = eq
                latency_abde[ep.path] = eq - res["checks"]["videos"]["ms"]
                latency_all[ep.path] = res["load_ms"] + sum(c["ms"] for c in res["checks"].values())
                per_check.setdefault("load", []).append(res["load_ms"])
                for name, c in res["checks"].items():
                    per_check.setdefault(name, []).append(c["ms"])
                    severities.setdefault(name, {}).setdefault(c["severity"], 0)
                    severities[name][c["severity"]] += 1
                    if c["messages"]:
                        severities[name].setdefault("examples", c["messages"][:2])
                progress(f"lerobot-doctor {k}/{len(episodes)}")
            wall = time.perf_counter() - t0
        pair_gates: dict[Path, float] = {}
        pair_doctor: dict[Path, float] = {}
        for k, ep in enumerate(episodes if paired is not None else [], 1):
            g_ms, d_ms = [], []
            for _ in range(rounds):
                t = time.perf_counter()
                paired(ep.path)  # type: ignore[misc]
                g_ms.append((time.perf_counter() - t) * 1000.0)
                res = doctor_check(roots[ep.path])
                d_ms.append(res["load_ms"] + sum(res["checks"][c]["ms"] for c in DOCTOR_EQUIVALENT_CHECKS
                                                 if c != "videos"))
            pair_gates[ep.path], pair_doctor[ep.path] = float(np.median(g_ms)), float(np.median(d_ms))
            progress(f"gates A/B/D/E and lerobot-doctor alternated {k}/{len(episodes)}")
    except Exception as exc:  # its loader or a check on our conversion: say exactly what
        return base | {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    paired_out = {} if not pair_gates else {"paired_abde": {
        "rounds": rounds,
        "gates_abde": _stage_summary(sum(pair_gates.values()) / 1000.0, episodes, pair_gates),
        "doctor_abde": _stage_summary(sum(pair_doctor.values()) / 1000.0, episodes, pair_doctor)}}
    eq_wall = sum(latency_eq.values()) / 1000.0
    summary = _stage_summary(wall, episodes, latency_all)
    return base | summary | {
        "status": "ok",
        "dataset_bytes": sum(_dir_bytes(roots[e.path]) for e in episodes),
        "equivalent": _stage_summary(eq_wall, episodes, latency_eq),
        "equivalent_abde": _stage_summary(sum(latency_abde.values()) / 1000.0, episodes, latency_abde),
        "checks": {name: {"p50_ms": round(float(np.median(v)), 3), "mean_ms": round(float(np.mean(v)), 3),
                          "total_ms": round(sum(v), 2)} for name, v in per_check.items()},
        "severities": severities, "peak_rss": mem.as_dict()} | paired_out


# --- the run ----------------------------------------------------------------------------

def machine() -> dict:
    """``benchmarks.evidence.machine_info`` plus what the README quotes: CPU model, the
    CPUs this process may use, total memory. No host name, no paths."""
    import os
    import platform

    import psutil

    from benchmarks.evidence import machine_info

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return machine_info() | {"cpu_model": model, "usable_cpus": usable,
                             "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def run_pipeline_bench(n: int = 3, sizes: list[str] | None = None, workers: list[int] | None = None, *,
                       doctor: bool = True, timeout_s: float = 900.0, robots: list[tuple[str, str]] | None = None,
                       progress: Progress = print) -> dict:
    """Generate the episodes, run every stage on them, return the JSON-able result."""
    from kibotos.robots import list_robots

    sizes = sizes or list(SIZES)
    workers = sorted(set(workers or [1, 2]))
    robots = (robots or list_robots())[:n]  # the ones the episodes use: warm-ups are per robot
    config = load_config()
    stages: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="kibotos-bench-pipeline-") as tmp:
        work = Path(tmp)
        episodes = generate_episodes(work / "episodes", n, sizes, robots, progress)
        progress(f"generate {2 * max(workers) * len(robots)} warm-up episodes")
        warmup = warmup_episodes(work / "warmup", 2 * max(workers) * len(robots), robots)
        progress("floor: reading what the gates read")
        stages["floor"] = bench_floor(episodes, warmup[:len(robots)], config, progress)
        progress("floor_fast: the same, decode_luma(fast=True)")
        stages["floor_fast"] = bench_floor(episodes, warmup[:len(robots)], config, progress, fast=True)
        progress("chain: gates A-E in-process")
        stages["chain"] = bench_chain(episodes, warmup[:len(robots)], config, progress)
        progress("gates A/B/D/E in-process (lerobot-doctor's counterpart)")
        stages["gates_abde"] = bench_gates_abde(episodes, warmup[:len(robots)], config, progress)
        fast_decode = fast_decode_differences(episodes, config, progress)
        lone = lone_episodes(work / "lone", robots[0])
        lone_chain_ms = round(float(np.median([chain_latency(p, config) for p in lone])), 2)
        for w in workers:
            progress(f"stack: {w} gate worker(s)")
            stages[f"stack_{w}w"] = bench_stack(episodes, warmup[:2 * w * len(robots)], w, work / f"stack-{w}w",
                                                progress, timeout_s, lone=lone)
        if doctor:
            progress("lerobot-doctor: the same episodes as LeRobot v3 datasets")
            lerobot = bench_lerobot_doctor(episodes, warmup[:1], work / "lerobot", progress,
                                           paired=gates_abde_verifier(config))
        else:
            lerobot = {"status": "skipped", "reason": "--skip-lerobot"}
    floor, chain = stages["floor"]["wall_s"], stages["chain"]["wall_s"]
    ratios = {"chain_over_floor": _ratio(chain, floor)}
    for size, value in _by_size_ratio(stages["chain"], stages["floor"]).items():
        ratios[f"chain_over_floor_{size}"] = value
    ratios["floor_fast_over_floor"] = _ratio(stages["floor_fast"]["wall_s"], floor)
    ratios["chain_over_floor_fast"] = _ratio(chain, stages["floor_fast"]["wall_s"])
    for w in workers:
        ratios[f"stack_{w}w_over_chain"] = _ratio(stages[f"stack_{w}w"]["wall_s"], chain)
    for w in workers:
        # CPU seconds of the stack's processes (this one included) per the chain's
        ratios[f"stack_{w}w_over_chain_cpu"] = _ratio(stages[f"stack_{w}w"]["cpu_s"], stages["chain"]["cpu_s"])
    for w in workers:
        ratios[f"stack_{w}w_lone_small_over_chain"] = _ratio(stages[f"stack_{w}w"]["lone_small_latency_ms"],
                                                             lone_chain_ms)
    for w in workers[1:]:
        ratios[f"stack_{w}w_over_{workers[0]}w_throughput"] = _ratio(stages[f"stack_{w}w"]["episodes_per_s"],
                                                                     stages[f"stack_{workers[0]}w"]["episodes_per_s"])
    if lerobot.get("status") == "ok":
        ratios["lerobot_doctor_equivalent_over_chain"] = _ratio(lerobot["equivalent"]["wall_s"], chain)
        ratios["lerobot_doctor_equivalent_over_floor"] = _ratio(lerobot["equivalent"]["wall_s"], floor)
        # gates A/B/D/E against the doctor's equivalent checks less ``videos`` (gate C's):
        # above 1, the gates are that many times faster per episode
        ratios["lerobot_doctor_abde_over_gates_abde"] = _ratio(lerobot["equivalent_abde"]["wall_s"],
                                                               stages["gates_abde"]["wall_s"])
        for size, value in _by_size_ratio(lerobot["equivalent_abde"], stages["gates_abde"]).items():
            ratios[f"lerobot_doctor_abde_over_gates_abde_{size}"] = value
        if "paired_abde" in lerobot:  # the same two, alternated on each episode (one load)
            pair = lerobot["paired_abde"]
            ratios["lerobot_doctor_abde_over_gates_abde_paired"] = _ratio(pair["doctor_abde"]["wall_s"],
                                                                          pair["gates_abde"]["wall_s"])
            for size, value in _by_size_ratio(pair["doctor_abde"], pair["gates_abde"]).items():
                ratios[f"lerobot_doctor_abde_over_gates_abde_paired_{size}"] = value
    return {
        "benchmark": "pipeline", "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "config": {"n": n, "sizes": {s: SIZES[s] for s in sizes}, "workers": workers,
                   "robots": [f"{m}@{r}" for m, r in robots], "decode_width": config.gate_c.decode_width,
                   "gate_config_version": config.config_version, "warmup_episodes": len(warmup)},
        "episodes": [asdict(e) | {"path": e.path.name} for e in episodes],
        "stages": stages, "ratios": ratios, "fast_decode": fast_decode,
        "lone_small": {"chain_ms": lone_chain_ms,
                       "stack_ms": {f"{w}w": stages[f"stack_{w}w"]["lone_small_latency_ms"] for w in workers}},
        "lerobot_doctor": lerobot,
        "rusage": rusage_peaks(),
    }


def summary_tables(result: dict) -> list:
    """Rich tables of a result: stages, latency per size class, per-gate cost."""
    from rich.table import Table

    def num(v, fmt="{:,.1f}"):
        return "–" if v is None else fmt.format(v)

    rows = dict(result["stages"])
    doctor = result["lerobot_doctor"]
    if doctor.get("status") == "ok":
        rows["lerobot_doctor (equivalent)"] = doctor["equivalent"] | {"peak_rss": doctor["peak_rss"]}
        rows["lerobot_doctor (equivalent less videos)"] = doctor["equivalent_abde"] | {"peak_rss": doctor["peak_rss"]}
        rows["lerobot_doctor (all 11)"] = doctor
    cfg = result["config"]
    mach = result["machine"]
    main = Table(title=f"pipeline: {cfg['n']} episodes per size ({', '.join(cfg['sizes'])}); "
                       f"{mach.get('cpu_model', '?')}, {mach.get('usable_cpus', mach['cpus'])} CPUs")
    for col in ("stage", "episodes", "wall s", "episodes/s", "MB/s", "p50 ms", "p95 ms", "RSS self MB",
                "RSS children MB"):
        main.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in rows.items():
        mem = s.get("peak_rss", {})
        main.add_row(name, str(s["episodes"]), num(s["wall_s"], "{:.2f}"), num(s["episodes_per_s"], "{:.2f}"),
                     num(s["mb_per_s"], "{:.2f}"), num(s["latency_ms"]["p50"]), num(s["latency_ms"]["p95"]),
                     num(mem.get("self_mb")), num(mem.get("children_mb")))
    sizes = Table(title="latency per episode by size class: p50 / p95 ms")
    sizes.add_column("stage")
    for size in cfg["sizes"]:
        sizes.add_column(size, justify="right")
    for name, s in rows.items():
        by = {z: s["by_size"][z]["latency_ms"] for z in cfg["sizes"]}
        sizes.add_row(name, *[f"{num(by[z]['p50'])} / {num(by[z]['p95'])}" for z in cfg["sizes"]])
    gated = {k: v["gates"] for k, v in result["stages"].items() if "gates" in v}
    gates = Table(title="per-gate cost: mean wall_ms (share of all gate time)")
    gates.add_column("gate")
    for name in gated:
        gates.add_column(name, justify="right")
    for gate in dict.fromkeys(g for v in gated.values() for g in v):
        gates.add_row(gate, *[f"{v[gate]['mean_ms']:.1f} ({v[gate]['share']:.0%})" if gate in v else "–"
                              for v in gated.values()])
    stacks = {k: v for k, v in result["stages"].items() if "workers" in v}
    stack = Table(title="stack runs: fixed costs (not in the numbers above) and time outside the gates")
    for col in ("stage", "start s", "worker boot + warm-up s", "stop s", "outside gates p50 ms",
                "outside gates p95 ms", "gate workers MB"):
        stack.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in stacks.items():
        stack.add_row(name, num(s["startup_s"]), f"{num(s['warmup_s'])} ({s['warmup_episodes']} ep)",
                      num(s["stop_s"]), num(s["outside_gates_ms"]["p50"]), num(s["outside_gates_ms"]["p95"]),
                      num(s["peak_rss"]["gate_workers_mb"]))
    hops = Table(title="lone small episodes: per hop, median ms from the record before (outside the gate's wall_ms)")
    hops.add_column("topic")
    for name in stacks:
        hops.add_column(name, justify="right")
    for topic in dict.fromkeys(t for s in stacks.values() for t in s.get("lone_small_hops") or {}):
        hops.add_row(topic, *[f"{num(h['hop_ms'])} ({num(h['outside_ms'])})" if (h := (s.get("lone_small_hops")
                     or {}).get(topic)) else "–" for s in stacks.values()])
    fast = result.get("fast_decode")
    fast_table = Table(title="gate C on the fast decode (no loop filter, halved before the resize) against the full decode")
    for col in ("episodes", "verdicts differ", "max |Δ estimate| ms", "mean |Δ estimate| ms", "within 10 ms"):
        fast_table.add_column(col, justify="right")
    if fast:
        fast_table.add_row(str(fast["episodes"]), str(fast["verdicts_differ"]), num(fast["offset_diff_ms"]["max"], "{:.2f}"),
                           num(fast["offset_diff_ms"]["mean"], "{:.2f}"), "yes" if fast["within_10_ms"] else "no")
    ratios = Table(title="ratios of wall times measured in this run")
    ratios.add_column("ratio")
    ratios.add_column("value", justify="right")
    for k, v in result["ratios"].items():
        ratios.add_row(k, num(v, "{:.3f}x"))
    return [main, sizes, gates, *([stack, hops] if stacks else []), *([fast_table] if fast else []), ratios]


def write_json(result: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    return path
