"""The job registry: one ``JobSpec`` per job kind the GPU consumer group can run.

A job family plugs in by registering its kinds from its own module; the consumer
(``gpu_consumers.consumer``) never names a kind or a family::

    register_job(JobSpec(kind="xgen_pose", input_topic="xgen.requests",
                         build_stage=lambda settings, catalogue, store: XGenPoseStage(...),
                         family="xgen"))

- ``kind``: the job kind, unique across families (what ``--kinds`` and the Ray actors name).
- ``input_topic``: the catalogue topic id the kind consumes (``"jobs.ik"``).
- ``build_stage(settings, catalogue, store) -> Stage``: called once per Ray actor, so the
  stage may keep a model or scene warm. Its ``handle(record)`` returns the ``Output``s the
  consumer publishes (``streams.stage``: the stage contract).
- ``gate``: the id of the result the job writes into a submission's report (evidence jobs:
  ``"ik_residual"``, ...), ``None`` for jobs that write none.
- ``family``: ``"evidence"`` for the verifier's evidence jobs; other families (``"xgen"``)
  have their own topics and events.

The modules in ``JOB_MODULES`` register on import (``load_jobs``); a listed module that does
not exist (a family not installed) is skipped.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kibotos.errors import ConfigError

# modules whose import registers job kinds
JOB_MODULES = ("gpu_consumers.jobs", "gpu_consumers.xgen_jobs", "gpu_consumers.training_jobs",
               "gpu_consumers.policy_eval_jobs")
# kinds with a topic but no handler yet: a plan naming them fails loudly instead of stalling
# (``train`` was one until it became the XMimic training job, gpu_consumers.training_jobs)
RESERVED: tuple[str, ...] = ()
# every evidence kind (registered in gpu_consumers.jobs), in the order of its topic declarations, with the id of the result it
# writes into a report: the one place these ids are spelled (scoring, dashboards, the
# catalogue, the demo and the report pages import them from here)
EVIDENCE_GATES: dict[str, str] = {
    "pose": "gate_f_pose",
    "ik": "ik_residual",
    "playback": "playback",
    "align": "alignment",
    "task": "task_completion",
}

StageFactory = Callable[[Any, Any, Any], Any]  # (Settings, Catalogue, store) -> Stage


@dataclass(frozen=True)
class JobSpec:
    kind: str
    input_topic: str
    build_stage: StageFactory
    gate: str | None = None
    family: str = "evidence"


_JOBS: dict[str, JobSpec] = {}


def register_job(spec: JobSpec) -> JobSpec:
    """Add ``spec``; registering the same kind twice with another spec is a bug."""
    known = _JOBS.get(spec.kind)
    if known is not None and known != spec:
        raise ValueError(f"job kind {spec.kind} registered twice")
    _JOBS[spec.kind] = spec
    return spec


def load_jobs() -> None:
    for name in JOB_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the module exists but an import inside it failed
                raise


def job_specs(family: str | None = None) -> list[JobSpec]:
    """Every registered job (of ``family``), in registration order."""
    load_jobs()
    return [s for s in _JOBS.values() if family is None or s.family == family]


def get_job(kind: str) -> JobSpec:
    load_jobs()
    if kind not in _JOBS:
        known = ", ".join(sorted(_JOBS))
        extra = f" ({kind} is reserved for a later release)" if kind in RESERVED else ""
        raise ConfigError(f"no job handler {kind!r}{extra}; available: {known}")
    return _JOBS[kind]
