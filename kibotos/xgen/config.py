"""Versioned XGen config (``kibotos/config/xgen.yaml``), read with the project's one YAML
loader (``kibotos.config.files``)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kibotos.config.files import load_config, validate

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "config" / "xgen.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PoseConfig(_Frozen):
    estimator: str
    min_detection_rate: float = Field(ge=0, le=1)
    min_confidence: float = Field(ge=0, le=1)
    max_gap_s: float = Field(ge=0)
    smooth_sigma_s: float = Field(ge=0)
    # landmark outliers (kibotos.xgen.pose.outliers): gaps, filled like missing landmarks
    outlier_window_s: float = Field(default=0.4, gt=0)  # running-median window
    outlier_max_deviation_m: float = Field(default=0.15, gt=0)  # from the running median
    bone_length_tolerance: float = Field(default=0.5, gt=0)  # of the clip's median bone length


class RetargetWeights(_Frozen):
    pelvis_position: float = Field(ge=0)
    pelvis_orientation: float = Field(ge=0)
    torso_orientation: float = Field(ge=0)
    foot_orientation: float = Field(ge=0)
    knee: float = Field(ge=0)
    ankle: float = Field(ge=0)
    elbow: float = Field(ge=0)
    wrist: float = Field(ge=0)
    palm: float = Field(ge=0)
    posture: float = Field(gt=0)


class RetargetConfig(_Frozen):
    iterations: int = Field(ge=1)
    first_frame_iterations: int = Field(ge=1)
    damping: float = Field(ge=0)
    stance_hysteresis_m: float = Field(ge=0)
    planted_height_m: float = Field(gt=0)
    planted_speed_m_per_frame: float = Field(gt=0)
    max_mean_residual_m: float = Field(gt=0)
    weights: RetargetWeights
    # joint continuity (kibotos.xgen.retarget._solve): a posture task towards the previous
    # frame's solution, and a per-frame joint step bounded by the registered robot's
    # velocity limits x dt x this factor
    continuity_cost: float = Field(default=0.0, ge=0)
    max_joint_speed_factor: float = Field(default=1.0, gt=0)
    joint_smooth_sigma_s: float = Field(default=0.0, ge=0)  # Gaussian on the solved joint angles


class InteractionConfig(_Frozen):
    hold_width_tolerance_m: float = Field(gt=0)
    min_hold_s: float = Field(gt=0)
    min_forward_m: float
    max_hold_width_m: float = Field(gt=0)
    min_hold_width_m: float = Field(gt=0)
    lift_threshold_m: float = Field(gt=0)
    box_depth_m: float = Field(gt=0)
    min_box_depth_m: float = Field(gt=0)
    torso_clearance_m: float = Field(ge=0)
    refine_iterations: int = Field(ge=1)
    contact_tolerance_m: float = Field(gt=0)
    max_face_distance_m: float = Field(gt=0)
    gravity_m_s2: float = Field(gt=0)
    default_mass_kg: float = Field(gt=0)
    # the rigid grasp (``interaction.grasp_in_box``) and how the refine reaches it
    grasp_wrist_pitch_deg: float = Field(default=-50.0, ge=-90, le=90)
    grasp_orientation_cost: float = Field(default=5.0, ge=0)
    refine_blend_s: float = Field(default=0.3, ge=0)
    # where no hand holds the box (kibotos.xgen.noncontact): genesis | analytic
    noncontact_sim: str = Field(default="analytic", pattern="^(analytic|genesis)$")
    noncontact_substeps: int = Field(default=8, ge=1, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> "InteractionConfig":
        if self.max_hold_width_m <= self.min_hold_width_m:
            raise ValueError("interaction.max_hold_width_m must exceed min_hold_width_m")
        return self


class AugmentConfig(_Frozen):
    seed: int
    size_scales: tuple[float, ...]
    yaw_offsets_deg: tuple[float, ...]
    masses_kg: tuple[float, ...]
    speeds: tuple[float, ...]
    mirror: bool
    base_offsets_m: tuple[tuple[float, float, float], ...]
    min_clips: int = Field(ge=1)

    @model_validator(mode="after")
    def _positive(self) -> "AugmentConfig":
        if any(v <= 0 for v in (*self.size_scales, *self.masses_kg, *self.speeds)):
            raise ValueError("augment size_scales, masses_kg and speeds must be positive")
        return self


class ExportConfig(_Frozen):
    float_dtype: str = Field(pattern="^(float32|float64)$")
    preview: bool = True  # the export job renders each clip's Genesis preview (kibotos.xgen.preview)
    # frames per second of a preview: the Genesis render is most of an export job's time on a CPU
    preview_fps: float = Field(default=5.0, gt=0)


class QualityConfig(_Frozen):
    """The clip quality check (``kibotos.xgen.quality``): what an accepted clip also needs."""

    min_score: float = Field(default=0.5, ge=0, le=1)  # S of the verifier's score breakdown
    require_task_complete: bool = True  # every task predicate passed, phases in order
    video_width: int = Field(default=320, ge=64, le=1920)  # the bundle's rendered video
    video_height: int = Field(default=240, ge=48, le=1080)
    video_fps: float = Field(default=10.0, gt=0, le=120)  # at most the clip's rate


class XGenConfig(_Frozen):
    config_version: str
    pose: PoseConfig
    retarget: RetargetConfig
    interaction: InteractionConfig
    augment: AugmentConfig
    export: ExportConfig
    quality: QualityConfig = QualityConfig()


def parse_xgen_config(raw: dict[str, Any]) -> XGenConfig:
    return validate(XGenConfig, raw, "xgen")


@functools.lru_cache(maxsize=8)
def load_xgen_config(path: Path | None = None) -> XGenConfig:
    """The XGen config at ``path`` (default: the packaged ``config/xgen.yaml``)."""
    return load_config(XGenConfig, path or DEFAULT_PATH, "xgen")
