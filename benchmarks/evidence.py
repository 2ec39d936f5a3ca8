"""Per-stage cost of the expensive evidence jobs against the bare model call they wrap.

Each stage is timed warm (its model/scene built and one untimed run first), the same
way a GPU consumer's Ray actor runs it, next to the bare call of its model on the same
inputs measured in the same run:

============  =====================================  ===========================================
stage         the stage (what a job costs)           the bare model call
============  =====================================  ===========================================
pose          ``check_pose`` on a human video:       ``estimator.estimate`` on the same sampled
              decode, sample, estimate, metrics      frames, already decoded
ik            ``check_ik``: targets from the object  batched forward kinematics of the submitted
              stream, constrained IK solve, stats    joints over the same frames
playback      ``run_playback``: keyframes, render,   ``renderer.render_frames`` of the same
              real frames, masks, PNGs stored        keyframe joint rows
============  =====================================  ===========================================

Reported units: pose frames/s, IK ms per 1,000 frames, playback s per keyframe; the
ratio stage/bare says how much of a job is overhead around the model. Absolute times
depend on the machine (shared CPUs here): compare ratios, or runs on the same machine.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kibotos.bundle import open_bundle
from kibotos.config.gates import load_config
from kibotos.robots import get_robot, list_robots


def _best(fn: Callable[[], Any], repeats: int, clock: Callable[[], float] = time.perf_counter) -> tuple[float, Any]:
    """Median seconds on ``clock`` (wall by default) of ``repeats`` runs of ``fn`` (after the
    caller's warm-up) and its last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = clock()
        out = fn()
        times.append(clock() - t0)
    return statistics.median(times), out


def bench_pose(work: Path, repeats: int, n_frames: int = 90, fps: float = 30.0) -> dict:
    from gpu_consumers.gate_f_pose import check_pose, sample_indices, sampled_rgb_chunks
    from gpu_consumers.pose import get_pose_estimator
    from kibotos.media.human_video import camera_motion_video, human_video_bundle, person_photos

    config = load_config()
    photo = person_photos()["grace_hopper"]
    path = human_video_bundle(work / "pose.zarr.zip", camera_motion_video(photo, n_frames), fps)
    estimator = get_pose_estimator("mediapipe")
    try:
        with open_bundle(path) as view:
            check_pose(view, config, estimator)  # warm
            stage_s, res = _best(lambda: check_pose(view, config, estimator), repeats)
            cfg = config.gate_f.for_estimator(estimator.name)
            stride, _ = sample_indices(n_frames, fps, cfg)
            frames = np.concatenate([f for f, _, _ in sampled_rgb_chunks(view, stride, cfg.max_decode_side)])
        bare_s, _ = _best(lambda: estimator.estimate(frames), repeats)
    finally:
        estimator.close()
    n = len(frames)
    return {"stage": "pose", "unit": "frames/s", "frames": n, "passed": res.passed,
            "stage_value": round(n / stage_s, 2), "bare_value": round(n / bare_s, 2),
            "stage_s": round(stage_s, 4), "bare_s": round(bare_s, 4), "ratio": round(stage_s / bare_s, 3)}


def _panda_sample(work: Path, duration_ms: float):
    from kibotos.synthetic.samples import make_episode

    robot = get_robot("franka_panda", dict(list_robots())["franka_panda"])
    ep = make_episode(robot, "genuine", seed=7, miner_id="bench", duration_ms=duration_ms)
    return robot, ep.write(work / "panda.zarr.zip")


def bench_ik(work: Path, repeats: int, duration_ms: float = 20_000) -> dict:
    import torch

    from gpu_consumers.ik import IKSolver, _torch_threads, check_ik
    from kibotos.bundle.reader import JOINT_POS

    config = load_config()
    robot, path = _panda_sample(work, duration_ms)
    solver = IKSolver(robot)
    # at least 20 runs each, as for the bare pass: a ~20 ms stage on shared cores is noisy
    runs = max(repeats, 20)
    with open_bundle(path) as view:
        check_ik(view, config, solver)  # warm: chains built
        stage_s, res = _best(lambda: check_ik(view, config, solver), runs)
        # the stage and the bare pass run on this one thread (torch on 1 thread): its CPU time
        # leaves out the time other processes hold the cores, which wall time on a loaded
        # machine does not
        stage_cpu_s, _ = _best(lambda: check_ik(view, config, solver), runs, time.thread_time)
        q = view.read(JOINT_POS).astype(np.float64)
    link = res.metrics["targets"][0]["link"] if res.metrics.get("targets") else robot.end_effectors[0]
    chain = solver.chain(link)
    frames = int(res.metrics.get("target_frames") or len(q))
    qt = torch.as_tensor(q[:frames, chain.joint_index], dtype=torch.float64)
    # the bare pass on the thread setting the stage runs under (the solver's): on two shared
    # cores a second torch thread makes a small pass several times slower, and noisier
    with _torch_threads(solver.num_threads), torch.no_grad():
        chain.fk(qt)
        bare_s, _ = _best(lambda: chain.fk(qt), runs)
        bare_cpu_s, _ = _best(lambda: chain.fk(qt), runs, time.thread_time)
        # the same pass in NumPy, the FK the solver's loop runs on since issue 17's "After 3":
        # the ratio against it too (the bare call above stays the reference, measured as before)
        qn = qt.numpy()
        chain.numpy.rot_pos(qn)
        bare_np_cpu_s, _ = _best(lambda: chain.numpy.rot_pos(qn), runs, time.thread_time)
    per_k = 1000.0 / frames
    feas = res.metrics.get("ik_feasibility") or {}
    return {"stage": "ik", "unit": "ms per 1000 frames", "frames": frames, "passed": res.passed,
            "stage_value": round(stage_s * 1000 * per_k, 2), "bare_value": round(bare_s * 1000 * per_k, 3),
            "stage_s": round(stage_s, 4), "bare_s": round(bare_s, 5), "ratio": round(stage_s / bare_s, 1),
            "stage_cpu_s": round(stage_cpu_s, 4), "bare_cpu_s": round(bare_cpu_s, 5),
            "ratio_cpu": round(stage_cpu_s / bare_cpu_s, 1), "runs": runs,
            "bare_numpy_cpu_s": round(bare_np_cpu_s, 5), "ratio_cpu_numpy_fk": round(stage_cpu_s / bare_np_cpu_s, 1),
            "solve_ms": feas.get("solve_ms"), "lm_iterations": feas.get("iterations"),
            "torch_threads": solver.num_threads}


def bench_playback(work: Path, repeats: int, duration_ms: float = 6_000) -> dict:
    from gpu_consumers.playback import PlaybackRenderer, joints_at, run_playback
    from kibotos.bundle.reader import JOINT_POS, TIMESTAMPS
    from kibotos.objectstore import LocalObjectStore

    robot, path = _panda_sample(work, duration_ms)
    store = LocalObjectStore(work / "objects")
    renderer = PlaybackRenderer(robot)
    try:
        t0 = time.perf_counter()
        renderer.warm_up(robot)
        build_s = time.perf_counter() - t0
        with open_bundle(path) as view:
            run_playback(view, 0.0, renderer, store, "bench/warm")
            stage_s, res = _best(lambda: run_playback(view, 0.0, renderer, store, "bench/run"), repeats)
            m = view.manifest
            ts = view.read(TIMESTAMPS).astype(np.float64)
            q = view.read(JOINT_POS).astype(np.float64)
            cam = m.camera["primary"]
        kf = res.metrics["keyframes"]
        rows = joints_at(ts, q, np.array([k["kin_time_ms"] for k in kf]))
        bare_s, _ = _best(lambda: renderer.render_frames(rows, m.joint_names, cam.intrinsics.model_dump(),
                                                         np.asarray(cam.extrinsics, dtype=np.float64), robot=robot),
                          repeats)
    finally:
        renderer.close()
    n = len(kf)
    return {"stage": "playback", "unit": "s per keyframe", "frames": n, "passed": res.passed,
            "stage_value": round(stage_s / n, 4), "bare_value": round(bare_s / n, 4),
            "stage_s": round(stage_s, 4), "bare_s": round(bare_s, 4), "ratio": round(stage_s / bare_s, 3),
            "cold_scene_build_s": round(build_s, 2)}


STAGES = {"pose": bench_pose, "ik": bench_ik, "playback": bench_playback}


def run_evidence_bench(stages: list[str] | None = None, repeats: int = 3, progress=print) -> dict:
    """Time each stage and its bare model call; returns the JSON-able result."""
    results = []
    with tempfile.TemporaryDirectory(prefix="kibotos-bench-") as tmp:
        for name in stages or list(STAGES):
            progress(f"bench {name} ...")
            work = Path(tmp) / name
            work.mkdir()
            results.append(STAGES[name](work, repeats))
    return {"benchmark": "evidence", "repeats": repeats, "machine": machine_info(), "results": results,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def machine_info() -> dict:
    import os

    import torch

    return {"python": platform.python_version(), "platform": platform.platform(terse=True),
            "cpus": os.cpu_count(), "torch": torch.__version__, "cuda": torch.cuda.is_available()}


def write_json(result: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path
