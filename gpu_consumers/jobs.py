"""The evidence job kinds and their handlers: ``handler(view, event) -> GateResult``.

A handler object is built once per Ray actor and keeps its expensive state warm (the
pose model, IK solvers per robot, Genesis scenes per robot). ``JOB_HANDLERS`` is the
registry; kinds with a topic but no handler yet (vlm, task, train) are listed in
``RESERVED`` so a misconfigured plan fails loudly instead of stalling.
"""

from __future__ import annotations

from typing import Callable

from kibotos.errors import ConfigError
from kibotos.gate_config import GateConfig
from kibotos.report import GateResult

HandlerFactory = Callable[..., Callable]
JOB_HANDLERS: dict[str, HandlerFactory] = {}
RESERVED = ("vlm", "task", "train")


def register_job(kind: str):
    def deco(factory: HandlerFactory) -> HandlerFactory:
        JOB_HANDLERS[kind] = factory
        return factory

    return deco


def make_handler(kind: str, config: GateConfig, store):
    if kind not in JOB_HANDLERS:
        known = ", ".join(sorted(JOB_HANDLERS))
        extra = f" ({kind} is reserved for a later release)" if kind in RESERVED else ""
        raise ConfigError(f"no evidence job handler {kind!r}{extra}; available: {known}")
    return JOB_HANDLERS[kind](config, store)


def check_plan(evidence_jobs: tuple[str, ...]) -> None:
    for kind in evidence_jobs:
        if kind not in JOB_HANDLERS:
            make_handler(kind, None, None)  # raises with the list of kinds


def _sync_offset(event: dict) -> float:
    """The offset keyframes are aligned with: gate C's estimate when confident, else the claim."""
    sync = event.get("sync") or {}
    est, conf = sync.get("estimated_offset_ms"), sync.get("sync_confidence")
    if est is not None and conf is not None and conf >= 0.5:
        return float(est)
    return float(sync.get("claimed_offset_ms") or 0.0)


@register_job("pose")
def pose_handler(config: GateConfig, store):
    from gpu_consumers.gate_f_pose import check_pose, video_subject
    from gpu_consumers.pose import get_pose_estimator

    estimator = None  # built on first use: bundles whose video shows a robot never need it

    def handle(view, event) -> GateResult:
        nonlocal estimator
        if estimator is None and video_subject(view.manifest) == "human":
            estimator = get_pose_estimator("mediapipe")
        return check_pose(view, config, estimator)

    return handle


@register_job("ik")
def ik_handler(config: GateConfig, store):
    from gpu_consumers.ik import IKSolver, check_ik
    from kibotos.robots import get_robot

    solvers: dict[tuple[str, str], IKSolver] = {}

    def handle(view, event) -> GateResult:
        m = view.manifest
        key = (m.robot_model_id, m.robot_model_revision)
        if key not in solvers:
            solvers[key] = IKSolver(get_robot(*key))
        return check_ik(view, config, solvers[key])

    return handle


@register_job("playback")
def playback_handler(config: GateConfig, store):
    from gpu_consumers.playback import PlaybackRenderer, run_playback
    from kibotos.robots import get_robot

    renderers: dict[tuple[str, str], PlaybackRenderer] = {}

    def handle(view, event) -> GateResult:
        m = view.manifest
        key = (m.robot_model_id, m.robot_model_revision)
        if key not in renderers:
            renderers[key] = PlaybackRenderer(get_robot(*key))
        return run_playback(view, _sync_offset(event), renderers[key], store, f"keyframes/{event['submission_id']}")

    return handle
