"""Versioned XMimic config (``kibotos/config/xmimic.yaml``), read with the project's one
YAML loader (``kibotos.config.files``)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kibotos.config.files import load_config, validate
from kibotos.errors import ConfigError

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "config" / "xmimic.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskConfig(_Frozen):
    fixed_pelvis: bool
    policy_joints: Literal["arms", "all"]
    num_envs: int = Field(ge=1)
    backend: Literal["auto", "mujoco", "genesis"]


class PhysicsConfig(_Frozen):
    """MuJoCo solver and contact options (README "XMimic: physics"); the defaults are the
    model as first built (xmimic-2026.12.4), the packaged config sets the faster ones."""
    cone: Literal["elliptic", "pyramidal"] = "elliptic"
    impratio: float = Field(default=10.0, ge=1)
    contact_condim: Literal[3, 4] = 4              # palm pads and box (a contact takes the larger condim)
    joint_frictionloss: bool = True                # Menagerie's 0.3 Nm dry friction per joint: one solver row each
    jacobian: Literal["auto", "dense", "sparse"] = "auto"
    iterations: int = Field(default=100, ge=1)
    ls_iterations: int = Field(default=50, ge=1)
    tolerance: float = Field(default=1e-8, gt=0)


class SimConfig(_Frozen):
    control_fps: float = Field(default=30.0, gt=0, le=240)  # clips at another rate are resampled to it
    substeps: int = Field(ge=1)
    box_friction: float = Field(gt=0)
    end: Literal["carry_end", "clip_end"]
    threads: int = Field(default=1, ge=0)
    physics: PhysicsConfig = PhysicsConfig()


class ControlConfig(_Frozen):
    action_scale_rad: float = Field(gt=0)
    kp_scale: float = Field(gt=0)


TRACKING_TERMS = ("body_joint_pos", "body_joint_vel", "key_body_pos", "object_pos", "object_rot", "relative_hand_box")
PENALTY_TERMS = ("action_rate", "torque", "joint_limit")
REWARD_TERMS = (*TRACKING_TERMS, "contact", *PENALTY_TERMS)


class RewardConfig(_Frozen):
    weights: dict[str, float]
    sigmas: dict[str, float]
    joint_limit_margin: float = Field(gt=0, le=1)
    contact_tolerance_m: float = Field(gt=0)

    @model_validator(mode="after")
    def _known(self) -> "RewardConfig":
        if set(self.weights) != set(REWARD_TERMS):
            raise ValueError(f"reward weights must name exactly {sorted(REWARD_TERMS)}")
        if set(self.sigmas) != set(TRACKING_TERMS) or any(v <= 0 for v in self.sigmas.values()):
            raise ValueError(f"reward sigmas must be positive for exactly {sorted(TRACKING_TERMS)}")
        if any(self.weights[k] > 0 for k in PENALTY_TERMS):
            raise ValueError("penalty weights (action_rate, torque, joint_limit) must be <= 0")
        return self


class DIConfig(_Frozen):
    enabled: bool
    max_start_fraction: float = Field(ge=0, lt=1)
    joint_noise_rad: float = Field(ge=0)
    box_noise_m: float = Field(ge=0)
    failure_weighted_sampling: bool = False
    box_noise_moves_reference: bool = False
    sampling_floor: float = Field(default=1.0, gt=0)


class ITConfig(_Frozen):
    enabled: bool
    box_tolerance_m: float = Field(gt=0)
    body_tolerance_m: float = Field(gt=0)
    contact_loss_frames: int = Field(ge=1)


class DRConfig(_Frozen):
    enabled: bool
    box_mass_scale: tuple[float, float]
    box_size_scale: tuple[float, float]
    box_friction: tuple[float, float]
    kp_scale: tuple[float, float]
    push_interval_s: float = Field(gt=0)
    push_box_velocity_m_s: float = Field(ge=0)


class TeacherConfig(_Frozen):
    iterations: int = Field(ge=1)
    num_steps_per_env: int = Field(ge=1)
    hidden_dims: tuple[int, ...]
    init_noise_std: float = Field(gt=0)
    learning_rate: float = Field(gt=0)
    num_learning_epochs: int = Field(ge=1)
    num_mini_batches: int = Field(ge=1)
    entropy_coef: float = Field(ge=0)
    gamma: float = Field(gt=0, le=1)
    lam: float = Field(gt=0, le=1)
    desired_kl: float = Field(gt=0)


class MocapConfig(_Frozen):
    dropout: float = Field(ge=0, lt=1)
    noise_m: float = Field(ge=0)


class StudentConfig(_Frozen):
    iterations: int = Field(ge=1)
    bc_coef: float = Field(ge=0)
    bc_epochs: int = Field(ge=1)
    bc_learning_rate: float = Field(gt=0)
    learning_rate: float = Field(gt=0)
    init_noise_std: float = Field(gt=0)
    mocap: MocapConfig


class CheckpointConfig(_Frozen):
    every_iterations: int = Field(ge=1)
    # a stack train job's lease on its run (kibotos.xmimic.lease): renewed every ttl/4;
    # unchanged for ttl, another job may take the run over
    lease_ttl_s: float = Field(60.0, gt=0)


class HeldoutConfig(_Frozen):
    max_source_clips: int = Field(ge=1)
    size_scales: tuple[float, ...]
    offsets_m: tuple[tuple[float, float], ...]
    yaw_deg: tuple[float, ...]


class PassRule(_Frozen):
    """When an evaluated policy passes (and pays the miners it trained on)."""
    min_sr: float = Field(ge=0, le=1)
    min_gsr: float = Field(ge=0, le=1)
    min_sr_over_reference: float = Field(ge=-1, le=1)


class EvalConfig(_Frozen):
    episodes_per_clip: int = Field(ge=1)
    final_height_tolerance_m: float = Field(gt=0)
    max_mean_hand_box_error_m: float = Field(gt=0)
    max_final_box_xy_error_m: float = Field(gt=0)
    heldout: HeldoutConfig
    pass_rule: PassRule


class XMimicConfig(_Frozen):
    config_version: str
    task: str
    tasks: dict[str, TaskConfig]
    sim: SimConfig
    control: ControlConfig
    reward: RewardConfig
    di: DIConfig
    it: ITConfig
    dr: DRConfig
    teacher: TeacherConfig
    student: StudentConfig
    checkpoint: CheckpointConfig
    eval: EvalConfig

    @model_validator(mode="after")
    def _task_known(self) -> "XMimicConfig":
        if self.task not in self.tasks:
            raise ValueError(f"task {self.task!r} is not one of {sorted(self.tasks)}")
        return self

    def task_config(self, name: str | None = None) -> TaskConfig:
        name = name or self.task
        if name not in self.tasks:
            raise ConfigError(f"unknown xmimic task {name!r} (known: {sorted(self.tasks)})",
                              reason_code="xmimic_unknown_task")
        return self.tasks[name]

    def with_overrides(self, **changes: Any) -> "XMimicConfig":
        """A copy with nested values replaced: ``with_overrides(di={"enabled": False})``."""
        raw = self.model_dump()
        for key, val in changes.items():
            if isinstance(val, dict) and isinstance(raw.get(key), dict):
                raw[key].update(val)
            else:
                raw[key] = val
        return parse_xmimic_config(raw)


def parse_xmimic_config(raw: dict[str, Any]) -> XMimicConfig:
    return validate(XMimicConfig, raw, "xmimic")


@functools.lru_cache(maxsize=8)
def load_xmimic_config(path: Path | None = None) -> XMimicConfig:
    """The XMimic config at ``path`` (default: the packaged ``config/xmimic.yaml``)."""
    return load_config(XMimicConfig, path or DEFAULT_PATH, "xmimic")
