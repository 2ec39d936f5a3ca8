"""VLM providers: a registry of clients that judge keyframe pairs against a task schema.

A provider is built once per process from ``Settings`` (``get_provider``) and called per
submission with the stored real/sim keyframe pairs of the playback job::

    provider = get_provider(settings, alignment_config.vlm)   # None: no VLM configured
    record = provider.evaluate(pairs, task, robot="franka_panda@fer-v1")

``evaluate`` never raises for what the endpoint does: every call returns a
``VLMCallRecord`` whose ``status`` says whether ``answer`` holds a validated answer
(``ok``) or why not (``malformed``: the reply is not JSON; ``invalid``: JSON that breaks
``VLMAnswer``; ``http_error``; ``timeout``; ``unreachable``). No answer is ever made up.

Register a provider with ``@register_provider(name)`` on a factory
``(settings, vlm_config) -> VLMProvider``; ``Settings.vlm_provider`` picks it by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from kibotos.errors import ConfigError
from kibotos.vlm.config import Calibration, VLMConfig

if TYPE_CHECKING:  # kibotos.tasks pulls in the kinematics stack; the VLM client does not need it
    from kibotos.tasks import TaskSchema

Status = Literal["ok", "malformed", "invalid", "http_error", "timeout", "unreachable"]


@dataclass(frozen=True)
class KeyframePair:
    """One keyframe: the real video frame and the simulated render, both PNG."""

    frame: int  # video frame index
    kin_time_ms: float
    real_png: bytes
    sim_png: bytes


class VLMAnswer(BaseModel):
    """The structured answer a VLM must return (keys beyond these are ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    aligned: bool  # the simulated robot matches the real one in the keyframes
    alignment_score: float = Field(ge=0, le=1)
    task_success: bool | None  # null: the frames do not tell
    phases_observed: list[str]
    confidence: float = Field(ge=0, le=1)
    notes: str = Field(default="", max_length=4000)


class VLMCallRecord(BaseModel):
    """What one evaluation did, stored in the report whatever its outcome."""

    model_config = ConfigDict(frozen=True)

    status: Status
    provider: str
    model: str  # the configured model id
    response_model: str | None = None  # the model id the endpoint answered with
    prompt_version: str
    latency_ms: float  # all attempts together
    attempts: int
    http_status: int | None = None
    usage: dict[str, int] | None = None  # token counts when the endpoint returns them
    images_sent: int = 0
    response_excerpt: str | None = None  # the raw reply, bounded
    error: str | None = None
    answer: VLMAnswer | None = None  # only when status == "ok"
    calibration: Calibration
    calibrated_confidence: float | None = None  # Platt-scaled answer.confidence (calibrated only)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.answer is not None


class VLMProvider(Protocol):
    name: str
    model: str

    def evaluate(self, pairs: Sequence[KeyframePair], task: "TaskSchema | None", robot: str) -> VLMCallRecord: ...


ProviderFactory = Callable[[Any, VLMConfig], VLMProvider]
PROVIDERS: dict[str, ProviderFactory] = {}


def register_provider(name: str):
    """Register ``factory(settings, vlm_config) -> VLMProvider`` under ``name``."""

    def deco(factory: ProviderFactory) -> ProviderFactory:
        PROVIDERS[name] = factory
        return factory

    return deco


def list_providers() -> list[str]:
    return sorted(PROVIDERS)


def get_provider(settings, vlm_config: VLMConfig) -> VLMProvider | None:
    """The provider named by ``settings.vlm_provider``; None when no VLM is configured.

    :raises ConfigError: an unknown name (the error lists the available ones) or a
        provider whose settings are incomplete.
    """
    name = settings.vlm_provider
    if not name:
        return None
    if name not in PROVIDERS:
        raise ConfigError(f"unknown VLM provider {name!r}; available: {', '.join(list_providers())}")
    return PROVIDERS[name](settings, vlm_config)
