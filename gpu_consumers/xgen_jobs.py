"""XGen job kinds on the GPU consumer group: one stage each, ``handle(record) -> outputs``.

    xgen.requests ─► xgen_pose ─► xgen.jobs.retarget ─► xgen_retarget ─► xgen.jobs.interaction
        ─► xgen_interaction ─► xgen.jobs.augment ─► xgen_augment ─► xgen.jobs.export (one record per clip)
        ─► xgen_export (clip.npz + metadata.json + preview, quality by the verifier's chain) ─► xgen.clips

Every stage also publishes one ``xgen.progress`` record (its result: passed or the reason
code, metrics, output URI), which the sink stores in ``xgen_stage_results``; a refused
request goes to ``xgen.rejected`` with ``failed_stage`` and ``reason_code`` and stops there.
Stage outputs are object-store artifacts (``kibotos.xgen.artifacts``); events carry URIs.

Effects are idempotent: artifact keys and clip ids derive from the request id, the
stage and the variant index, so a redelivered record rewrites the same objects and the
same rows (replacing tables). A ``ServiceError`` (object store, renderer) propagates so
the consumer retries the job on a fresh actor; anything a stage refuses is a reason code.

Prometheus: ``kibotos_xgen_stage_results_total{stage,outcome,reason_code}`` and
``kibotos_xgen_clips_total{outcome}``, next to the consumer's per-kind counters.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from gpu_consumers.registry import JobSpec, register_job
from kibotos.errors import KibotosError, SerializationError, ServiceError
from kibotos.xgen.config import XGenConfig, load_xgen_config
from kibotos.xgen.result import XGenError
from streams.stage import Output, Record, dead_letter, now_ms
from topics.catalogue import XGEN_STAGES, Catalogue

log = logging.getLogger("kibotos.xgen")

STAGE_RESULTS = Counter("kibotos_xgen_stage_results", "XGen stage results", ["stage", "outcome", "reason_code"])
CLIPS = Counter("kibotos_xgen_clips", "XGen clips exported: verified, or the quality reason code", ["outcome"])

JOB_KINDS = tuple(f"xgen_{stage}" for stage in XGEN_STAGES)


class StageRefused(Exception):
    """Internal: carries a refused stage's reason code and metrics to ``handle``."""

    def __init__(self, reason_code: str, message: str, metrics: dict[str, Any] | None = None):
        super().__init__(message)
        self.reason_code, self.metrics = reason_code, dict(metrics or {})


def _request_to_event(req: dict[str, Any], config_version: str) -> dict[str, Any]:
    return {"request_id": req["request_id"], "uploader": req["uploader"], "task_id": req["task_id"],
            "task_version": req["task_version"], "source_kind": req["source_kind"], "source_uri": req["source_uri"],
            "source_sha256": req["source_sha256"], "annotation_json": req.get("annotation_json"),
            "requested_at": req["requested_at"], "config_version": config_version,
            "artifacts": {"source": req["source_uri"]}, "stage_results": [], "clip_index": None, "clip_count": None,
            "variant_json": None, "failed_stage": None, "reason_code": None, "rejected_at": None}


