"""Task completion (design §9): judge a bundle against its task schema from the object
stream, the contact streams and the forward kinematics of the submitted joints.

``evaluate_task(view, schema=None) -> GateResult(gate="task_completion")``; with no
``schema`` the manifest's ``task`` is looked up in the packaged registry.

Not applicable (``passed=True``, ``metrics.applicable = False``, ``metrics.reason``):
no task in the manifest (flag ``task_not_declared``), a task the registry does not know
(``task_unknown``), a task that does not apply to the robot (``task_robot_mismatch``).

Applicable — metrics:

* ``object`` (the judged stream: the schema's, else the one that moves most),
  ``object_streams``, ``unused_streams``, ``coverage_fraction`` (of the kinematics),
  ``max_displacement_m``;
* ``grasp_evidence`` (``contacts`` | ``inferred`` | None), ``end_effector_link``;
* ``predicates`` — per predicate ``{name, kind, passed (None: no evidence), value,
  threshold, confidence}``; ``checklist_fraction`` (passed / all; None without object
  evidence);
* ``phases`` — ``{name, event, t_ms (None: not observed)}`` in schema order;
  ``phase_order_ok`` (every phase observed, each no earlier than the previous one minus
  ``tolerances.time_ms``; None without object evidence);
* ``s_task_evidence`` in [0, 1] — confidence in the checklist: the mean over predicates
  of how far each value sits from its threshold (``|value - threshold|`` over the
  position or time tolerance, capped at 1; 0 for a predicate without evidence), times
  ``evidence.inferred_grasp_confidence`` when the grasp was inferred rather than
  recorded (no object stream: 0);
* ``object_state`` — the consistency facts ``S_object`` reads (``kibotos.scoring``):
  ``tracking_noise_m``, ``unexplained_motion_fraction`` (of the transit frames, those
  no grasp explains: not grasped, or no end effector within ``near_m``), ``hold_drift_m`` (rigidity in the
  end effector's frame while grasped), ``max_step_speed_m_s``; None without an object
  stream.

Verdict: ``task_object_not_moved`` — the only hard reject, see ``kibotos.tasks.schema``.
"""

from __future__ import annotations

import numpy as np

from gpu_consumers.registry import EVIDENCE_GATES
from kibotos.bundle.reader import JOINT_POS, TIMESTAMPS, BundleView
from kibotos.errors import BundleError
from kibotos.reports.model import GateResult
from kibotos.robots import RobotModel, get_robot
from kibotos.robots.kinematics import serial_kinematics_for
from kibotos.tasks.objects import (
    Attachment,
    Motion,
    Track,
    attachment,
    contact_mask,
    longest_run_ms,
    motion,
    read_tracks,
    runs,
)
from kibotos.tasks.registry import UnknownTask, get_task
from kibotos.tasks.schema import (
    GraspDetected,
    ObjectDisplaced,
    ObjectInRegion,
    ObjectLifted,
    ObjectReleased,
    TaskSchema,
)

GATE_ID = EVIDENCE_GATES["task"]


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def _not_applicable(reason: str, flag: str, **extra) -> GateResult:
    return GateResult(gate=GATE_ID, passed=True, metrics={"applicable": False, "reason": reason, **extra},
                      flags=[flag])


def _joints(view: BundleView, robot: RobotModel) -> tuple[np.ndarray, np.ndarray]:
    """Kinematic times and full-robot joint positions (joints the bundle lacks: home)."""
    m = view.manifest
    kin_t = view.read(TIMESTAMPS).astype(np.float64)
    q_in = view.read(JOINT_POS).astype(np.float64)
    if kin_t.ndim != 1 or len(kin_t) < 2 or np.any(np.diff(kin_t) <= 0):
        raise BundleError("kinematics timestamps are not strictly increasing", reason_code="timestamps_not_increasing")
    if q_in.shape != (len(kin_t), len(m.joint_names)) or not np.isfinite(q_in).all():
        raise BundleError(f"joint_pos has shape {q_in.shape} or non-finite values", reason_code="shape_mismatch")
    unknown = [n for n in m.joint_names if n not in robot.joint_names]
    if unknown:
        raise BundleError(f"joints unknown to {robot.model_id}: {unknown[:5]}", reason_code="unknown_joint_names")
    q = np.tile(robot.home_qpos, (len(kin_t), 1))
    q[:, [robot.joint_names.index(n) for n in m.joint_names]] = q_in
    return kin_t, q


