"""Task schemas (design §9): what a demonstration of ``task_id`` v``task_version`` must show.

A schema is data (``kibotos/tasks/schemas/<task_id>.v<task_version>.yaml``), versioned
with the thresholds it holds: changing a threshold is a new ``task_version``, and every
task result records the version that judged it. It declares:

* ``robot_models`` — the models it applies to: ``"<model_id>"`` (every revision) or
  ``"<model_id>@<revision>"``;
* ``object`` — the name of the manipulated object stream (``objects/<name>``), or
  ``None``: the object stream that moves the most;
* ``phases`` — the expected order of observable events (``PhaseEvent``), judged on the
  object stream (and contacts / kinematics for the grasp);
* ``predicates`` — the success checklist; each has a stable ``name`` and a ``kind``:

  ``grasp_detected``   a grasp lasting ``min_duration_ms``: from ``contacts/<link>``
                       streams when present, otherwise inferred — the object in transit
                       (away from both rest poses) with an end-effector link (forward
                       kinematics of the submitted joints) within ``near_m`` of it on
                       ``min_near_fraction`` of those frames, moving rigidly with it
                       (p95 drift of the object in the link's frame ≤ ``rigid_tol_m``)
  ``object_lifted``    the object ≥ ``min_height_m`` above its starting height, for at
                       least ``min_duration_ms`` in one stretch
  ``object_displaced`` final rest position ≥ ``min_m`` from the start (``axes`` xy or xyz)
  ``object_in_region`` final rest position inside the box ``min``..``max`` of ``frame``
                       (``robot_base``, or ``object_start``: relative to where it began);
                       a ``null`` bound leaves that side open
  ``object_released``  no grasp over the last ``min_rest_ms`` and the object at rest there

* ``tolerances`` — ``time_ms`` (events may be out of order by this much),
  ``position_m`` (an object within this of a rest pose is at rest there; the scale of a
  predicate's confidence margin), ``never_moved_m`` (see below);
* ``evidence`` — ``inferred_grasp_confidence``: the weight of a grasp inferred from
  kinematics against a recorded contact; ``min_object_coverage``: the fraction of the
  kinematics an object stream must cover for the hard reject below.

**Hard reject vs soft signal.** Task evidence is a noisy label, so a task result rejects
(``passed=False``, ``task_object_not_moved``) only when the evidence is unambiguous that
the task failed: the manipulated object's own stream covers at least
``min_object_coverage`` of the kinematics and the object never leaves a ball of radius
``never_moved_m`` around its starting position — nothing was picked up, whatever else the
bundle claims. Everything else — a lift below the threshold, no grasp detected, a missing
phase, events out of order, no object stream at all — is a soft signal: the checklist
fraction, the phase order and the confidence ``s_task_evidence`` feed ``S_task``.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

PhaseEvent = Literal["grasp", "lift", "hold", "carry", "place", "release"]
"""Observable events: ``grasp`` (grasp onset), ``lift`` (first at the lift height of the
``object_lifted`` predicate), ``hold`` (its minimum duration aloft reached), ``carry``
(first ``min_m`` from the start, ``object_displaced``), ``place`` (the final rest begins),
``release`` (the last grasp ends)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Predicate(_Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")


class GraspDetected(_Predicate):
    kind: Literal["grasp_detected"]
    min_duration_ms: float = Field(ge=0)
    near_m: float = Field(gt=0)
    min_near_fraction: float = Field(gt=0, le=1)
    rigid_tol_m: float = Field(gt=0)


class ObjectLifted(_Predicate):
    kind: Literal["object_lifted"]
    min_height_m: float = Field(gt=0)
    min_duration_ms: float = Field(default=0.0, ge=0)


class ObjectDisplaced(_Predicate):
    kind: Literal["object_displaced"]
    min_m: float = Field(gt=0)
    axes: Literal["xy", "xyz"] = "xy"


class ObjectInRegion(_Predicate):
    kind: Literal["object_in_region"]
    frame: Literal["robot_base", "object_start"]
    min: tuple[float | None, float | None, float | None]
    max: tuple[float | None, float | None, float | None]

    @model_validator(mode="after")
    def _ordered(self) -> "ObjectInRegion":
        if any(lo is not None and hi is not None and lo > hi for lo, hi in zip(self.min, self.max)):
            raise ValueError(f"region {self.name}: min {self.min} exceeds max {self.max}")
        return self


class ObjectReleased(_Predicate):
    kind: Literal["object_released"]
    min_rest_ms: float = Field(gt=0)


_P = TypeVar("_P", bound=_Predicate)

Predicate = Annotated[GraspDetected | ObjectLifted | ObjectDisplaced | ObjectInRegion | ObjectReleased,
                      Field(discriminator="kind")]


class Phase(_Frozen):
    name: str
    event: PhaseEvent


class Tolerances(_Frozen):
    time_ms: float = Field(ge=0)
    position_m: float = Field(gt=0)
    never_moved_m: float = Field(gt=0)


class EvidenceRules(_Frozen):
    inferred_grasp_confidence: float = Field(ge=0, le=1)
    min_object_coverage: float = Field(gt=0, le=1)


class TaskSchema(_Frozen):
    """One versioned task definition (see the module docstring for every field)."""

    task_id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    task_version: str = Field(min_length=1)
    title: str
    description: str = ""
    robot_models: tuple[str, ...] = Field(min_length=1)
    object: str | None = None
    phases: tuple[Phase, ...] = Field(min_length=1)
    predicates: tuple[Predicate, ...] = Field(min_length=1)
    tolerances: Tolerances
    evidence: EvidenceRules

    @model_validator(mode="after")
    def _consistent(self) -> "TaskSchema":
        names = [p.name for p in self.predicates]
        if len(names) != len(set(names)):
            raise ValueError(f"predicate names repeat: {names}")
        # the events whose threshold a predicate holds
        needs = {"lift": "object_lifted", "hold": "object_lifted", "carry": "object_displaced"}
        kinds = {p.kind for p in self.predicates}
        for phase in self.phases:
            kind = needs.get(phase.event)
            if kind and kind not in kinds:
                raise ValueError(f"phase {phase.name!r} (event {phase.event}) needs an {kind} predicate "
                                 "for its threshold")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.task_id, self.task_version)

    def applies_to(self, model_id: str, revision: str) -> bool:
        return model_id in self.robot_models or f"{model_id}@{revision}" in self.robot_models

    def first(self, kind: type[_P]) -> _P | None:
        """The first predicate of ``kind`` (its thresholds define the matching events)."""
        return next((p for p in self.predicates if isinstance(p, kind)), None)

    def require(self, kind: type[_P]) -> _P:
        """``first(kind)`` for the phase events that need it: ``_consistent`` already
        refused a schema whose phases need a predicate it lacks."""
        p = self.first(kind)
        if p is None:
            raise ValueError(f"task {self.task_id} v{self.task_version} has no {kind.__name__} predicate")
        return p