class XGenStage:
    """One XGen stage as a job: decode the in-flight event, run the stage's pure logic
    (``kibotos.xgen.<stage>``), store its output, route the event on.

    :param stage: one of ``topics.catalogue.XGEN_STAGES``.
    :param quality: export only: ``quality(clip_dir, cfg) -> Judgement`` (the verifier's
        judgement); default ``judge``.
    :param preview: export only: ``preview(clip_dir, source_video | None) -> {name: path}``
        (files written into the clip folder); default a warm ``GenesisPreview``.
    """

    def __init__(self, stage: str, catalogue: Catalogue, store, cfg: XGenConfig,
                 quality: Callable | None = None, preview: Callable | None = None):
        if stage not in XGEN_STAGES:
            raise KibotosError(f"no XGen stage {stage!r}; stages: {', '.join(XGEN_STAGES)}",
                               reason_code="config_invalid")
        self.stage = stage
        self.kind = f"xgen_{stage}"
        self.id = self.processor_id = f"job_{self.kind}"
        self.catalogue = catalogue
        self.store = store
        self.cfg = cfg
        self.quality = quality or judge
        self.preview = preview or GenesisPreview(fps=cfg.export.preview_fps)
        if stage == "export" and quality is None:
            _warm_quality()  # the verifier's imports (~6 s) happen while the actor starts, not in the first job
        self.input = catalogue.xgen_input(stage)
        i = XGEN_STAGES.index(stage)
        self.next = catalogue.get("xgen.clips") if stage == "export" else catalogue.xgen_input(XGEN_STAGES[i + 1])
        self.progress = catalogue.get("xgen.progress")
        self.rejected = catalogue.get("xgen.rejected")
        self.inputs = (self.input,)
        self.outputs = (self.next, self.progress, self.rejected, catalogue.dead_letters)

    # --- the record loop ---------------------------------------------------------------
    def handle(self, record: Record) -> list[Output]:
        try:
            decoded = self.input.deserialize(record.value or b"")
        except SerializationError as exc:
            return [dead_letter(self.catalogue, record, self.processor_id, exc.reason_code, str(exc))]
        decoded.pop("schema_version", None)
        event = _request_to_event(decoded, self.cfg.config_version) if self.stage == "pose" else decoded
        t0 = time.perf_counter()
        try:
            routed, metrics, uri = getattr(self, f"_{self.stage}")(event)
        except ServiceError:
            raise  # the validator's fault: the consumer retries on a fresh actor
        except (XGenError, StageRefused) as exc:
            return self._refuse(event, exc.reason_code, str(exc), getattr(exc, "metrics", {}), t0)
        except KibotosError as exc:
            return self._refuse(event, exc.reason_code, str(exc), {}, t0)
        except Exception as exc:  # a bug or hostile input must not kill the consumer
            log.exception("%s: internal error", self.processor_id)
            return self._refuse(event, "xgen_internal_error", f"{type(exc).__name__}: {exc}", {}, t0)
        wall = round((time.perf_counter() - t0) * 1000.0, 3)
        for out in routed:  # the stage's own result gets its wall time
            for res in out.record.get("stage_results") or []:
                if res["stage"] == self.stage:
                    res["wall_ms"] = wall
        STAGE_RESULTS.labels(self.stage, "passed", "").inc()
        clip_count = event.get("clip_count") if self.stage in ("augment", "export") else None
        return [*routed, self._progress(event, True, None, metrics, uri, wall, clip_count)]

    def _result(self, passed: bool, reason: str | None, metrics: dict, wall: float) -> dict[str, Any]:
        return {"stage": self.stage, "passed": passed, "reason_code": reason,
                "metrics_json": json.dumps(metrics, default=str, sort_keys=True), "wall_ms": wall}

    def _append(self, event: dict, passed: bool, reason: str | None, metrics: dict, wall: float) -> dict:
        results = [r for r in event.get("stage_results") or [] if r["stage"] != self.stage]
        return dict(event, stage_results=[*results, self._result(passed, reason, metrics, wall)])

    def _progress(self, event: dict, passed: bool, reason: str | None, metrics: dict, uri: str | None,
                  wall: float, clip_count: int | None) -> Output:
        idx = event.get("clip_index")
        return Output(self.progress, {
            "request_id": event["request_id"], "uploader": event["uploader"], "stage": self.stage,
            "clip_index": -1 if idx is None else int(idx), "passed": passed, "reason_code": reason,
            "metrics_json": json.dumps(metrics, default=str, sort_keys=True), "artifact_uri": uri, "wall_ms": wall,
            "clip_count": clip_count, "at": now_ms()})

    def _refuse(self, event: dict, reason: str, message: str, metrics: dict, t0: float) -> list[Output]:
        wall = round((time.perf_counter() - t0) * 1000.0, 3)
        metrics = {**metrics, "error": message[:500]}
        STAGE_RESULTS.labels(self.stage, "refused", reason).inc()
        log.info("%s refused %s: [%s] %s", self.processor_id, event["request_id"], reason, message[:200])
        rejected = dict(self._append(event, False, reason, metrics, wall), failed_stage=self.stage,
                        reason_code=reason, rejected_at=now_ms())
        return [Output(self.rejected, rejected),
                self._progress(event, False, reason, metrics, None, wall, event.get("clip_count"))]

    def _forward(self, event: dict, metrics: dict, uri: str, key: str) -> dict:
        out = self._append(event, True, None, metrics, 0.0)
        out["artifacts"] = {**(event.get("artifacts") or {}), key: uri}
        return out

    # --- object store --------------------------------------------------------------------
    def _key(self, event: dict, name: str) -> str:
        from kibotos.xgen.artifacts import prefix

        return f"{prefix(event['request_id'])}/{name}"

    def _read(self, event: dict, artifact: str) -> bytes:
        from kibotos.xgen.artifacts import MAX_ARTIFACT_BYTES

        uri = (event.get("artifacts") or {}).get(artifact)
        if not uri:
            raise StageRefused("xgen_artifact_missing", f"the event names no {artifact} artifact")
        try:
            return self.store.read_bytes(uri, MAX_ARTIFACT_BYTES)
        except KibotosError as exc:
            if isinstance(exc, ServiceError) or exc.reason_code == "service_unavailable":
                raise
            raise StageRefused("xgen_artifact_missing", f"{artifact} artifact {uri}: {exc}") from exc

    def _put(self, data: bytes, key: str) -> str:
        return self.store.put_bytes(data, key).uri

    def _annotation(self, event: dict) -> dict[str, Any] | None:
        text = event.get("annotation_json")
        if not text:
            return None
        try:
            ann = json.loads(text)
        except ValueError as exc:
            raise StageRefused("xgen_annotation_invalid", f"annotation is not JSON: {exc}") from exc
        if not isinstance(ann, dict):
            raise StageRefused("xgen_annotation_invalid", "annotation must be a JSON object")
        return ann

    # --- the stages ----------------------------------------------------------------------
    def _pose(self, event: dict):
        from kibotos.xgen import pose
        from kibotos.xgen.artifacts import dump_motion
        from kibotos.xgen.skeleton import read_keypoints

        kind = event["source_kind"]
        if kind not in ("video", "keypoints"):
            raise StageRefused("xgen_source_kind_invalid", f"source_kind must be video or keypoints, not {kind!r}")
        try:
            path = self.store.local_path(event["source_uri"])
        except KibotosError as exc:
            if isinstance(exc, ServiceError):
                raise
            raise StageRefused("xgen_source_missing", f"source {event['source_uri']}: {exc}") from exc
        if kind == "video":
            frames, fps = pose.read_video(path)
            motion, metrics = pose.estimate(frames, fps, self.cfg)
        else:
            motion, metrics = pose.clean(read_keypoints(path), self.cfg.pose)
        uri = self._put(dump_motion(motion), self._key(event, "pose.npz"))
        metrics = {**metrics, "source_kind": kind}
        return [Output(self.next, self._forward(event, metrics, uri, "pose"))], metrics, uri

    def _retarget(self, event: dict):
        from kibotos.xgen import retarget
        from kibotos.xgen.artifacts import dump_robot, load_motion

        robot, metrics = retarget.retarget(load_motion(self._read(event, "pose")), self.cfg)
        uri = self._put(dump_robot(robot), self._key(event, "retarget.npz"))
        return [Output(self.next, self._forward(event, metrics, uri, "retarget"))], metrics, uri

    def _interaction(self, event: dict):
        from kibotos.xgen import interaction
        from kibotos.xgen.artifacts import dump_clip, load_robot

        clip, metrics = interaction.interact(load_robot(self._read(event, "retarget")), self.cfg,
                                             self._annotation(event))
        uri = self._put(dump_clip(clip, {"kind": "base"}), self._key(event, "interaction.npz"))
        return [Output(self.next, self._forward(event, metrics, uri, "interaction"))], metrics, uri

    def _augment(self, event: dict):
        from kibotos.xgen import augment
        from kibotos.xgen.artifacts import dump_clip, load_clip

        base, _ = load_clip(self._read(event, "interaction"))
        variants, metrics = augment.augment(base, self.cfg)
        base_event = self._append(event, True, None, metrics, 0.0)
        outs = []
        for i, v in enumerate(variants):
            uri = self._put(dump_clip(v.clip, v.params), self._key(event, f"variants/{i:03d}.npz"))
            outs.append(Output(self.next, dict(base_event, artifacts={**base_event["artifacts"], "variant": uri},
                                               clip_index=i, clip_count=len(variants),
                                               variant_json=json.dumps(v.params, sort_keys=True, default=str))))
        event["clip_count"] = len(variants)
        return outs, metrics, outs[0].record["artifacts"]["variant"] if outs else None

    def _export(self, event: dict):
        from kibotos.xgen import export
        from kibotos.xgen.artifacts import load_clip
        from kibotos.xgen.augment import Variant

        clip, params = load_clip(self._read(event, "variant"))
        index = int(event.get("clip_index") or 0)
        stage_metrics = {}
        for r in event.get("stage_results") or []:
            try:
                stage_metrics[r["stage"]] = json.loads(r["metrics_json"])
            except (ValueError, KeyError):
                stage_metrics[r.get("stage", "?")] = {}
        with tempfile.TemporaryDirectory(prefix="xgen-export-") as tmp:
            req = export.ExportRequest(
                variants=[Variant(clip=clip, params=params or {"kind": "base"})], out_dir=Path(tmp),
                source_sha256=event["source_sha256"], source_kind=event["source_kind"], uploader=event["uploader"],
                task_id=event["task_id"], task_version=event["task_version"],
                annotation=self._annotation(event) or {}, stage_metrics=stage_metrics, first_index=index)
            (folder,), _ = export.export(req, self.cfg)
            clip_id = folder.name
            base = self._key(event, f"clips/{clip_id}")
            clip_uri = self._put((folder / "clip.npz").read_bytes(), f"{base}/clip.npz")
            judged = self.quality(folder, self.cfg)
            score, verdict, reason, details = judged.score, judged.verdict, judged.reason_code, dict(judged.details)
            source = None
            if index == 0 and event["source_kind"] == "video":  # the base clip: side by side with its source
                source = self.store.local_path(event["source_uri"])
            try:
                previews = self.preview(folder, source) if self.cfg.export.preview else {}
            except ServiceError:
                raise
            except Exception as exc:  # no GL context, codec: the clip stands without a preview
                log.warning("%s: preview of %s failed: %s", self.processor_id, clip_id, exc)
                previews, details["preview_error"] = {}, f"{type(exc).__name__}: {exc}"[:500]
            files = {**judged.files, **previews}
            stored = {name: self._put(Path(path).read_bytes(), f"{base}/{Path(path).name}")
                      for name, path in files.items() if path and Path(path).is_file()}
            preview_uri = stored.get("preview")
            meta = json.loads((folder / "metadata.json").read_text())
            meta["quality"] = {"score": score, "verdict": verdict, "reason_code": reason, "verified": judged.passed,
                               "files": stored, "details": details}
            meta_uri = self._put(json.dumps(meta, indent=2, sort_keys=True, default=str).encode(),
                                 f"{base}/metadata.json")
        verified = judged.passed
        CLIPS.labels("verified" if verified else (reason or verdict)).inc()
        record = {
            "clip_id": clip_id, "request_id": event["request_id"], "uploader": event["uploader"],
            "source_sha256": event["source_sha256"], "task_id": event["task_id"],
            "task_version": event["task_version"], "clip_index": index,
            "variant_kind": str((params or {}).get("kind", "base")),
            "variant_json": json.dumps(params or {}, sort_keys=True, default=str), "clip_uri": clip_uri,
            "metadata_uri": meta_uri, "preview_uri": preview_uri, "frames": len(clip), "fps": float(clip.fps),
            "quality_score": score, "quality_verdict": verdict, "quality_reason_code": reason,
            "quality_json": json.dumps(details, default=str, sort_keys=True), "verified": verified,
            "config_version": self.cfg.config_version, "created_at": now_ms()}
        metrics = {"clip_id": clip_id, "quality_score": score, "quality_verdict": verdict,
                   "quality_reason_code": reason, "verified": verified, "frames": len(clip)}
        return [Output(self.next, record)], metrics, clip_uri