def _link_poses(robot: RobotModel, links: list[str], kin_t: np.ndarray, q: np.ndarray, t: np.ndarray
                ) -> dict[str, np.ndarray]:
    """(N, 4, 4) poses of each usable link at times ``t`` (joints interpolated linearly)."""
    t = np.clip(t, kin_t[0], kin_t[-1])
    idx = np.clip(np.searchsorted(kin_t, t, side="right") - 1, 0, len(kin_t) - 2)
    w = ((t - kin_t[idx]) / (kin_t[idx + 1] - kin_t[idx]))[:, None]
    q_at = q[idx] * (1 - w) + q[idx + 1] * w
    out = {}
    for link in links:
        try:
            out[link] = serial_kinematics_for(robot.model_id, robot.revision, link).link_poses(q_at)
        except ValueError:  # not a link of this robot: that claim gives no evidence
            continue
    return out


def _confidence(value: float | None, threshold: float, scale: float) -> float:
    return 0.0 if value is None else float(min(1.0, abs(value - threshold) / scale))


class _Judge:
    """The facts of one (track, schema) pair, and the predicates and phases read from them."""

    def __init__(self, view: BundleView, schema: TaskSchema, robot: RobotModel, track: Track, kin_t: np.ndarray,
                 q: np.ndarray):
        self.schema, self.track, self.tol = schema, track, schema.tolerances
        self.t = track.t_ms
        self.motion: Motion = motion(track, self.tol.position_m)
        contacts, contact_links = contact_mask(view, track, kin_t)
        if contacts is not None:
            self.grasp_source, self.grasped = "contacts", contacts
        else:
            self.grasp_source, self.grasped = "inferred", self.motion.in_transit
        links = [link for link in dict.fromkeys([track.grasp_link, *contact_links, *robot.end_effector_links]) if link]
        grasp = schema.first(GraspDetected)
        self.near_m = grasp.near_m if grasp else self.tol.position_m
        self.poses = _link_poses(robot, links, kin_t, q, self.t)
        self.attach: Attachment | None = attachment(track, self.grasped, self.poses, self.near_m)
        self.height = track.pos[:, 2] - self.motion.start[2]

    # --- predicates: (passed, value, threshold, confidence) ---------------------------

    def grasp_detected(self, p: GraspDetected) -> tuple:
        duration, _ = longest_run_ms(self.t, self.grasped)
        a = self.attach
        value = {"duration_ms": _r(duration, 1), "near_fraction": _r(a.near_fraction) if a else None,
                 "rigid_drift_m": _r(a.rigid_drift_m) if a else None}
        threshold = {"min_duration_ms": p.min_duration_ms, "min_near_fraction": p.min_near_fraction,
                     "rigid_tol_m": p.rigid_tol_m}
        if a is None:
            return False, value, threshold, _confidence(duration, p.min_duration_ms, self.tol.time_ms)
        passed = duration >= p.min_duration_ms and a.near_fraction >= p.min_near_fraction \
            and a.rigid_drift_m <= p.rigid_tol_m
        conf = min(_confidence(duration, p.min_duration_ms, self.tol.time_ms),
                   _confidence(a.near_fraction, p.min_near_fraction, 0.1),
                   _confidence(a.rigid_drift_m, p.rigid_tol_m, self.tol.position_m))
        return passed, value, threshold, conf

    def lifted_run(self, p: ObjectLifted) -> tuple[float, int | None]:
        return longest_run_ms(self.t, self.height >= p.min_height_m)

    def object_lifted(self, p: ObjectLifted) -> tuple:
        aloft, _ = self.lifted_run(p)
        top = float(self.height.max())
        passed = top >= p.min_height_m and aloft >= p.min_duration_ms
        conf = _confidence(top, p.min_height_m, self.tol.position_m)
        if p.min_duration_ms > 0:
            conf = min(conf, _confidence(aloft, p.min_duration_ms, self.tol.time_ms))
        return passed, {"max_height_m": _r(top), "longest_aloft_ms": _r(aloft, 1)}, \
            {"min_height_m": p.min_height_m, "min_duration_ms": p.min_duration_ms}, conf

    def _shift(self, axes: str) -> np.ndarray:
        d = self.track.pos - self.motion.start
        return np.linalg.norm(d[:, :2] if axes == "xy" else d, axis=1)

    def object_displaced(self, p: ObjectDisplaced) -> tuple:
        end = self.motion.end - self.motion.start
        value = float(np.linalg.norm(end[:2] if p.axes == "xy" else end))
        return value >= p.min_m, _r(value), p.min_m, _confidence(value, p.min_m, self.tol.position_m)

    def object_in_region(self, p: ObjectInRegion) -> tuple:
        pos = self.motion.end - (self.motion.start if p.frame == "object_start" else 0.0)
        lo = np.array([-np.inf if v is None else v for v in p.min])
        hi = np.array([np.inf if v is None else v for v in p.max])
        inside = bool(np.all((pos >= lo) & (pos <= hi)))
        # distance to the nearest face (inside) or beyond the farthest violated one (outside)
        gap = float(np.min(np.minimum(pos - lo, hi - pos))) if inside else \
            float(np.max(np.maximum(lo - pos, pos - hi)))
        return inside, [_r(x) for x in pos], {"frame": p.frame, "min": list(p.min), "max": list(p.max)}, \
            float(min(1.0, abs(gap) / self.tol.position_m))

    def object_released(self, p: ObjectReleased) -> tuple:
        free = ~self.grasped
        if self.motion.place_index is not None:
            free &= np.arange(len(self.t)) >= self.motion.place_index
        tail = runs(free)
        rest = float(self.t[-1] - self.t[tail[-1][0]]) if tail and tail[-1][1] == len(self.t) - 1 else 0.0
        return rest >= p.min_rest_ms, _r(rest, 1), p.min_rest_ms, _confidence(rest, p.min_rest_ms, self.tol.time_ms)

    # --- phase events (kinematic ms, None: not observed) ------------------------------

    def event(self, name: str) -> float | None:
        t, s = self.t, self.schema
        if name == "grasp":
            return float(t[np.argmax(self.grasped)]) if self.grasped.any() else None
        if name == "release":
            grasp_runs = runs(self.grasped)
            if not grasp_runs or grasp_runs[-1][1] == len(t) - 1:
                return None
            return float(t[grasp_runs[-1][1] + 1])
        if name == "place":
            return None if self.motion.place_index is None else float(t[self.motion.place_index])
        if name in ("lift", "hold"):
            p = s.require(ObjectLifted)
            above = self.height >= p.min_height_m
            if name == "lift":
                return float(t[np.argmax(above)]) if above.any() else None
            aloft, start = self.lifted_run(p)
            return None if start is None or aloft < p.min_duration_ms else float(t[start] + p.min_duration_ms)
        if name == "carry":
            d = s.require(ObjectDisplaced)
            far = self._shift(d.axes) >= d.min_m
            return float(t[np.argmax(far)]) if far.any() else None
        raise ValueError(f"unknown phase event {name!r}")

    def object_state(self) -> dict:
        m, a = self.motion, self.attach
        transit = m.in_transit
        explained = self.grasped.copy()
        if a is not None:  # a grasp explains motion only with the hand at the object
            link = self.poses[a.link]
            explained &= np.linalg.norm(link[:, :3, 3] - self.track.pos, axis=1) <= self.near_m
        return {
            "tracking_noise_m": _r(m.tracking_noise_m, 5),
            "unexplained_motion_fraction": _r(float(np.mean(transit & ~explained) / max(np.mean(transit), 1e-12))
                                              if transit.any() else 0.0),
            "hold_drift_m": _r(a.rigid_drift_m, 5) if a else None,
            "max_step_speed_m_s": _r(m.max_step_speed_m_s, 3),
            "transit_frames": int(transit.sum()),
            "frames": int(len(self.t)),
        }


