"""Versioned alignment evidence config (``kibotos/config/alignment.yaml``): thresholds and
weights of the align job (``gpu_consumers.alignment``), its secondary camera measurement
and the VLM calibration table."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kibotos.config.files import load_config, validate
from kibotos.vlm.config import VLMConfig

DEFAULT_PATH = Path(__file__).resolve().parent / "alignment.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ImageWeights(_Frozen):
    embedding: float = Field(ge=0)
    silhouette: float = Field(ge=0)


class ImagesConfig(_Frozen):
    min_pairs: int = Field(ge=2)
    max_png_bytes: int = Field(ge=1)
    min_pose_distance: float = Field(ge=0)
    auc_lo: float = Field(ge=0, le=1)
    auc_hi: float = Field(ge=0, le=1)
    weights: ImageWeights

    @model_validator(mode="after")
    def _ordered(self) -> "ImagesConfig":
        if self.auc_hi <= self.auc_lo:
            raise ValueError("images.auc_hi must exceed images.auc_lo")
        return self


class MotionConfig(_Frozen):
    decode_width: int = Field(ge=8)
    grid_ms: float = Field(gt=0)
    smooth_ms: float = Field(ge=0)
    max_lag_ms: float = Field(ge=0)
    min_overlap_ms: float = Field(gt=0)
    min_joint_speed: float = Field(ge=0)
    corr_lo: float = Field(ge=-1, le=1)
    corr_hi: float = Field(ge=-1, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "MotionConfig":
        if self.corr_hi <= self.corr_lo:
            raise ValueError("motion.corr_hi must exceed motion.corr_lo")
        return self


class CombineWeights(_Frozen):
    image: float = Field(ge=0)
    motion: float = Field(ge=0)


class CombineConfig(_Frozen):
    weights: CombineWeights


class RejectConfig(_Frozen):
    max_motion_corr: float = Field(ge=-1, le=1)
    max_image_auc: float = Field(ge=0, le=1)
    min_pairs: int = Field(ge=2)


class MismatchConfig(_Frozen):
    """When the evidence confidently says the video does not show the trajectory
    (``gpu_consumers.alignment.mismatch_findings``, reason ``video_kinematics_mismatch``)."""

    static_max_changed_fraction: float = Field(ge=0, le=1)
    max_best_corr: float = Field(ge=-1, le=1)
    reversed_margin: float = Field(ge=0)
    min_reversed_corr: float = Field(ge=-1, le=1)
    max_view_match: float = Field(ge=0, le=1)
    max_hand_corr: float = Field(ge=-1, le=1)
    hand_decode_width: int = Field(ge=16)
    flow_min_px: float = Field(ge=0)
    hand_active_fraction: float = Field(ge=0, le=1)
    kin_smooth_ms: float = Field(ge=0)
    hand_smooth_ms: float = Field(ge=0)
    min_elsewhere_corr: float = Field(ge=-1, le=1)
    min_elsewhere_ms: float = Field(ge=0)
    elsewhere_margin: float = Field(ge=0)


class SecondaryConfig(_Frozen):
    """Secondary cameras (``gpu_consumers.alignment.secondary_evidence``)."""

    max_cameras: int = Field(ge=0)
    frame_count_tolerance: float = Field(ge=0)
    min_view_angle_deg: float = Field(ge=0, le=180)
    corr_lo: float = Field(ge=-1, le=1)
    corr_hi: float = Field(ge=-1, le=1)
    decode_width: int = Field(ge=16)
    change_lag_ms: float = Field(gt=0)
    blur_px: float = Field(ge=0)
    line_px: int = Field(ge=1)
    active_fraction: float = Field(ge=0, le=1)
    max_frames: int = Field(ge=2)
    min_frames: int = Field(ge=2)
    min_separation_ms: float = Field(ge=0)
    frame_auc_min: float = Field(ge=0, le=1)
    view_lo: float = Field(ge=0, le=1)
    view_hi: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "SecondaryConfig":
        if self.corr_hi <= self.corr_lo:
            raise ValueError("secondary.corr_hi must exceed secondary.corr_lo")
        if self.view_hi <= self.view_lo:
            raise ValueError("secondary.view_hi must exceed secondary.view_lo")
        if self.min_frames > self.max_frames:
            raise ValueError("secondary.min_frames must not exceed secondary.max_frames")
        return self


class AlignmentConfig(_Frozen):
    config_version: str
    images: ImagesConfig
    motion: MotionConfig
    combine: CombineConfig
    reject: RejectConfig
    mismatch: MismatchConfig
    secondary: SecondaryConfig
    vlm: VLMConfig


def parse_alignment_config(raw: dict[str, Any]) -> AlignmentConfig:
    return validate(AlignmentConfig, raw, "alignment")


@functools.lru_cache(maxsize=8)
def load_alignment_config(path: Path | None = None) -> AlignmentConfig:
    """The alignment config at ``path`` (default: the packaged ``config/alignment.yaml``)."""
    return load_config(AlignmentConfig, path or DEFAULT_PATH, "alignment")
