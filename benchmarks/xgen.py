"""Per-stage cost of the XGen jobs and clips per minute, on this machine.

The job stages (``gpu_consumers.xgen_jobs.XGenStage``) run in-process on a local object
store exactly as a Ray actor runs them (decode the event, read the previous artifact,
work, store the output), on a procedural human cargo pickup given as 3D keypoints. Next
to them, in the same run, the reference every stage is compared with: one batched
forward-kinematics pass of the G1 over the same frames (``mj_kinematics`` per frame,
what any consumer of a joint trajectory pays at least once). Reported: each stage's
wall time, its ratio to that FK pass, the export + quality time per clip, and clips per
minute end to end (one actor per kind, serial, as the embedded stack runs them).
Absolute times depend on the machine (shared CPUs here): compare ratios.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from topics.catalogue import XGEN_STAGES


def _fk_pass(qpos) -> float:
    import mujoco

    from kibotos.xgen import g1

    model = g1.model()
    data = mujoco.MjData(model)
    t0 = time.perf_counter()
    for row in qpos:
        data.qpos[:] = row
        mujoco.mj_kinematics(model, data)
    return time.perf_counter() - t0


def run_xgen_bench(duration_s: float = 6.0, fps: float = 30.0, quality: bool = True,
                   progress: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    import os

    from gpu_consumers.xgen_jobs import Judgement, XGenStage
    from kibotos.objectstore import LocalObjectStore
    from kibotos.xgen.artifacts import load_robot
    from kibotos.xgen.config import load_xgen_config
    from kibotos.xgen.skeleton import write_keypoints
    from kibotos.xgen.synth import cargo_pickup
    from streams.stage import Record
    from topics.catalogue import Catalogue

    cfg = load_xgen_config()
    cat = Catalogue("bench.")
    def no_quality(folder, c):
        return Judgement(passed=False, verdict="unjudged", score=None, reason_code="xgen_quality_skipped")

    with tempfile.TemporaryDirectory(prefix="kibotos-bench-xgen-") as tmp:
        store = LocalObjectStore(Path(tmp) / "objects")
        src = write_keypoints(Path(tmp) / "pickup.npz", cargo_pickup(duration_s, fps).motion)
        stored = store.put_bytes(src.read_bytes(), "xgen/bench/source.npz")
        stages = {s: XGenStage(s, cat, store, cfg, quality=None if quality else no_quality,
                               preview=None if quality else (lambda folder, source: {})) for s in XGEN_STAGES}
        spec = cat.get("xgen.requests")
        req = {"request_id": str(uuid.uuid4()), "uploader": "bench", "task_id": "cargo_pickup", "task_version": "1",
               "source_kind": "keypoints", "source_uri": stored.uri, "source_sha256": stored.sha256,
               "source_size_bytes": stored.size_bytes, "annotation_json": None,
               "requested_at": int(time.time() * 1000)}
        records = [Record(spec.name, spec.serialize(req), spec.key(req))]
        walls: dict[str, list[float]] = {s: [] for s in XGEN_STAGES}
        clips: list[dict] = []
        t_all = time.perf_counter()
        for stage in XGEN_STAGES:
            progress(f"xgen {stage}: {len(records)} record(s)")
            nxt = []
            for rec in records:
                t0 = time.perf_counter()
                outs = stages[stage].handle(rec)
                walls[stage].append(time.perf_counter() - t0)
                for o in outs:
                    if o.topic.id == "xgen.rejected":
                        raise RuntimeError(f"{stage} refused the bench input: {o.record['reason_code']}")
                    if o.topic.id == "xgen.clips":
                        clips.append(o.record)
                    elif o.topic.id.startswith("xgen.jobs."):
                        nxt.append(Record(o.topic.name, o.value(), o.key()))
            records = nxt
        total = time.perf_counter() - t_all
        robot = load_robot(store.read_bytes(store.uri_for("xgen/" + req["request_id"] + "/retarget.npz"), 1 << 28))
        fk = min(_fk_pass(robot.qpos) for _ in range(3))
    frames = len(robot.qpos)
    rows = []
    for stage in XGEN_STAGES:
        w = walls[stage]
        rows.append({"stage": stage, "jobs": len(w), "seconds": round(sum(w), 3),
                     "per_job_s": round(sum(w) / len(w), 3), "vs_fk_pass": round(sum(w) / len(w) / fk, 1)})
    verified = sum(1 for c in clips if c["verified"])
    return {
        "frames": frames, "fps": fps, "fk_pass_ms": round(fk * 1000, 3), "stages": rows,
        "retarget_frames_per_s": round(frames / walls["retarget"][0], 1), "clips": len(clips),
        "clips_verified": verified, "quality": quality, "total_s": round(total, 2),
        "clips_per_minute": round(len(clips) / total * 60, 2),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }


def bench_pose_vs_decode(duration_s: float = 3.0, fps: float = 15.0, repeats: int = 1) -> dict[str, Any]:
    """The pose stage on a generated human video against its bare decode: ``pose.read_video``
    (decode to RGB) vs ``pose.read_video`` + ``pose.estimate`` (MediaPipe world landmarks,
    gaps, smoothing) on the same file; the estimator is built once, untimed, first."""
    import statistics

    from kibotos.media.video import encode_mp4
    from kibotos.xgen import pose
    from kibotos.xgen.config import load_xgen_config
    from kibotos.xgen.render import render_pickup
    from kibotos.xgen.synth import cargo_pickup

    cfg = load_xgen_config()
    with tempfile.TemporaryDirectory(prefix="kibotos-bench-xgen-pose-") as tmp:
        video = Path(tmp) / "pickup.mp4"
        video.write_bytes(encode_mp4(render_pickup(cargo_pickup(duration_s, fps)), fps))
        frames, rate = pose.read_video(video)
        pose.estimate(frames[:2], rate, cfg) if len(frames) >= 2 else None  # warm: the model loads
        decode, stage = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            frames, rate = pose.read_video(video)
            decode.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            frames, rate = pose.read_video(video)
            pose.estimate(frames, rate, cfg)
            stage.append(time.perf_counter() - t0)
    d, st = statistics.median(decode), statistics.median(stage)
    return {"frames": int(len(frames)), "decode_s": round(d, 3), "pose_stage_s": round(st, 3),
            "vs_decode": round(st / d, 1), "pose_frames_per_s": round(len(frames) / st, 1)}


def bench_quality_parts(duration_s: float = 5.0, fps: float = 30.0) -> dict[str, Any]:
    """Where a clip's quality check and preview spend their time, on the base clip of a
    generated pickup: the bundle (MuJoCo video render + write) vs the verifier's chain
    (gates A-E, IK per wrist, task), and the Genesis preview per frame, each against one G1
    FK pass over the clip's frames."""
    from kibotos.xgen import interaction, retarget
    from kibotos.xgen.augment import Variant
    from kibotos.xgen.config import load_xgen_config
    from kibotos.xgen.export import ExportRequest, export
    from kibotos.xgen.quality import clip_bundle, judge_clip
    from kibotos.xgen.synth import cargo_pickup

    cfg = load_xgen_config()
    motion, _ = retarget.retarget(cargo_pickup(duration_s, fps).motion, cfg)
    clip, _ = interaction.interact(motion, cfg)
    fk = min(_fk_pass(clip.qpos) for _ in range(3))
    out: dict[str, Any] = {"frames": len(clip), "fk_pass_ms": round(fk * 1000, 3)}
    with tempfile.TemporaryDirectory(prefix="kibotos-bench-xgen-quality-") as tmp:
        req = ExportRequest(variants=[Variant(clip=clip, params={"kind": "base"})], out_dir=Path(tmp),
                            source_sha256="0" * 64, source_kind="keypoints", uploader="bench", task_id="cargo_pickup",
                            task_version="1", annotation={}, stage_metrics={})
        (folder,), _ = export(req, cfg)
        q = cfg.quality
        t0 = time.perf_counter()
        clip_bundle(folder, Path(tmp) / "b.zarr.zip", width=q.video_width, height=q.video_height,
                    video_fps=q.video_fps)
        bundle_s = time.perf_counter() - t0
        judge_clip(folder, cfg=cfg, write_result=False)  # warm: the verifier's imports, IK chains
        t0 = time.perf_counter()
        res = judge_clip(folder, cfg=cfg, write_result=False)
        judge_s = time.perf_counter() - t0
        out.update({"bundle_s": round(bundle_s, 3), "judge_s": round(judge_s, 3),
                    "chain_s": round(judge_s - bundle_s, 3), "passed": res.passed, "score": res.score,
                    "bundle_vs_fk": round(bundle_s / fk, 1), "chain_vs_fk": round((judge_s - bundle_s) / fk, 1)})
        try:
            from kibotos.xgen.preview import PreviewRenderer, _sampled, write_preview

            renderer = PreviewRenderer()
            t0 = time.perf_counter()
            renderer._build()
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            write_preview(folder, renderer)
            n = len(_sampled(len(clip), clip.fps, 10.0))
            per = (time.perf_counter() - t0) / n
            out.update({"preview_scene_build_s": round(build, 2), "preview_s_per_frame": round(per, 3),
                        "preview_frame_vs_fk": round(per / fk, 1)})
            renderer.close()
        except ImportError as exc:  # Genesis not installed
            out["preview_error"] = str(exc)
    return out


def write_json(result: dict[str, Any], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
