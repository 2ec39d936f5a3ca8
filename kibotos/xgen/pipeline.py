"""All XGen stages in-process (``kibotos xgen run``): source -> pose (video only) ->
retarget -> interaction -> augment -> export. Each stage's result is kept; the first
refusal stops the run and is returned with its reason code."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kibotos.xgen import augment, export, interaction, pose, retarget
from kibotos.xgen.config import XGenConfig
from kibotos.xgen.result import StageResult, run_stage
from kibotos.xgen.skeleton import read_keypoints


@dataclass
class PipelineOutcome:
    results: list[StageResult] = field(default_factory=list)
    clips: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    @property
    def failed(self) -> StageResult | None:
        return next((r for r in self.results if not r.ok), None)


def run_pipeline(*, source: Path, source_kind: str, out_dir: Path, cfg: XGenConfig, task_id: str = "cargo_pickup",
                 task_version: str = "1", uploader: str = "local", annotation: dict[str, Any] | None = None,
                 progress=None) -> PipelineOutcome:
    """``source_kind`` is ``video`` or ``keypoints``; ``progress(stage_name)`` is called
    before each stage."""
    out = PipelineOutcome()
    step = progress or (lambda name: None)

    def keep(result: StageResult) -> bool:
        out.results.append(result)
        return result.ok

    step("pose")
    if source_kind == "video":
        def from_video():
            frames, fps = pose.read_video(source)
            return pose.estimate(frames, fps, cfg)
        res = run_stage("pose", from_video)
    else:
        res = run_stage("pose", lambda: pose.clean(read_keypoints(source), cfg.pose))
    if not keep(res):
        return out
    step("retarget")
    if not keep(res := retarget.run(res.unwrap(), cfg)):
        return out
    step("interaction")
    if not keep(res := interaction.run(res.unwrap(), cfg, annotation)):
        return out
    step("augment")
    if not keep(res := augment.run(res.unwrap(), cfg)):
        return out
    step("export")
    req = export.ExportRequest(
        variants=res.unwrap(), out_dir=out_dir, source_sha256=export.file_sha256(source), source_kind=source_kind,
        uploader=uploader, task_id=task_id, task_version=task_version, annotation=dict(annotation or {}),
        stage_metrics={r.stage: r.metrics for r in out.results})
    if keep(res := export.run(req, cfg)):
        out.clips = res.unwrap()
    return out
