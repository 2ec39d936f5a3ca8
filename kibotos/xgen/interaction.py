"""Stage ``interaction`` (cargo pickup with a procedural cuboid box): from a retargeted
G1 motion to a consistent robot + box clip.

Sub-steps (the seed's interaction/ boundaries):

- **segment**: the hold is the longest stretch where both palms are ahead of the pelvis
  at a nearly constant distance (the box width) — or the annotation's ``ts``/``te``
  (seconds). Inside it the palms' midpoint height splits grasp (box still on the floor),
  lift, carry and place; before it is approach, after it release.
- **object_init**: box pose and size from the palms during grasp — width = palm
  distance, height = twice the grasp height (it rests on the floor), yaw from the palm
  line; depth (not visible from the hands) from config, shrunk until the box clears the
  robot's pelvis and torso collision meshes.
- **anchors**: each palm's point on its face (left palm on the box's +y face, right on
  -y), fixed in the box frame.
- **box motion while held**: rigidly attached to the palms' frame from lift to place,
  never below the floor.
- **force_closure_refine**: per held frame, a small IK correction (feet held, the pelvis
  may give a little) puts each palm on its anchor with its palm normal opposing the
  face normal.
- **noncontact_sim**: where no hand holds the box it rests; released, it moves by
  physics (``kibotos.xgen.noncontact``): a rigid box on the floor in Genesis, released with
  the hands' velocity (``interaction.noncontact_sim: genesis``), or the pure analytic
  fallback (vertical free fall, g from config, flat on landing; ``analytic``).
- **contact_synth**: a per-frame contact graph over ``CONTACT_PAIRS``.

Reason codes: ``xgen_annotation_invalid`` (ts/te missing, not numbers, or out of
order), ``xgen_no_grasp`` (no hold found), ``xgen_no_lift`` (the box never leaves
the floor), ``xgen_box_collides_robot`` (no box depth clears the torso),
``xgen_grasp_unreachable`` (palms stay off their faces after refining).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mink
import mujoco
import numpy as np

from kibotos.xgen import g1
from kibotos.xgen.config import InteractionConfig, XGenConfig
from kibotos.xgen.phases import PHASE_ID
from kibotos.xgen.result import StageResult, XGenError, run_stage
from kibotos.xgen.retarget import RobotMotion

CONTACT_PAIRS = (("left_palm", "box"), ("right_palm", "box"), ("box", "ground"), ("left_foot", "ground"),
                 ("right_foot", "ground"))


@dataclass(frozen=True)
class Hold:
    start: int  # first held frame
    lift: int  # first frame of lift
    carry: int  # first frame of carry
    place: int  # first frame of place
    end: int  # last held frame


@dataclass(frozen=True)
class InteractionClip:
    """A robot + box clip, world z-up, floor at z = 0."""

    qpos: np.ndarray  # (T, 36) G1 layout (kibotos.xgen.g1)
    fps: float
    object_pose: np.ndarray  # (T, 7) box centre xyz (m) + quat wxyz
    box_size: np.ndarray  # (3,) full extents x (depth), y (width, palm to palm), z (height), m
    mass_kg: float
    phase: np.ndarray  # (T,) int8, kibotos.xgen.phases.PHASES
    contact: np.ndarray  # (T, len(CONTACT_PAIRS)) uint8
    anchors: np.ndarray  # (2, 3) left/right palm anchor in the box frame, m
    hold: Hold
    annotation: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.qpos.shape[0])


def _quat(rot: np.ndarray) -> np.ndarray:
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(rot).reshape(9))
    return q


def _mat(quat: np.ndarray) -> np.ndarray:
    r = np.empty(9)
    mujoco.mju_quat2Mat(r, np.asarray(quat, float))
    return r.reshape(3, 3)


def _hands_frame(pl: np.ndarray, pr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(origin, rotation) of the palms: y from right to left palm, z as vertical as possible."""
    y = (pl - pr) / np.linalg.norm(pl - pr)
    z = np.array([0.0, 0.0, 1.0]) - y[2] * y
    z /= np.linalg.norm(z)
    return 0.5 * (pl + pr), np.stack([np.cross(y, z), y, z], axis=1)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, end) of each run of True."""
    out, start = [], None
    for t, v in enumerate(mask):
        if v and start is None:
            start = t
        if not v and start is not None:
            out.append((start, t - 1))
            start = None
    if start is not None:
        out.append((start, len(mask) - 1))
    return out


def _heading(qpos: np.ndarray) -> np.ndarray:
    """(T, 2) unit horizontal forward direction of the pelvis."""
    fwd = np.array([_mat(q[3:7])[:, 0] for q in qpos])[:, :2]
    return fwd / np.linalg.norm(fwd, axis=1, keepdims=True)


def segment(qpos: np.ndarray, palms: np.ndarray, fps: float, cfg: InteractionConfig,
            annotation: dict[str, Any] | None = None) -> Hold:
    """The hold and its phases (module docstring)."""
    n = len(qpos)
    width = np.linalg.norm(palms[:, 0] - palms[:, 1], axis=1)
    mid = palms.mean(axis=1)
    if annotation and ("ts" in annotation or "te" in annotation):
        try:
            ts, te = float(annotation["ts"]), float(annotation["te"])
        except (KeyError, TypeError, ValueError) as exc:
            raise XGenError(f"annotation needs numeric ts and te (seconds): {exc}",
                            reason_code="xgen_annotation_invalid") from exc
        if not (np.isfinite(ts) and np.isfinite(te) and 0 <= ts < te):
            raise XGenError(f"annotation ts={ts}, te={te}: need 0 <= ts < te", reason_code="xgen_annotation_invalid")
        hs = int(np.clip(round(ts * fps), 0, n - 1))
        he = int(np.clip(round(te * fps), hs, n - 1))
    else:
        forward = np.sum((mid[:, :2] - qpos[:, :2]) * _heading(qpos), axis=1)
        cand = (forward > cfg.min_forward_m) & (width > cfg.min_hold_width_m) & (width < cfg.max_hold_width_m)
        best = None
        for a, b in _runs(cand):
            ref = np.median(width[a:b + 1])
            for c, d in _runs(np.abs(width[a:b + 1] - ref) < cfg.hold_width_tolerance_m):
                if best is None or d - c > best[1] - best[0]:
                    best = (a + c, a + d)
        if best is None:
            raise XGenError("no frames where both palms hold something ahead of the body", reason_code="xgen_no_grasp")
        hs, he = best
    if (he - hs + 1) / fps < cfg.min_hold_s:
        raise XGenError(f"hold of {(he - hs + 1) / fps:.2f} s is shorter than {cfg.min_hold_s} s",
                        reason_code="xgen_no_grasp", metrics={"hold_s": (he - hs + 1) / fps})
    base = hs  # every index into z below is relative to the hold window's first frame
    z = mid[base:he + 1, 2]
    top_i = int(np.argmax(z))
    # the grasp height: the lowest the palms get before their highest point (at the hold's
    # first frame they may still be closing in from above)
    low = int(np.argmin(z[:top_i + 1]))
    z0 = z[low]
    up = low + np.nonzero(z[low:] > z0 + cfg.lift_threshold_m)[0]
    if len(up) == 0:
        raise XGenError("the palms never rise while holding: the box is not lifted", reason_code="xgen_no_lift")
    lift = base + int(up[0])
    # contact starts when the palms have come down to the grasp height, and ends when
    # they leave the height at which they put the box down
    hs = base + int(np.nonzero(z[:low + 1] <= z0 + cfg.lift_threshold_m)[0][0])
    z1 = z[top_i:].min()
    he = base + top_i + int(np.nonzero(z[top_i:] <= z1 + cfg.lift_threshold_m)[0][-1])
    high = np.nonzero(z >= z[top_i] - cfg.lift_threshold_m)[0]
    carry = max(base + int(high[0]), lift + 1)
    place = max(base + int(high[-1]) + 1, carry)
    # a hold that ends while the box is still up (released mid-carry) ends every phase there
    lift = min(lift, he)
    carry = min(carry, he)
    return Hold(start=hs, lift=lift, carry=carry, place=min(max(place, carry), he), end=he)


def phases(n: int, hold: Hold) -> np.ndarray:
    out = np.full(n, PHASE_ID["approach"], np.int8)
    out[hold.start:hold.lift] = PHASE_ID["grasp"]
    out[hold.lift:hold.carry] = PHASE_ID["lift"]
    out[hold.carry:hold.place] = PHASE_ID["carry"]
    out[hold.place:hold.end + 1] = PHASE_ID["place"]
    out[hold.end + 1:] = PHASE_ID["release"]
    return out


def init_box(palms: np.ndarray, hold: Hold) -> tuple[np.ndarray, np.ndarray]:
    """(rest pose (7,), size (3,) with depth unset = 0) from the palms during grasp."""
    grasp = palms[hold.start:max(hold.lift, hold.start + 1)]
    pl, pr = np.median(grasp[:, 0], axis=0), np.median(grasp[:, 1], axis=0)
    centre, rot = _hands_frame(pl, pr)
    y = rot[:, 1].copy()
    y[2] = 0.0
    y /= np.linalg.norm(y)
    rot = np.stack([np.cross(y, [0.0, 0.0, 1.0]), y, [0.0, 0.0, 1.0]], axis=1)
    height = 2.0 * max(centre[2], 0.02)
    pose = np.concatenate([[centre[0], centre[1], height / 2], _quat(rot)])
    return pose, np.array([0.0, float(np.linalg.norm(pl - pr)), height])


def box_trajectory(palms: np.ndarray, hold: Hold, rest: np.ndarray, size: np.ndarray, fps: float,
                   gravity: float, sim=None, mass_kg: float = 2.0) -> np.ndarray:
    """(T, 7) box poses: at rest until lift, attached to the palms until the hold ends,
    then released to the non-contact simulator ``sim`` (``kibotos.xgen.noncontact``;
    default the analytic fall) with the hands' velocity at release."""
    from kibotos.xgen.noncontact import AnalyticBox

    n = len(palms)
    out = np.tile(rest, (n, 1))
    ref = hold.lift - 1 if hold.lift > hold.start else hold.start
    o_ref, r_ref = _hands_frame(palms[ref, 0], palms[ref, 1])
    rest_rot = _mat(rest[3:])
    local_rot = r_ref.T @ rest_rot
    local_pos = r_ref.T @ (rest[:3] - o_ref)
    for t in range(hold.lift, hold.end + 1):
        o, r = _hands_frame(palms[t, 0], palms[t, 1])
        rot = r @ local_rot
        pos = o + r @ local_pos
        # the lowest corner stays on or above the floor
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * size / 2
        pos[2] += max(0.0, -(pos[2] + (corners @ rot.T)[:, 2].min()))
        out[t] = np.concatenate([pos, _quat(rot)])
    if hold.end + 1 < n:
        sim = sim or AnalyticBox(gravity)
        last = out[hold.end]
        lin_vel = (last[:3] - out[hold.end - 1, :3]) * fps if hold.end > hold.lift else np.zeros(3)
        out[hold.end + 1:] = sim.fall(last, lin_vel, np.zeros(3), size, mass_kg, n - hold.end - 1, fps)
    return out


