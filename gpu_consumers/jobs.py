"""The evidence job kinds and their handlers: ``handler(view, event) -> GateResult``.

A handler object is built once per Ray actor and keeps its expensive state warm (the
pose model, IK solvers per robot, Genesis scenes per robot). Each kind is registered
once (``evidence_job``): its handler factory ``(config, store, settings) -> handler`` in
``JOB_HANDLERS`` and a ``JobSpec`` in the job registry (``gpu_consumers.registry``) whose
stage is a ``streams.stages.JobStage`` around the handler, consuming ``jobs.<kind>``.
Kinds with a topic but no handler yet (train) are ``RESERVED`` so a misconfigured plan
fails loudly instead of stalling. The VLM is not a job kind: it is a provider
(``kibotos.vlm``) used by the ``align`` job.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from gpu_consumers.registry import EVIDENCE_GATES, RESERVED, JobSpec, get_job, job_specs, register_job  # noqa: F401
from kibotos.config.gates import GateConfig
from kibotos.errors import ConfigError
from kibotos.reports.model import GateResult

HandlerFactory = Callable[..., Callable]
JOB_HANDLERS: dict[str, HandlerFactory] = {}


def _evidence_stage(kind: str, settings, catalogue, store):
    """The ``JobSpec.build_stage`` of an evidence kind: its handler in a ``JobStage``."""
    from kibotos.config.gates import load_config
    from streams.stages import JobStage

    handler = make_handler(kind, load_config(settings.gate_config_path), store, settings)
    return JobStage(kind, handler, catalogue, store, settings.evidence_jobs)


def evidence_job(kind: str):
    """Register the handler factory of evidence kind ``kind`` (one of ``EVIDENCE_GATES``)."""

    def deco(factory: HandlerFactory) -> HandlerFactory:
        JOB_HANDLERS[kind] = factory
        register_job(JobSpec(kind=kind, input_topic=f"jobs.{kind}", gate=EVIDENCE_GATES[kind],
                             build_stage=functools.partial(_evidence_stage, kind)))
        return factory

    return deco


def make_handler(kind: str, config: GateConfig, store, settings):
    """The handler of evidence kind ``kind``, built from ``settings`` (``kibotos.config.settings.
    Settings``: handlers never read the environment themselves)."""
    if kind not in JOB_HANDLERS:
        known = ", ".join(sorted(JOB_HANDLERS))
        extra = f" ({kind} is reserved for a later release)" if kind in RESERVED else ""
        raise ConfigError(f"no evidence job handler {kind!r}{extra}; available: {known}")
    return JOB_HANDLERS[kind](config, store, settings)


def check_plan(kinds: tuple[str, ...]) -> None:
    """Every kind of a plan is registered (raises ``ConfigError`` naming the known kinds)."""
    for kind in kinds:
        if get_job(kind).family != "evidence":
            raise ConfigError(f"job kind {kind!r} is not an evidence job (family {get_job(kind).family}); "
                              f"evidence kinds: {', '.join(EVIDENCE_GATES)}")


@evidence_job("pose")
def pose_handler(config: GateConfig, store, settings):
    from gpu_consumers.gate_f_pose import check_pose, video_subject
    from gpu_consumers.pose import get_pose_estimator

    estimator = None  # built on first use: bundles whose video shows a robot never need it

    def handle(view, event) -> GateResult:
        nonlocal estimator
        if estimator is None and video_subject(view.manifest) == "human":
            estimator = get_pose_estimator("mediapipe")
        return check_pose(view, config, estimator)

    return handle


@evidence_job("ik")
def ik_handler(config: GateConfig, store, settings):
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


@evidence_job("playback")
def playback_handler(config: GateConfig, store, settings):
    from gpu_consumers.playback import PlaybackRenderer, run_playback
    from kibotos.robots import get_robot

    renderers: dict[tuple[str, str], PlaybackRenderer] = {}

    def handle(view, event) -> GateResult:
        m = view.manifest
        key = (m.robot_model_id, m.robot_model_revision)
        if key not in renderers:
            renderers[key] = PlaybackRenderer(get_robot(*key), cache_dir=settings.genesis_cache_dir,
                                              gl_platform=settings.gl_platform)
        return run_playback(view, event.sync_offset(config.gate_c.high_confidence), renderers[key], store,
                            f"keyframes/{event.submission_id}", keyframe_config=config.keyframes)

    return handle


@evidence_job("task")
def task_handler(config: GateConfig, store, settings):
    """Task completion (``kibotos.tasks``): the declared task's phases and success
    predicates judged from the kinematics and object streams. CPU only; it runs with the
    evidence jobs because it reads the same bundle and feeds S_task / S_object."""
    from kibotos.tasks import evaluate_task

    def handle(view, event) -> GateResult:
        return evaluate_task(view)

    return handle


@evidence_job("align")
def align_handler(config: GateConfig, store, settings):
    """Alignment evidence (``gpu_consumers.alignment``) after playback. Its thresholds and
    the VLM calibration table come from the alignment config, the VLM provider from
    the settings (``vlm_*``; none configured: non-VLM evidence only); both built once."""
    from gpu_consumers.alignment import check_alignment
    from kibotos.config.alignment import load_alignment_config
    from kibotos.vlm import get_provider

    align_config = load_alignment_config(settings.alignment_config_path)
    vlm = get_provider(settings, align_config.vlm)

    def handle(view, event) -> GateResult:
        return check_alignment(view, event, store, align_config, vlm,
                               sync_trusted=config.gate_c.high_confidence if config else None)

    return handle
