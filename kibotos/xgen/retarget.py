"""Stage ``retarget``: human keypoints -> G1 29-DoF joint trajectory + floating-base root.

GMR-style differential IK with ``mink`` on the MuJoCo G1 (``kibotos.xgen.g1``):

1. *Limb-length scaling.* The human skeleton is rebuilt bone by bone from the hip centre
   with each bone's direction from the human and its length from the G1 (hip, knee,
   ankle, heel, toe; shoulder centre, shoulder, elbow, wrist, palm), so every target is
   reachable by the robot's own proportions.
2. *Root position.* World landmarks carry no global position. Height: the lowest heel or
   toe of the scaled skeleton touches the floor in every frame (no fixed ground offset).
   Horizontal: stance-foot odometry — the planted foot (the lower one, with hysteresis)
   does not move in the world, so the root moves by minus its body-frame motion.
3. *IK per frame*, warm-started from the previous frame: position tasks on knees,
   ankles, elbows, wrists and palms; pelvis position + orientation (yaw from the hip
   line); torso orientation (spine and shoulder line); flat-foot orientation from heel to
   toe; a posture regulariser towards a neutral stance (no arm flips); joint limits.
   The first frame starts from the neutral stance and iterates to convergence, so a clip
   cut anywhere gives the same poses (no first-frame dependence).
   *Joint continuity* (what keeps noisy landmarks from flipping a hip or shoulder onto
   another IK branch): every frame starts from the previous frame's solution, a second
   posture task pulls towards that solution (``retarget.continuity_cost``), and each
   joint's step from the previous frame is bounded by the registered robot's velocity
   limit x dt x ``retarget.max_joint_speed_factor``; then the joint angles are smoothed in
   time with sigma ``retarget.joint_smooth_sigma_s`` x (1 - the mean confidence of the limb
   landmarks) — none for an exact keypoints file — before the ground fixes below.
4. *Ground contact.* The robot's lowest foot contact sphere is put on the floor in every
   frame (no floating, no penetration); while a foot is planted its horizontal drift is
   removed from the root (no foot sliding).

Reason codes: ``xgen_keypoints_invalid`` (non-finite landmarks after gap filling),
``xgen_retarget_diverged`` (residuals beyond ``retarget.max_mean_residual_m``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mink
import mujoco
import numpy as np

from kibotos.xgen import g1
from kibotos.xgen.config import RetargetConfig, XGenConfig
from kibotos.xgen.result import StageResult, XGenError, run_stage
from kibotos.xgen.skeleton import IDX, HumanMotion, mp_world_to_zup

# scaled-skeleton points: name -> (parent, human landmark(s) averaged, G1 reference)
_BONES: dict[str, tuple[str | None, tuple[str, ...], tuple[str, str]]] = {"root": (None, ("left_hip", "right_hip"), ("mid", "hip_roll"))}
_BONES["neck"] = ("root", ("left_shoulder", "right_shoulder"), ("mid", "shoulder_roll"))
for _s in g1.SIDES:
    _BONES.update({
        f"{_s}_hip": ("root", (f"{_s}_hip",), ("body", f"{_s}_hip_roll_link")),
        f"{_s}_knee": (f"{_s}_hip", (f"{_s}_knee",), ("body", f"{_s}_knee_link")),
        f"{_s}_ankle": (f"{_s}_knee", (f"{_s}_ankle",), ("body", f"{_s}_ankle_roll_link")),
        f"{_s}_heel": (f"{_s}_ankle", (f"{_s}_heel",), ("site", f"{_s}_heel")),
        f"{_s}_toe": (f"{_s}_ankle", (f"{_s}_foot_index",), ("site", f"{_s}_toe")),
        f"{_s}_shoulder": ("neck", (f"{_s}_shoulder",), ("body", f"{_s}_shoulder_roll_link")),
        f"{_s}_elbow": (f"{_s}_shoulder", (f"{_s}_elbow",), ("body", f"{_s}_elbow_link")),
        f"{_s}_wrist": (f"{_s}_elbow", (f"{_s}_wrist",), ("body", f"{_s}_wrist_yaw_link")),
        # the palm centre: the mean of wrist, index and pinky landmarks
        f"{_s}_palm": (f"{_s}_wrist", (f"{_s}_wrist", f"{_s}_index", f"{_s}_pinky"), ("site", f"{_s}_palm")),
    })
# shoulders to feet (MediaPipe 11..32): whose confidence sets the joint smoothing
LIMB_LANDMARKS = slice(IDX["left_shoulder"], IDX["right_foot_index"] + 1)
# IK position tasks: scaled-skeleton point -> (frame name, frame type, config weight key)
POSITION_TASKS = tuple(
    (f"{s}_{part}", name, kind, part)
    for s in g1.SIDES
    for part, name, kind in (("knee", f"{s}_knee_link", "body"), ("ankle", f"{s}_ankle_roll_link", "body"),
                             ("elbow", f"{s}_elbow_link", "body"), ("wrist", f"{s}_wrist_yaw_link", "body"),
                             ("palm", f"{s}_palm", "site"))
)


@dataclass(frozen=True)
class RobotMotion:
    """A G1 trajectory: ``qpos`` (T, 36) in ``kibotos.xgen.g1``'s layout, world z-up
    frame with the floor at z = 0."""

    qpos: np.ndarray
    fps: float
    residual: np.ndarray  # (T, len(POSITION_TASKS)) metres, target - reached after ground fixes
    planted: np.ndarray  # (T, 2) bool: left/right foot planted (stance)

    def __len__(self) -> int:
        return int(self.qpos.shape[0])


def _g1_reference() -> dict[str, np.ndarray]:
    kin = g1.Kin()
    d = kin.forward(g1.model().qpos0)
    ref = {}
    for name, (_, _, (kind, what)) in _BONES.items():
        if kind == "mid":
            ref[name] = 0.5 * (d.body(f"left_{what}_link").xpos + d.body(f"right_{what}_link").xpos)
        elif kind == "body":
            ref[name] = d.body(what).xpos.copy()
        else:
            ref[name] = d.site(what).xpos.copy()
    ref["pelvis"] = d.body("pelvis").xpos.copy()
    return ref


def scaled_skeleton(kp_zup: np.ndarray) -> dict[str, np.ndarray]:
    """Human body-frame keypoints (T, 33, 3) -> {point: (T, 3)} with G1 bone lengths,
    root (hip centre) at the origin."""
    ref = _g1_reference()
    human = {name: kp_zup[:, [IDX[k] for k in lms]].mean(axis=1) for name, (_, lms, _) in _BONES.items()}
    out = {"root": np.zeros_like(human["root"])}
    for name, (parent, _, _) in _BONES.items():
        if parent is None:
            continue
        vec = human[name] - human[parent]
        norm = np.linalg.norm(vec, axis=1, keepdims=True)
        length = np.linalg.norm(ref[name] - ref[parent])
        out[name] = out[parent] + length * vec / np.maximum(norm, 1e-9)
    return out


def _frame(x: np.ndarray, y_hint: np.ndarray) -> np.ndarray:
    """Rotation matrices (T, 3, 3) with first axis ``x`` and second axis the component of
    ``y_hint`` orthogonal to it."""
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    y = y_hint - np.sum(y_hint * x, axis=-1, keepdims=True) * x
    y = y / np.linalg.norm(y, axis=-1, keepdims=True)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def _rot_to_quat(r: np.ndarray) -> np.ndarray:
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(r).reshape(9))
    return q


def root_trajectory(skel: dict[str, np.ndarray], cfg: RetargetConfig) -> tuple[np.ndarray, np.ndarray]:
    """Root positions (T, 3) in the world and planted flags (T, 2): height from the lowest
    sole point, horizontal motion from stance-foot odometry (module docstring)."""
    n = skel["root"].shape[0]
    soles = np.stack([np.stack([skel[f"{s}_heel"], skel[f"{s}_toe"]], axis=1) for s in g1.SIDES], axis=1)  # (T,2,2,3)
    low = soles[..., 2].min(axis=2)  # (T, 2) lowest sole point per foot, body frame
    root = np.zeros((n, 3))
    root[:, 2] = -low.min(axis=1)
    foot_mid = soles.mean(axis=2)  # (T, 2, 3)
    stance = np.zeros(n, np.int64)
    stance[0] = int(np.argmin(low[0]))
    for t in range(1, n):
        s = stance[t - 1]
        other = 1 - s
        stance[t] = other if low[t, other] < low[t, s] - cfg.stance_hysteresis_m else s
        root[t, :2] = root[t - 1, :2] - (foot_mid[t, stance[t], :2] - foot_mid[t - 1, stance[t], :2])
    # a foot is planted when it is near the floor and (in the world) nearly still
    world_feet = foot_mid + root[:, None, :]
    speed = np.zeros((n, 2))
    speed[1:] = np.linalg.norm(np.diff(world_feet[..., :2], axis=0), axis=2)
    near = (low + root[:, 2:3]) < cfg.planted_height_m
    # (the odometry's stance foot is not forced planted: locking a foot that already lifts
    # would pull the root back)
    return root, near & (speed < cfg.planted_speed_m_per_frame)


def _solve(skel, root, cfg: RetargetConfig, fps: float) -> np.ndarray:
    m = g1.model()
    config = mink.Configuration(m)
    ref = _g1_reference()
    n = root.shape[0]
    hip_y = skel["left_hip"] - skel["right_hip"]
    up = np.tile([0.0, 0.0, 1.0], (n, 1))
    spine = skel["neck"] - skel["root"]
    # pelvis: y along the hip line (yaw from the hip line); a bending person tilts the
    # pelvis forward by about half of the trunk's lean (the G1 waist pitches only 0.52 rad)
    spine_dir = spine / np.linalg.norm(spine, axis=1, keepdims=True)
    pel_up = up + spine_dir
    pel_rot = _frame(np.cross(hip_y, pel_up), hip_y)
    sh_y = skel["left_shoulder"] - skel["right_shoulder"]
    torso_rot = _frame(np.cross(sh_y, spine), sh_y)
    pelvis_offset = ref["pelvis"] - ref["root"]
    w = cfg.weights
    pelvis_task = mink.FrameTask("pelvis", "body", position_cost=w.pelvis_position, orientation_cost=w.pelvis_orientation)
    torso_task = mink.FrameTask("torso_link", "body", position_cost=0.0, orientation_cost=w.torso_orientation)
    foot_tasks = {s: mink.FrameTask(f"{s}_ankle_roll_link", "body", position_cost=0.0, orientation_cost=w.foot_orientation)
                  for s in g1.SIDES}
    pos_tasks = [(key, mink.FrameTask(name, kind, position_cost=getattr(w, part), orientation_cost=0.0))
                 for key, name, kind, part in POSITION_TASKS]
    posture = mink.PostureTask(m, cost=w.posture)
    home = g1.home_qpos()
    posture.set_target(home)
    previous = mink.PostureTask(m, cost=max(cfg.continuity_cost, 1e-9))
    tasks = [pelvis_task, torso_task, *foot_tasks.values(), *(t for _, t in pos_tasks), posture]
    limits = [mink.ConfigurationLimit(m)]
    foot_rot = {s: _frame(skel[f"{s}_toe"] - skel[f"{s}_heel"], np.cross(up, skel[f"{s}_toe"] - skel[f"{s}_heel"]))
                for s in g1.SIDES}
    out = np.empty((n, m.nq))
    q = home.copy()
    dt = 1.0 / fps
    max_step = g1.velocity_limits() * dt * cfg.max_joint_speed_factor
    for t in range(n):
        pelvis_task.set_target(mink.SE3.from_rotation_and_translation(
            mink.SO3.from_matrix(pel_rot[t]), root[t] + pel_rot[t] @ pelvis_offset))
        torso_task.set_target(mink.SE3.from_rotation_and_translation(mink.SO3.from_matrix(torso_rot[t]), np.zeros(3)))
        for s in g1.SIDES:
            # feet: flat (roll 0), pitch and yaw from heel to toe
            foot_tasks[s].set_target(mink.SE3.from_rotation_and_translation(mink.SO3.from_matrix(foot_rot[s][t]), np.zeros(3)))
        for key, task in pos_tasks:
            task.set_target(mink.SE3.from_translation(root[t] + skel[key][t]))
        if t == 0:
            q = home.copy()
            q[:3] = root[0] + pel_rot[0] @ pelvis_offset
            q[3:7] = _rot_to_quat(pel_rot[0])
            iters = cfg.first_frame_iterations
        else:
            iters = cfg.iterations
            previous.set_target(q)  # q: the previous frame's solution, also the warm start
        config.update(q)
        frame_tasks = tasks + [previous] if t and cfg.continuity_cost > 0 else tasks
        for _ in range(iters):
            vel = mink.solve_ik(config, frame_tasks, dt, solver="daqp", damping=cfg.damping, limits=limits)
            config.integrate_inplace(vel, dt)
        new = config.q.copy()
        if t:
            new[7:] = np.clip(new[7:], q[7:] - max_step, q[7:] + max_step)
        q = new
        out[t] = q
    return out


def _smooth_joints(qpos: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian in time on the joint angles (root untouched; the ground fixes follow)."""
    if sigma_frames <= 0 or len(qpos) < 3:
        return qpos
    r = int(np.ceil(3 * sigma_frames))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_frames) ** 2)
    k /= k.sum()
    out = qpos.copy()
    pad = np.pad(qpos[:, 7:], [(r, r), (0, 0)], mode="edge")
    out[:, 7:] = np.stack([np.convolve(pad[:, j], k, mode="valid") for j in range(pad.shape[1])], axis=1)
    return out