@dataclass(frozen=True)
class Judgement:
    """A clip's quality: ``passed`` (it joins the dataset as verified), the verifier's
    ``verdict`` and ``score`` S, why not (``reason_code``), the report as ``details``, and
    files to store with the clip (``{"preview": path, "bundle": path}``)."""

    passed: bool
    verdict: str
    score: float | None
    reason_code: str | None
    details: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path | None] = field(default_factory=dict)


def judge(folder: Path, cfg: XGenConfig) -> Judgement:
    """The clip judged by the verifier's chain as a submission bundle
    (``kibotos.xgen.quality.judge_clip``: gates A-E, IK against the object stream, task
    ``cargo_pickup``); the bundle is kept with the clip."""
    from kibotos.xgen.quality import judge_clip

    res = judge_clip(folder, cfg=cfg, write_result=False)
    files: dict[str, Path | None] = {"bundle": Path(res.bundle_path) if res.bundle_path else None}
    return Judgement(passed=res.passed, verdict=res.verdict, score=res.score, reason_code=res.reason_code,
                     details={"report": res.report, "metrics": res.metrics}, files=files)


class GenesisPreview:
    """``preview.mp4`` of a clip rendered in Genesis (``kibotos.xgen.preview``), and for
    the base clip of a video ``preview_side_by_side.mp4``; one scene per actor, built on
    first use and kept warm."""

    def __init__(self, fps: float = 5.0):
        from kibotos.xgen.preview import PreviewRenderer

        self.renderer: PreviewRenderer | None = None
        self.fps = fps

    def __call__(self, folder: Path, source_video: Path | None) -> dict[str, Path]:
        from kibotos.xgen import preview

        if self.renderer is None:
            self.renderer = preview.PreviewRenderer()
        written = preview.write_preview(folder, self.renderer, fps=self.fps, source_video=source_video)
        return {Path(name).stem: Path(path) for name, path in written.items()}


def _warm_quality() -> None:
    import gpu_consumers.ik  # noqa: F401
    import kibotos.scoring  # noqa: F401
    import kibotos.tasks  # noqa: F401
    import kibotos.xgen.quality  # noqa: F401
    import processors.chain  # noqa: F401


def build_xgen_stage(stage: str, settings, catalogue: Catalogue, store) -> XGenStage:
    """``build_stage`` of the job registry: the stage with the settings' XGen config."""
    return XGenStage(stage, catalogue, store, load_xgen_config(settings.xgen_config_path))


for _stage in XGEN_STAGES:
    register_job(JobSpec(kind=f"xgen_{_stage}", input_topic=Catalogue().xgen_input(_stage).id, family="xgen",
                         build_stage=functools.partial(build_xgen_stage, _stage)))