def fit_depth(kin: g1.Kin, qpos: np.ndarray, box: np.ndarray, size: np.ndarray, cfg: InteractionConfig,
              frames: np.ndarray) -> tuple[float, float]:
    """(depth, clearance): the configured depth, shrunk until the box clears the pelvis and
    torso by ``torso_clearance_m`` over ``frames``."""
    depth = cfg.box_depth_m
    for _ in range(8):
        s = size.copy()
        s[0] = depth
        clearance = float(kin.box_torso_distance(qpos[frames], box[frames], s).min())
        if clearance >= cfg.torso_clearance_m:
            return depth, clearance
        depth -= 2.0 * (cfg.torso_clearance_m - clearance) + 0.005
        if depth < cfg.min_box_depth_m:
            break
    raise XGenError(f"no box depth >= {cfg.min_box_depth_m} m clears the torso", reason_code="xgen_box_collides_robot",
                    metrics={"clearance_m": clearance})


def anchors_for(size: np.ndarray) -> np.ndarray:
    """Palm anchors in the box frame: face centres of +y (left) and -y (right)."""
    return np.array([[0.0, size[1] / 2, 0.0], [0.0, -size[1] / 2, 0.0]])


def grasp_in_box(anchors: np.ndarray, cfg: InteractionConfig) -> np.ndarray:
    """(2, 4, 4) pose of the left and right wrist links (``*_wrist_yaw_link``) in the box
    frame while held: the rigid grasp the refine holds. Each palm centre sits on its anchor
    with its normal into the face (the link's y axis along the box's y); the fingers point
    along the box's x axis pitched down by ``-grasp_wrist_pitch_deg`` about that y axis.
    The same rule for both hands, so a mirrored clip keeps it."""
    a = np.radians(cfg.grasp_wrist_pitch_deg)
    rot = np.array([[np.cos(a), 0.0, -np.sin(a)], [0.0, 1.0, 0.0], [np.sin(a), 0.0, np.cos(a)]])
    out = np.tile(np.eye(4), (2, 1, 1))
    for k, side in enumerate(g1.SIDES):
        out[k, :3, :3] = rot
        out[k, :3, 3] = anchors[k] - rot @ np.array(g1.PALM_OFFSET[side])
    return out


