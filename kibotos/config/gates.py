"""Versioned gate thresholds (``kibotos/config/gates.yaml``), per robot model overrides."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kibotos.bundle.limits import Limits
from kibotos.config import files
from kibotos.errors import ConfigError

DEFAULT_PATH = Path(__file__).resolve().parent / "gates.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GateAConfig(_Frozen):
    flatline_eps: float
    flatline_max_fraction: float
    vel_consistency_max_nrmse: float
    vel_consistency_abs_tol: float
    vel_consistency_window_ms: float
    max_joint_count: int


class GateBConfig(_Frozen):
    max_gap_ms: float
    max_missing_fraction: float
    max_rate_deviation: float


class GateCConfig(_Frozen):
    min_overlap_fraction: float
    max_sync_disagreement_ms: float
    high_confidence: float
    max_lag_ms: float
    grid_ms: float
    decode_width: int
    frame_count_tolerance: float
    # a still video against a moving trajectory (reason video_kinematics_mismatch)
    static_max_changed_fraction: float = 0.0002
    static_min_image_speed_px_s: float = 20.0


class GateDConfig(_Frozen):
    limit_margin_rad: float
    limit_margin_m: float
    max_violation_fraction: float
    degrees_ratio: float


class GateEConfig(_Frozen):
    smoothing_window_ms: float
    speed_factor: float
    acc_factor: float
    jerk_factor: float
    max_exceed_fraction: float
    teleport_min_rad: float
    teleport_vel_factor: float
    teleport_acc_factor: float = 5.0  # a splice: a step departing from its neighbours' motion
    # noise tolerance (processors.derivatives): a bound counts as exceeded only beyond
    # noise_z x the noise the estimate carries; noise above these levels is a reject
    noise_z: float = 4.0
    max_noise_rad: float = 0.1
    max_noise_span_fraction: float = 0.016


class GateFConfig(_Frozen):
    """Gate F (pose estimation quality, design §5.2 F): thresholds and decoding budget."""

    max_fps: float  # frames are subsampled to at most this rate before pose estimation
    max_sampled_frames: int  # and never more than this many per video
    max_decode_side: int  # frames are downscaled so that the longer side is at most this
    keypoints: tuple[str, ...]  # the landmarks judged (estimator names, lower case)
    min_mean_confidence: float
    frame_confidence: float  # a frame is "confident" when its mean confidence is above this
    min_confident_frame_fraction: float
    max_missing_fraction: float
    max_dropout_ms: float
    reprojection_min_visibility: float  # keypoints used in the reprojection fit
    reprojection_min_points: int
    max_mean_reprojection_px_720p: float
    max_p95_reprojection_px_720p: float
    # False for an estimator whose 3D output is not a metric fit of its own 2D output: its
    # reprojection error is reported and scored (S_pose), never a hard reject
    reprojection_gated: bool = True
    # S_pose: reprojection error at which its term is 0.5 (None: max_mean_reprojection_px_720p)
    reprojection_soft_scale_px_720p: float | None = None
    jitter_scale_px_720p: float  # S_pose: jitter at which the jitter term is 0.5
    # per-estimator calibration: values that replace the defaults above for one estimator,
    # keyed by registry name
    estimators: dict[str, dict[str, float | bool]] = {}

    def for_estimator(self, name: str) -> "GateFConfig":
        """These thresholds with the calibration of estimator ``name`` merged in."""
        overrides = self.estimators.get(name)
        if not overrides:
            return self
        unknown = set(overrides) - set(type(self).model_fields)
        if unknown:
            raise ConfigError(f"gate_f.estimators.{name}: unknown keys {sorted(unknown)}")
        return self.model_copy(update=dict(overrides))


class IKConfig(_Frozen):
    """IK residual stage (design §5.3): hard-reject limits, S_retarget scales, solver."""

    max_rms_pos_error_m: float
    max_peak_pos_error_m: float
    max_orientation_error_deg: float
    max_orientation_exceed_fraction: float
    min_target_frames: int
    confidence_scale_pos_m: float  # S_retarget position term is 0.5 at this RMS error
    confidence_scale_rot_deg: float  # ... orientation term is 0.5 at this mean error
    exact_match_floor_m: float  # below this RMS the target cannot be an independent measurement
    # an object stream riding with its grasp link on every frame (within this spread while the
    # link travels at least that far) is made from the joints: no independent target
    derived_max_spread_m: float = Field(gt=0)
    derived_min_link_travel_m: float = Field(gt=0)
    grasp_speed_m_s: float  # grasp inferred from object motion: object speed above this
    grasp_smoothing_ms: float
    rotation_weight_m_per_rad: float  # solver: 1 rad of orientation error weighs like this many metres
    iterations: int
    seed_restarts: int
    damping: float
    smoothness_weight: float
    max_step_rad: float
    # LM stops where its residual is below converged_residual_m or a step changes each term of
    # the cost by less than convergence_tolerance of it (gates.yaml, gpu_consumers.ik)
    converged_residual_m: float = Field(gt=0)
    convergence_tolerance: float = Field(ge=0)
    # the multi-start on the first frame ends when a start is within seed_residual_m of its
    # target; the coupled batch also stops once no term's RMS changes by converged_change_m
    seed_residual_m: float = Field(gt=0)
    home_iterations: int = Field(ge=1)  # home's own try before the restarts
    converged_change_m: float = Field(ge=0)


class KeyframeConfig(_Frozen):
    """Playback keyframes (design §6): how many of each strategy (gpu_consumers.keyframes)."""

    n_uniform: int = Field(ge=0)
    n_peaks: int = Field(ge=0)
    min_peak_gap_ms: float = Field(ge=0)
    max_phase_boundaries: int = Field(ge=0)


class GateConfig(_Frozen):
    config_version: str
    gate_a: GateAConfig
    gate_b: GateBConfig
    gate_c: GateCConfig
    gate_d: GateDConfig
    gate_e: GateEConfig
    gate_f: GateFConfig
    ik: IKConfig
    keyframes: KeyframeConfig
    limits: Limits = Limits()  # resource budgets per submission (kibotos.bundle.limits)
    robots: dict[str, dict[str, dict[str, Any]]] = {}

    def for_robot(self, model_id: str, revision: str) -> "GateConfig":
        """This config with the overrides for ``model_id@revision`` merged in."""
        overrides = self.robots.get(f"{model_id}@{revision}")
        if not overrides:
            return self
        data = self.model_dump()
        for section, values in overrides.items():
            if section not in data or not isinstance(data[section], dict):
                raise ConfigError(f"override for unknown section {section!r}")
            data[section].update(values)
        return GateConfig.model_validate(data)


def parse_config(raw: dict[str, Any]) -> GateConfig:
    return files.validate(GateConfig, raw, "gate")


@functools.lru_cache(maxsize=8)
def load_config(path: Path | None = None) -> GateConfig:
    return files.load_config(GateConfig, path or DEFAULT_PATH, "gate")