_PREDICATES: dict[type, str] = {GraspDetected: "grasp_detected", ObjectLifted: "object_lifted", ObjectDisplaced: "object_displaced",
               ObjectInRegion: "object_in_region", ObjectReleased: "object_released"}


def _resolve(view: BundleView, schema: TaskSchema | None) -> TaskSchema | GateResult:
    if schema is not None:
        return schema
    task = view.manifest.task
    if task is None:
        return _not_applicable("no task declared in the manifest", "task_not_declared", task_id=None)
    try:
        return get_task(task.task_id, task.task_version)
    except UnknownTask as exc:
        return _not_applicable(str(exc), "task_unknown", task_id=task.task_id, task_version=task.task_version)


def evaluate_task(view: BundleView, schema: TaskSchema | None = None) -> GateResult:
    """The task completion result of one bundle (see the module docstring)."""
    resolved = _resolve(view, schema)
    if isinstance(resolved, GateResult):
        return resolved
    schema = resolved
    m = view.manifest
    ids = {"task_id": schema.task_id, "task_version": schema.task_version}
    thresholds = schema.model_dump(include={"predicates", "tolerances", "evidence"}) | ids
    if not schema.applies_to(m.robot_model_id, m.robot_model_revision):
        res = _not_applicable(f"task {schema.task_id} v{schema.task_version} does not apply to "
                              f"{m.robot_model_id}@{m.robot_model_revision} (applies to {list(schema.robot_models)})",
                              "task_robot_mismatch", **ids)
        return res.model_copy(update={"thresholds": thresholds})
    robot = get_robot(m.robot_model_id, m.robot_model_revision)
    kin_t, q = _joints(view, robot)
    tracks, notes = read_tracks(view)
    if schema.object is not None:
        tracks = [t for t in tracks if t.name == schema.object]
    metrics: dict = {"applicable": True, **ids, "robot": f"{robot.model_id}@{robot.revision}",
                     "object_streams": [t.name for t in tracks], "unused_streams": notes}
    if not tracks:
        want = f"objects/{schema.object}" if schema.object else "an objects/<name> stream"
        metrics |= {"object": None, "reason": f"no usable object evidence ({want}): the task cannot be judged "
                                              "from kinematics alone",
                    "grasp_evidence": None, "end_effector_link": None, "checklist_fraction": None,
                    "predicates": [{"name": p.name, "kind": p.kind, "passed": None, "value": None,
                                    "threshold": None, "confidence": 0.0} for p in schema.predicates],
                    "phases": [{"name": ph.name, "event": ph.event, "t_ms": None} for ph in schema.phases],
                    "phase_order_ok": None, "s_task_evidence": 0.0, "object_state": None, "failed_checks": []}
        return GateResult(gate=GATE_ID, passed=True, metrics=metrics, thresholds=thresholds,
                          flags=["task_no_object_evidence"])

    displacement = {t.name: motion(t, schema.tolerances.position_m).max_displacement_m for t in tracks}
    track = max(tracks, key=lambda t: displacement[t.name])
    judge = _Judge(view, schema, robot, track, kin_t, q)
    overlap = min(track.t_ms[-1], kin_t[-1]) - max(track.t_ms[0], kin_t[0])
    coverage = float(np.clip(overlap / max(kin_t[-1] - kin_t[0], 1e-9), 0.0, 1.0))

    predicates, confidences = [], []
    for p in schema.predicates:
        passed, value, threshold, conf = getattr(judge, _PREDICATES[type(p)])(p)
        predicates.append({"name": p.name, "kind": p.kind, "passed": bool(passed), "value": value,
                           "threshold": threshold, "confidence": _r(conf)})
        confidences.append(conf)
    times = [_r(judge.event(ph.event), 1) for ph in schema.phases]
    phases = [{"name": ph.name, "event": ph.event, "t_ms": t} for ph, t in zip(schema.phases, times)]
    known = [t for t in times if t is not None]
    order_ok = len(known) == len(times) and \
        all(b >= a - schema.tolerances.time_ms for a, b in zip(known, known[1:]))
    factor = 1.0 if judge.grasp_source == "contacts" else schema.evidence.inferred_grasp_confidence
    metrics |= {
        "object": track.name,
        "coverage_fraction": _r(coverage),
        "max_displacement_m": _r(displacement[track.name]),
        "grasp_evidence": judge.grasp_source,
        "end_effector_link": judge.attach.link if judge.attach else None,
        "predicates": predicates,
        "checklist_fraction": _r(float(np.mean([p["passed"] for p in predicates]))),
        "phases": phases,
        "phase_order_ok": order_ok,
        "s_task_evidence": _r(factor * float(np.mean(confidences))),
        "object_state": judge.object_state(),
    }
    failed = [p["name"] for p in predicates if not p["passed"]]
    metrics["failed_checks"] = failed
    never_moved = displacement[track.name] < schema.tolerances.never_moved_m
    if never_moved and coverage >= schema.evidence.min_object_coverage:
        return GateResult(gate=GATE_ID, passed=False, metrics=metrics, thresholds=thresholds,
                          reason_code="task_object_not_moved")
    flags = ["task_incomplete"] if failed or not order_ok else []
    return GateResult(gate=GATE_ID, passed=True, metrics=metrics, thresholds=thresholds, flags=flags)