def _blend(original: np.ndarray, refined: np.ndarray, first: int, last: int, n_blend: int) -> np.ndarray:
    """``refined`` (corrections on frames first..last) with the correction at each end
    faded in before ``first`` and out after ``last`` over ``n_blend`` frames (cosine ramp):
    the hands reach for the faces and leave them without a jump. The refine turns the root
    only slightly, so its quaternion correction is added and renormalised."""
    out = refined.copy()
    if n_blend < 1:
        return out
    for edge, frames in ((first, range(first - 1, max(first - n_blend, 0) - 1, -1)),
                         (last, range(last + 1, min(last + n_blend, len(original) - 1) + 1))):
        delta = refined[edge] - original[edge]
        for k, t in enumerate(frames, start=1):
            w = 0.5 * (1.0 + np.cos(np.pi * k / (n_blend + 1)))
            row = original[t] + w * delta
            # the root turn the refine made at the edge (a small one), added on the sphere
            row[3:7] /= np.linalg.norm(row[3:7])
            out[t] = row
    return out


def refine(qpos: np.ndarray, box: np.ndarray, anchors: np.ndarray, frames: range, cfg: InteractionConfig,
           fps: float) -> np.ndarray:
    """Force-closure refine: each wrist onto its rigid grasp in the box frame
    (``grasp_in_box``: palm on its anchor, palm normal opposing the face normal, a fixed
    wrist orientation — a hand does not turn on the box it carries), feet held where they
    are, the pelvis and the rest near the retargeted pose. The correction fades in and out
    over ``refine_blend_s`` around ``frames`` (no jump where the hold starts or ends)."""
    m = g1.model()
    config = mink.Configuration(m)
    palm_tasks = [mink.FrameTask(f"{s}_palm", "site", position_cost=50.0, orientation_cost=cfg.grasp_orientation_cost)
                  for s in g1.SIDES]
    # the palm normal, weighted above the rest of the orientation: force closure needs it
    normal_tasks = [mink.AxisAlignTask(f"{s}_palm", "site", axis=g1.PALM_NORMAL[s], cost=2.0) for s in g1.SIDES]
    # feet stay where they are; the pelvis may give a little (a lower box needs a deeper squat)
    hold_tasks = [mink.FrameTask(name, "body", position_cost=cost, orientation_cost=cost)
                  for name, cost in (("pelvis", 2.0), ("left_ankle_roll_link", 50.0), ("right_ankle_roll_link", 50.0))]
    posture = mink.PostureTask(m, cost=0.5)
    limits = [mink.ConfigurationLimit(m)]
    tasks = [*palm_tasks, *normal_tasks, *hold_tasks, posture]
    grasp = grasp_in_box(anchors, cfg)
    out = qpos.copy()
    dt = 1.0 / fps
    previous = None
    for t in frames:
        config.update(qpos[t])
        for task in hold_tasks:
            task.set_target(config.get_transform_frame_to_world(task.frame_name, "body"))
        posture.set_target(qpos[t])
        if previous is not None:
            # warm start: this frame's pose plus the previous frame's correction, so an
            # unconverged solve does not alternate between neighbouring frames (jerk)
            warm = qpos[t] + (out[previous] - qpos[previous])
            warm[3:7] /= np.linalg.norm(warm[3:7])
            config.update(warm)
        previous = t
        rot = _mat(box[t, 3:])
        for k, task in enumerate(palm_tasks):
            # the palm site shares the wrist link's orientation
            task.set_target(mink.SE3.from_rotation_and_translation(mink.SO3.from_matrix(rot @ grasp[k, :3, :3]),
                                                                    box[t, :3] + rot @ anchors[k]))
            # the palm faces into the box: opposite to its face's outward normal
            normal_tasks[k].set_target(-rot @ (anchors[k] / np.linalg.norm(anchors[k])))
        for _ in range(cfg.refine_iterations):
            vel = mink.solve_ik(config, tasks, dt, solver="daqp", damping=1e-2, limits=limits)
            config.integrate_inplace(vel, dt)
        out[t] = config.q
    if len(frames):
        n_blend = int(round(cfg.refine_blend_s * fps))
        out = _blend(qpos, out, frames[0], frames[-1], n_blend)
        # a faded correction is not a solved one: put the lowest sole point back where the
        # retargeted pose had it (on the floor), as the retarget stage does for every frame
        ramp = [t for t in range(max(frames[0] - n_blend, 0), min(frames[-1] + n_blend, len(qpos) - 1) + 1)
                if t not in frames]
        if ramp:
            kin = g1.Kin()
            before = kin.sole_points(qpos[ramp])[..., 2].min(axis=(1, 2))
            after = kin.sole_points(out[ramp])[..., 2].min(axis=(1, 2))
            out[ramp, 2] += before - after
    return out


