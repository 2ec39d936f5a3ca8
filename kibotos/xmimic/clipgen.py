"""A small XGen clip set generated on the spot (tests, ``kibotos bench train`` without
--clips): XGen's procedural human cargo pickup run through every XGen stage."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from kibotos.xgen.result import StageResult


def make_clip_set(out_dir: Path, duration_s: float = 4.0, fps: float = 30.0) -> Path:
    from kibotos.xgen.config import load_xgen_config
    from kibotos.xgen.pipeline import run_pipeline
    from kibotos.xgen.skeleton import write_keypoints
    from kibotos.xgen.synth import cargo_pickup
    from kibotos.xmimic.clips import XMimicError

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / "pickup_keypoints.npz"
    write_keypoints(src, cargo_pickup(duration_s, fps).motion)
    outcome = run_pipeline(source=src, source_kind="keypoints", out_dir=out_dir / "clips", cfg=load_xgen_config())
    if not outcome.ok:
        failed = cast("StageResult", outcome.failed)  # set whenever ok is false
        raise XMimicError(f"XGen refused the synthetic pickup: [{failed.reason_code}] {failed.message}",
                          reason_code="xmimic_clips_missing")
    return out_dir / "clips"
