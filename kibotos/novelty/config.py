"""Versioned novelty config (``kibotos/config/novelty.yaml``): windows, penalties,
fingerprint parameters, similarity ramps and the synthetic-artifact heuristics."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kibotos.config.files import load_config, validate

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "config" / "novelty.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_ramp(lo: float, hi: float, what: str) -> None:
    """Ramps map ``lo -> 0 ... hi -> 1`` linearly."""
    if not lo < hi:
        raise ValueError(f"{what}: lo {lo} must be below hi {hi}")


class WindowsConfig(_Frozen):
    same_miner_days: float = Field(gt=0)
    global_days: float = Field(gt=0)


class PenaltiesConfig(_Frozen):
    same_miner: float = Field(ge=0, le=1)
    cross_miner: float = Field(ge=0, le=1)
    artifact: float = Field(ge=0, le=1)
    quality: float = Field(ge=0, le=1)  # s_novel *= 1 - quality * (1 - video quality)
    render_like: float = Field(ge=0, le=1)  # s_novel *= 1 - render_like * strength * confidence


class FramesConfig(_Frozen):
    sample_fps: float = Field(gt=0)
    max_samples: int = Field(gt=0)
    keyframes: int = Field(gt=0)
    analysis_width: int = Field(ge=32)
    keyframe_max_side: int = Field(ge=64)


class MotionConfig(_Frozen):
    width: int = Field(ge=2)
    height: int = Field(ge=2)
    max_samples: int = Field(gt=0)
    blur_cells: float = Field(ge=0)
    crop_variants: tuple[float, ...]
    shift_x: int = Field(ge=0)
    shift_y: int = Field(ge=0)
    corr_lo: float = Field(ge=-1, le=1)
    corr_hi: float = Field(ge=-1, le=1)
    corr_lo_other_motion: float = Field(ge=-1, le=1)
    corr_hi_other_motion: float = Field(ge=-1, le=1)
    max_lag_s: float = Field(ge=0)
    min_overlap_fraction: float = Field(gt=0, le=1)
    min_overlap_samples: int = Field(ge=1)

    @model_validator(mode="after")
    def _valid(self) -> "MotionConfig":
        _check_ramp(self.corr_lo, self.corr_hi, "motion.corr")
        _check_ramp(self.corr_lo_other_motion, self.corr_hi_other_motion, "motion.corr_*_other_motion")
        if any(not 0.3 <= c < 1.0 for c in self.crop_variants):
            raise ValueError(f"motion.crop_variants must lie in [0.3, 1): {self.crop_variants}")
        return self


class HashConfig(_Frozen):
    hamming_threshold: int = Field(ge=0, le=64)
    exact_hamming: int = Field(ge=0, le=64)
    exact_fraction: float = Field(gt=0, le=1)
    max_lag_s: float = Field(ge=0)
    min_overlap_fraction: float = Field(gt=0, le=1)
    min_overlap_samples: int = Field(ge=1)


class PrefilterConfig(_Frozen):
    embedding_cos: float = Field(ge=-1, le=1)
    hash_fraction: float = Field(ge=0, le=1)


class TrajectoryConfig(_Frozen):
    rate_hz: float = Field(gt=0)
    max_samples: int = Field(gt=0)
    min_samples: int = Field(ge=2)
    min_motion: float = Field(ge=0)
    corr_lo: float = Field(ge=-1, le=1)
    corr_hi: float = Field(ge=-1, le=1)
    exact_corr: float = Field(ge=-1, le=1)
    max_lag_s: float = Field(ge=0)
    min_overlap_fraction: float = Field(gt=0, le=1)
    time_scales: tuple[float, ...] = ()
    scaled_corr_lo: float = Field(default=0.985, ge=-1, le=1)
    scaled_corr_hi: float = Field(default=0.995, ge=-1, le=1)

    @model_validator(mode="after")
    def _ramp(self) -> "TrajectoryConfig":
        _check_ramp(self.corr_lo, self.corr_hi, "trajectory.corr")
        _check_ramp(self.scaled_corr_lo, self.scaled_corr_hi, "trajectory.scaled_corr")
        if any(not 0.5 <= t <= 2.0 or t == 1.0 for t in self.time_scales):
            raise ValueError(f"trajectory.time_scales must lie in [0.5, 2] without 1: {self.time_scales}")
        return self


class MatchConfig(_Frozen):
    report_threshold: float = Field(ge=0, le=1)
    reject_cross_miner_near_exact: bool = True


class OverlayConfig(_Frozen):
    frames: int = Field(ge=4)
    static_std: float = Field(gt=0)
    moving_std: float = Field(gt=0)
    min_moving_fraction: float = Field(ge=0, le=1)
    edge_threshold: float = Field(gt=0)
    min_contrast: float = Field(ge=0, le=255)
    min_area_fraction: float = Field(ge=0, le=1)
    max_area_fraction: float = Field(gt=0, le=1)
    border_band: float = Field(ge=0, le=0.5)
    camera_motion_fraction: float = Field(gt=0, le=1)
    min_edge_density: float = Field(ge=0, le=1)


class RecaptureConfig(_Frozen):
    frames: int = Field(ge=1)
    peak_ratio: float = Field(gt=1)
    min_radius: float = Field(gt=0, lt=0.5)
    block_guard_bins: int = Field(ge=0)


class DoubleCompressionConfig(_Frozen):
    min_frames: int = Field(ge=8)
    peak_ratio: float = Field(gt=1)
    min_period: int = Field(ge=2)
    max_period: int = Field(ge=2)


class DuplicatedFramesConfig(_Frozen):
    tiny_packet_fraction: float = Field(gt=0, lt=1)
    min_fraction: float = Field(gt=0, le=1)


ARTIFACT_CUES = ("static_overlay", "screen_recapture", "double_compression", "encoder_signature", "intra_only",
                 "duplicated_frames")


class ArtifactsConfig(_Frozen):
    reject_score: float = Field(gt=0, le=1)
    weights: dict[str, float]
    encoder_signatures: dict[str, str]
    overlay: OverlayConfig
    recapture: RecaptureConfig
    double_compression: DoubleCompressionConfig
    duplicated_frames: DuplicatedFramesConfig

    @model_validator(mode="after")
    def _cues(self) -> "ArtifactsConfig":
        if set(self.weights) != set(ARTIFACT_CUES):
            raise ValueError(f"artifacts.weights must name exactly {list(ARTIFACT_CUES)}, got {sorted(self.weights)}")
        if any(not 0 <= w <= 1 for w in self.weights.values()):
            raise ValueError(f"artifacts.weights must lie in [0, 1]: {self.weights}")
        return self


class QualityConfig(_Frozen):
    """Video quality and viewpoint compliance (``kibotos.novelty.quality``): ramps lo -> 0, hi -> 1."""

    sharpness_lo: float = Field(ge=0)
    sharpness_hi: float = Field(gt=0)
    clipped_lo: float = Field(ge=0, le=1)
    clipped_hi: float = Field(gt=0, le=1)
    min_side_lo: float = Field(ge=1)
    min_side_hi: float = Field(ge=1)
    viewpoint_lo: float = Field(ge=0, le=1)
    viewpoint_hi: float = Field(gt=0, le=1)
    viewpoint_samples: int = Field(ge=2)

    @model_validator(mode="after")
    def _ramps(self) -> "QualityConfig":
        for name in ("sharpness", "clipped", "min_side", "viewpoint"):
            _check_ramp(getattr(self, f"{name}_lo"), getattr(self, f"{name}_hi"), f"quality.{name}")
        return self


class RenderLikeConfig(_Frozen):
    """The render-likeness heuristic (``kibotos.novelty.quality.render_likeness``)."""

    noise_lo: float = Field(ge=0)  # noise sigma (grey levels) at or below: fully render-like
    noise_hi: float = Field(gt=0)  # at or above: camera-like
    texture_lo: float = Field(ge=0)  # Laplacian variance, same reading
    texture_hi: float = Field(gt=0)
    frames: int = Field(ge=1)  # frames wanted for full confidence
    flag_strength: float = Field(gt=0, le=1)  # flag render_like_video at or above

    @model_validator(mode="after")
    def _ramps(self) -> "RenderLikeConfig":
        _check_ramp(self.noise_lo, self.noise_hi, "render_like.noise")
        _check_ramp(self.texture_lo, self.texture_hi, "render_like.texture")
        return self


class NoveltySection(_Frozen):
    windows: WindowsConfig
    penalties: PenaltiesConfig
    frames: FramesConfig
    motion: MotionConfig
    hash: HashConfig
    prefilter: PrefilterConfig
    trajectory: TrajectoryConfig
    match: MatchConfig
    artifacts: ArtifactsConfig
    quality: QualityConfig
    render_like: RenderLikeConfig


class NoveltyConfig(_Frozen):
    config_version: str = Field(min_length=1)
    novelty: NoveltySection


def parse_novelty_config(raw: dict[str, Any]) -> NoveltyConfig:
    return validate(NoveltyConfig, raw, "novelty")


@functools.lru_cache(maxsize=8)
def load_novelty_config(path: Path | None = None) -> NoveltyConfig:
    """The novelty config at ``path`` (default: the packaged ``config/novelty.yaml``)."""
    return load_config(NoveltyConfig, path or DEFAULT_PATH, "novelty")