def face_distances(kin: g1.Kin, qpos: np.ndarray, box: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(T, 2) distance (m) of each palm from its anchor point."""
    palms, _ = kin.palms(qpos)
    out = np.empty((len(qpos), 2))
    for t in range(len(qpos)):
        rot = _mat(box[t, 3:])
        out[t] = np.linalg.norm(palms[t] - (box[t, :3] + anchors @ rot.T), axis=1)
    return out


def contact_graph(kin: g1.Kin, qpos: np.ndarray, box: np.ndarray, size: np.ndarray, hold: Hold,
                  anchors: np.ndarray, cfg: InteractionConfig) -> np.ndarray:
    n = len(qpos)
    out = np.zeros((n, len(CONTACT_PAIRS)), np.uint8)
    dist = face_distances(kin, qpos, box, anchors)
    held = np.zeros(n, bool)
    held[hold.start:hold.end + 1] = True
    out[:, 0] = held & (dist[:, 0] < cfg.contact_tolerance_m)
    out[:, 1] = held & (dist[:, 1] < cfg.contact_tolerance_m)
    out[:, 2] = np.abs(box_bottom(box, size)) < 1e-3
    soles = kin.sole_points(qpos)[..., 2].min(axis=2)
    out[:, 3] = soles[:, 0] < 0.01
    out[:, 4] = soles[:, 1] < 0.01
    return out


def box_bottom(box: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(T,) height of the box's lowest corner."""
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * size / 2
    return np.array([p[2] + (corners @ _mat(p[3:]).T)[:, 2].min() for p in box])


def solve_box(kin: g1.Kin, qpos: np.ndarray, hold: Hold, rest: np.ndarray, size: np.ndarray, fps: float,
              cfg: InteractionConfig, *, fit: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Box trajectory + refined robot for one box (also used by augment): returns
    ``(qpos, box (T, 7), size, metrics)``."""
    from kibotos.xgen.noncontact import simulator

    palms, _ = kin.palms(qpos)
    # the held path does not depend on the simulator or the depth; the free path does:
    # simulated once the box's size is known
    box = box_trajectory(palms, hold, rest, size, fps, cfg.gravity_m_s2)
    held = np.arange(hold.start, hold.end + 1)
    metrics: dict[str, Any] = {}
    if fit:
        depth, _ = fit_depth(kin, qpos, box, size, cfg, held)
        size = size.copy()
        size[0] = depth
    if cfg.noncontact_sim != "analytic" and hold.end + 1 < len(qpos):
        sim = simulator(cfg.noncontact_sim, cfg.noncontact_substeps, cfg.gravity_m_s2)
        box = box_trajectory(palms, hold, rest, size, fps, cfg.gravity_m_s2, sim, cfg.default_mass_kg)
        metrics["noncontact"] = dict(sim.last_metrics)
    anchors = anchors_for(size)
    refined = refine(qpos, box, anchors, range(hold.start, hold.end + 1), cfg, fps)
    dist = face_distances(kin, refined, box, anchors)[held]
    clearance = float(kin.box_torso_distance(refined[held], box[held], size).min())
    metrics.update({"max_face_distance_m": float(dist.max()), "mean_face_distance_m": float(dist.mean()),
                    "torso_clearance_m": clearance, "box_size_m": size.round(4).tolist()})
    if dist.max() > cfg.max_face_distance_m:
        raise XGenError(f"palms stay {dist.max():.3f} m from the box faces after refining",
                        reason_code="xgen_grasp_unreachable", metrics=metrics)
    if clearance < 0.0:
        raise XGenError(f"the box enters the torso by {-clearance:.3f} m", reason_code="xgen_box_collides_robot",
                        metrics=metrics)
    return refined, box, size, metrics


def interact(robot: RobotMotion, cfg: XGenConfig, annotation: dict[str, Any] | None = None) -> tuple[InteractionClip, dict]:
    ic = cfg.interaction
    kin = g1.Kin()
    palms, _ = kin.palms(robot.qpos)
    hold = segment(robot.qpos, palms, robot.fps, ic, annotation)
    rest, size = init_box(palms, hold)
    qpos, box, size, metrics = solve_box(kin, robot.qpos, hold, rest, size, robot.fps, ic)
    contact = contact_graph(kin, qpos, box, size, hold, anchors_for(size), ic)
    clip = InteractionClip(qpos=qpos, fps=robot.fps, object_pose=box, box_size=size, mass_kg=ic.default_mass_kg,
                           phase=phases(len(qpos), hold), contact=contact, anchors=anchors_for(size), hold=hold,
                           annotation=dict(annotation or {}))
    metrics.update({"hold_frames": [hold.start, hold.end], "lift_frame": hold.lift, "place_frame": hold.place,
                    "box_lift_m": float(box[:, 2].max() - rest[2]),
                    "refine_max_joint_change_rad": float(np.abs(qpos[:, 7:] - robot.qpos[:, 7:]).max())})
    return clip, metrics


def run(robot: RobotMotion, config: XGenConfig, annotation: dict[str, Any] | None = None) -> StageResult[InteractionClip]:
    return run_stage("interaction", lambda: interact(robot, config, annotation))