def _ground_and_lock(qpos: np.ndarray, planted: np.ndarray) -> np.ndarray:
    """Put the lowest contact sphere on the floor in every frame; while a foot stays
    planted, hold it where it landed by moving the root."""
    kin = g1.Kin()
    q = qpos.copy()
    soles = kin.sole_points(q)  # (T, 2, 4, 3)
    q[:, 2] -= soles[..., 2].min(axis=(1, 2))
    feet = soles.mean(axis=2)[..., :2]  # (T, 2, 2) foot centres
    shift = np.zeros((len(q), 2))
    anchor = [None, None]
    for t in range(len(q)):
        corr = []
        for k in range(2):
            if planted[t, k]:
                if anchor[k] is None:
                    anchor[k] = feet[t, k] + shift[t - 1] if t else feet[t, k]
                corr.append(anchor[k] - feet[t, k])
            else:
                anchor[k] = None
        prev = shift[t - 1] if t else np.zeros(2)
        shift[t] = np.mean(corr, axis=0) if corr else prev
    q[:, :2] += shift
    return q


def retarget(motion: HumanMotion, cfg: XGenConfig) -> tuple[RobotMotion, dict]:
    kp = mp_world_to_zup(motion.keypoints)
    if not np.isfinite(kp).all():
        raise XGenError("keypoints contain gaps: run pose cleaning first", reason_code="xgen_keypoints_invalid")
    rc = cfg.retarget
    skel = scaled_skeleton(kp)
    root, planted = root_trajectory(skel, rc)
    # joint smoothing as strong as the landmarks are uncertain: none for an exact keypoints
    # file (confidence 1), ~0.07 s for MediaPipe on the generated video (limb confidence ~0.65)
    limb_confidence = float(motion.confidence[:, LIMB_LANDMARKS].mean())
    sigma_s = rc.joint_smooth_sigma_s * (1.0 - limb_confidence)
    solved = _smooth_joints(_solve(skel, root, rc, motion.fps), sigma_s * motion.fps)
    qpos = _ground_and_lock(solved, planted)
    lo, hi = g1.joint_limits()
    qpos[:, 7:] = np.clip(qpos[:, 7:], lo, hi)
    kin = g1.Kin()
    reached = np.empty((len(qpos), len(POSITION_TASKS), 3))
    for j, (_, name, kind, _) in enumerate(POSITION_TASKS):
        reached[:, j] = kin.sites(qpos, (name,))[:, 0] if kind == "site" else kin.body_positions(qpos, (name,))[:, 0]
    # residuals against the targets in the frame the root ended up in (after ground fixes)
    targets = np.stack([skel[key] for key, _, _, _ in POSITION_TASKS], axis=1)
    root_world = root + (qpos[:, :3] - solved[:, :3])
    residual = np.linalg.norm(reached - (root_world[:, None] + targets), axis=2)
    metrics: dict[str, Any] = {"frames": len(qpos), "mean_residual_m": float(residual.mean()),
               "max_residual_m": float(residual.max()),
               "residual_by_body_m": {key: float(residual[:, j].mean()) for j, (key, _, _, _) in enumerate(POSITION_TASKS)},
               "planted_fraction": float(planted.mean()), "limb_confidence": limb_confidence,
               "joint_smooth_sigma_s": sigma_s, "max_joint_step_rad": float(np.abs(np.diff(qpos[:, 7:], axis=0)).max(initial=0.0))}
    if metrics["mean_residual_m"] > rc.max_mean_residual_m:
        raise XGenError(f"mean keypoint residual {metrics['mean_residual_m']:.3f} m exceeds "
                        f"{rc.max_mean_residual_m} m", reason_code="xgen_retarget_diverged", metrics=metrics)
    return RobotMotion(qpos=qpos, fps=motion.fps, residual=residual, planted=planted), metrics


def run(motion: HumanMotion, config: XGenConfig) -> StageResult[RobotMotion]:
    return run_stage("retarget", lambda: retarget(motion, config))
