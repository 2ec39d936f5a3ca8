"""Realistic sample episodes for every registered robot, genuine and faulty.

A genuine episode is a sequence of minimum-jerk moves between random waypoints inside
the joint limits, separated by pauses (so motion comes in bursts, as in real
demonstrations), sampled at ``rate_hz`` with Gaussian sensor noise (documented in
``NOISE``). Its video is rendered from the same trajectory: the robot's link positions
(forward kinematics) projected through the declared camera and drawn as a skeleton over a
textured background, encoded as H.264 with PyAV. The video starts ``offset_ms`` before
the kinematics, which is the true sync offset.

Every robot with an end effector demonstrates a task (``TASKS``, schemas in
``kibotos.tasks``; the manifest's ``task``): random moves bring the grasping link to the
object, which it grasps at 25 % of the episode (the robot at rest); inside the grasp
window the grasping chain lifts the object ``TASK_LIFT_M``, carries it ``TASK_CARRY_M``
sideways and sets it down (``TASK_MOVES``: minimum-jerk moves with pauses between
waypoints solved by damped least squares, orientation kept), then releases it at 75 %
and random moves resume. Moves shorter than ``TASK_REFERENCE_MOVE_MS`` scale the lift and
carry down by the cube of the ratio (jerk grows with the inverse cube of a move's
duration), which keeps short episodes within gate E's jerk bounds: a 4 s episode still
completes its task, and shorter ones (``TASK_MIN_DURATION_MS``) declare none.

Arm episodes (and the G1, holding an object in its right hand) carry an object pose
stream by default (``with_object``): the object rests until the grasping link picks it
up, moves rigidly with that link (``OBJECT_IN_HAND``) and rests again from its release;
its poses come from the noise-free trajectory's forward kinematics plus independent
tracking noise (``NOISE``), sampled at the video's frame times, with a
``contacts/<link>`` stream marking the grasp. The grasp is declared in the pose array's
attributes, so the IK residual stage has a target independent of the joints
(``gpu_consumers.ik``).

Each failure class of gates A–E and of the evidence stages (IK residual, task
completion) has a variant (``VARIANTS``) with the gate or stage and reason code that must
catch it (``EXPECTED``). ``task_failed`` moves exactly like the genuine episode, but the
hand misses: the object never leaves its rest pose and no contact is recorded.

``subject="human"`` (and the variant ``human_video``) films a person instead of the robot:
a photo of a person moved with the end effector as the declared camera sees it (the
demonstrator's hand, once retargeted). The ``VIDEO_MISMATCH`` variants pair the genuine
trajectory with a video that does not show it (another episode's motion, the own video
backwards, one frame held, blank, ``VIDEO_DELAY_MS`` late with a claimed offset of 0), for
either subject; ``ALSO_CAUGHT_BY`` lists the cheaper gates that may catch one first.

``secondary_cameras`` (names of ``SECONDARY_VIEWS``) adds secondary cameras: the same
episode filmed from the primary camera's position turned about the vertical axis through
the robot's centre, over its own background, on the primary video's clock
(``video/secondary_<name>/encoded``, manifest ``camera`` / ``video`` ``secondary_<name>``).
Without them the episode is exactly the one generated before secondary cameras existed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from gpu_consumers.registry import EVIDENCE_GATES
from kibotos.bundle.manifest import SCHEMA_VERSION
from kibotos.bundle.writer import write_bundle
from kibotos.media.camera import look_at, project_points
from kibotos.media.poses import invert, matrix_to_pose7, pose7_to_matrix, rotvec_to_matrix
from kibotos.media.video import encode_mp4
from kibotos.robots import RobotModel, get_robot
from kibotos.robots.kinematics import kinematics_for, serial_kinematics_for

# Sensor noise of genuine samples (1 sigma): joint positions and velocities; tracking
# noise of the object pose stream (3-D RMS of position, RMS rotation angle).
NOISE = {"revolute_rad": 0.001, "prismatic_m": 0.0001, "vel_rad_s": 0.01,
         "object_pos_m": 0.002, "object_rot_deg": 1.0}

# variant -> (gate that must reject it, reason code)
# the evidence results' ids, from the job registry (the one place they are spelled)
_IK, _TASK, _ALIGN = EVIDENCE_GATES["ik"], EVIDENCE_GATES["task"], EVIDENCE_GATES["align"]
EXPECTED: dict[str, tuple[str, str] | None] = {
    "genuine": None,
    "shape_mismatch": ("gate_a_integrity", "shape_mismatch"),
    "nan": ("gate_a_integrity", "non_finite_values"),
    "flatline": ("gate_a_integrity", "flatline_stream"),
    "non_monotonic": ("gate_b_timestamps", "timestamps_not_increasing"),
    "gap": ("gate_b_timestamps", "timestamp_gap"),
    "short_video": ("gate_c_sync", "insufficient_overlap"),
    "sync_lie": ("gate_c_sync", "sync_offset_mismatch"),
    "degrees": ("gate_d_limits", "units_degrees_suspected"),
    "limit_violation": ("gate_d_limits", "joint_limit_violation"),
    "teleport": ("gate_e_plausibility", "teleport_detected"),
    "jerk": ("gate_e_plausibility", "jerk_exceeded"),
    # gates A-E accept these; the IK residual stage (a GPU consumer job) rejects them
    "ik_perturbed": (_IK, "ik_peak_exceeded"),
    "ik_target_shift": (_IK, "ik_rms_exceeded"),
    # ... and the task completion stage rejects this one (kibotos.tasks)
    "task_failed": (_TASK, "task_object_not_moved"),
    # the same subject filmed by a person instead of the robot: genuine (gate F applies)
    "human_video": None,
    # a genuine trajectory paired with a video that does not show it (``VIDEO_MISMATCH``):
    # a still or blank video fails gate C, the others the align job
    "video_static": ("gate_c_sync", "video_kinematics_mismatch"),
    "video_blank": ("gate_c_sync", "video_kinematics_mismatch"),
    "video_swapped": (_ALIGN, "video_kinematics_mismatch"),
    "video_reversed": (_ALIGN, "video_kinematics_mismatch"),
    # a confident sync estimate locks onto the late motion: too little of it overlaps
    "video_delayed": ("gate_c_sync", "insufficient_overlap"),
}
VARIANTS = tuple(EXPECTED)
# The video variants: each pairs the genuine trajectory with a video that does not show it.
# Any of them may also be filmed by a person (``make_episode(subject="human")``).
VIDEO_MISMATCH = ("video_static", "video_blank", "video_swapped", "video_reversed", "video_delayed")
VIDEO_DELAY_MS = 1500.0  # "video_delayed": the video shows the motion this much later, claim 0
# Another stage may catch a video variant before the one ``EXPECTED`` names (gate C's sync
# estimate can lock onto a reversed video's motion, which then overlaps too little): every
# (gate, reason) that counts as catching it.
ALSO_CAUGHT_BY: dict[str, tuple[tuple[str, str], ...]] = {
    "video_swapped": (("gate_c_sync", "insufficient_overlap"), ("gate_c_sync", "sync_offset_mismatch")),
    "video_reversed": (("gate_c_sync", "insufficient_overlap"), ("gate_c_sync", "sync_offset_mismatch")),
    "video_delayed": (("gate_c_sync", "sync_offset_mismatch"), (_ALIGN, "video_kinematics_mismatch")),
}

# The object: its name, the link that grasps it, its pose in that link's frame while held
# (10 cm out along the link's z axis, turned 15 degrees about it), the grasp window.
OBJECT_NAME = "cube"
GRASP_LINKS = {"unitree_g1": "right_wrist_yaw_link"}  # others: their first end-effector link
OBJECT_IN_HAND = np.array([0.0, 0.0, 0.10, np.cos(np.radians(7.5)), 0.0, 0.0, np.sin(np.radians(7.5))])
GRASP_WINDOW = (0.25, 0.75)  # fractions of the episode
IK_PERTURB_PEAK_M = 0.16  # "ik_perturbed": end-effector displacement at the bump's peak
IK_PERTURB_WIDTH = 0.375  # ... bump length as a fraction of the grasp window
IK_TARGET_SHIFT_M = 0.15  # "ik_target_shift": the object stream moved this far

# The demonstrated task per robot model (task_id, task_version); others: pick_place v1.
TASKS = {"unitree_g1": ("cargo_pickup", "1")}
DEFAULT_TASK = ("pick_place", "1")
TASK_LIFT_M = 0.12  # the object is lifted this high ...
TASK_CARRY_M = 0.12  # ... carried this far horizontally, and set down again
# (move, start, end) as fractions of the grasp window; the pauses between the moves keep
# the motion in bursts, which is what gate C's sync estimate locks onto
TASK_MOVES = (("lift", 0.05, 0.32), ("carry", 0.37, 0.63), ("lower", 0.68, 0.95))
TASK_REFERENCE_MOVE_MS = 700.0  # shorter moves get proportionally smaller (cube) amplitudes
TASK_MIN_DURATION_MS = 4000.0  # shorter episodes do not declare the task they cannot complete

WIDTH, HEIGHT, FOCAL = 320, 240, 260.0
# secondary camera name -> its turn (degrees, about the vertical axis through the robot's
# centre) from the primary camera's position
SECONDARY_VIEWS = {"side": 75.0, "far_side": -75.0}


@dataclass(frozen=True)
class Trajectory:
    """Noise-free joint trajectory q(t) as samples on a fine time grid."""

    t_ms: np.ndarray  # (K,)
    q: np.ndarray  # (K, J)

    def at(self, t_ms: np.ndarray) -> np.ndarray:
        t = np.clip(t_ms, self.t_ms[0], self.t_ms[-1])
        idx = np.searchsorted(self.t_ms, t, side="right") - 1
        idx = np.clip(idx, 0, len(self.t_ms) - 2)
        w = ((t - self.t_ms[idx]) / (self.t_ms[idx + 1] - self.t_ms[idx]))[:, None]
        return self.q[idx] * (1 - w) + self.q[idx + 1] * w


def _min_jerk(tau: np.ndarray) -> np.ndarray:
    return 10 * tau**3 - 15 * tau**4 + 6 * tau**5


def task_for(robot: RobotModel, duration_ms: float = 8000.0) -> tuple[str, str] | None:
    """``(task_id, task_version)`` that ``robot``'s sample episodes of ``duration_ms``
    demonstrate (None: no end effector, or too short to complete it)."""
    if grasp_link(robot) is None or duration_ms < TASK_MIN_DURATION_MS:
        return None
    return TASKS.get(robot.model_id, DEFAULT_TASK)


def task_scale(duration_ms: float) -> float:
    """The fraction of ``TASK_LIFT_M`` / ``TASK_CARRY_M`` an episode this long performs."""
    shortest = min(b - a for _, a, b in TASK_MOVES) * (GRASP_WINDOW[1] - GRASP_WINDOW[0]) * duration_ms
    return min(1.0, shortest / TASK_REFERENCE_MOVE_MS) ** 3


def random_trajectory(robot: RobotModel, duration_ms: float, rng: np.random.Generator) -> Trajectory:
    """Waypoint moves (min-jerk, 1.1–2.2 s) and pauses (0.2–1.6 s) inside the limits."""
    t_ms = np.arange(0.0, duration_ms + 1.0, 1.0)
    q = np.tile(robot.home_qpos, (t_ms.size, 1))
    _random_moves(robot, t_ms, q, robot.home_qpos.copy(), 0.0, None, rng)
    return Trajectory(t_ms, q)


def _random_moves(robot: RobotModel, t_ms: np.ndarray, q: np.ndarray, current: np.ndarray, t0: float,
                  t_until: float | None, rng: np.random.Generator) -> np.ndarray:
    """Fill ``q`` from ``t0`` with pauses and random moves inside the limits, in place;
    with ``t_until`` only moves that end by then (the last one fitted into the time left).
    Returns the last target."""
    span = robot.pos_upper - robot.pos_lower
    prismatic = np.array([t == "prismatic" for t in robot.joint_types])
    amp = np.minimum(np.where(prismatic, 0.01, 0.4), 0.2 * span)
    lo, hi = robot.pos_lower + 0.15 * span, robot.pos_upper - 0.15 * span
    end_of_time = t_ms[-1] if t_until is None else t_until
    while t0 < end_of_time:
        pause = rng.uniform(200, 1600)
        move = rng.uniform(1100, 2200)
        target = np.clip(current + rng.uniform(-1, 1, robot.dof) * amp * rng.uniform(0.3, 1.0), lo, hi)
        if t_until is not None and t0 + pause + move > t_until:
            # the last move before ``t_until``: the shortest pause, the time that is left
            pause, move = 200.0, min(2200.0, t_until - t0 - 200.0)
            if move < 1100.0:
                break
        start, end = t0 + pause, t0 + pause + move
        sel = t_ms >= start
        tau = np.clip((t_ms[sel] - start) / move, 0, 1)[:, None]
        q[sel] = current + (target - current) * _min_jerk(tau)
        current, t0 = target, end
    return current


def _rotvec(r: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.ascontiguousarray(r, dtype=np.float64))[0][:, 0]


def _reach(robot: RobotModel, link: str, q: np.ndarray, target: np.ndarray, iterations: int = 200
           ) -> tuple[np.ndarray, float]:
    """Damped least squares from ``q`` (robot.dof) to the 4x4 ``target`` of ``link``,
    chain joints kept 10 % of their span inside the limits: ``(q, position error m)``."""
    chain = serial_kinematics_for(robot.model_id, robot.revision, link)
    idx = chain.joint_index
    span = robot.pos_upper[idx] - robot.pos_lower[idx]
    lo, hi = robot.pos_lower[idx] + 0.1 * span, robot.pos_upper[idx] - 0.1 * span
    q = q.copy()
    for _ in range(iterations):
        pose = chain.link_poses(q)[0]
        err = np.concatenate([target[:3, 3] - pose[:3, 3], 0.2 * _rotvec(target[:3, :3] @ pose[:3, :3].T)])
        if np.linalg.norm(err[:3]) < 2e-4 and np.linalg.norm(err[3:]) < 2e-4:
            break
        jac = chain.link_jacobians(q)[0]
        jac = np.vstack([jac[:3], 0.2 * jac[3:]])
        step = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(6), err)
        q[idx] = np.clip(q[idx] + np.clip(step, -0.2, 0.2), lo, hi)
    pose = chain.link_poses(q)[0]
    return q, float(np.linalg.norm(target[:3, 3] - pose[:3, 3]))


def _task_waypoints(robot: RobotModel, link: str, q_grasp: np.ndarray, scale: float,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """Configurations after each of ``TASK_MOVES`` from ``q_grasp``: lift, carry (the first
    horizontal direction, from a random start angle, that every waypoint reaches), lower."""
    grasp = serial_kinematics_for(robot.model_id, robot.revision, link).link_poses(q_grasp)[0]
    lift = np.array([0.0, 0.0, TASK_LIFT_M * scale])
    start = rng.uniform(0, 2 * np.pi)
    for k in range(8):
        angle = start + k * np.pi / 4
        carry = TASK_CARRY_M * scale * np.array([np.cos(angle), np.sin(angle), 0.0])
        q, out = q_grasp, []
        for offset in (lift, lift + carry, carry):
            target = grasp.copy()
            target[:3, 3] += offset
            q, err = _reach(robot, link, q, target)
            out.append(q)
            if err > 1e-3:
                break
        else:
            return out
    raise ValueError(f"{robot.model_id}: no reachable task motion from the grasp pose")


def task_trajectory(robot: RobotModel, duration_ms: float, rng: np.random.Generator) -> Trajectory:
    """Random moves until the grasp, the task moves in the grasp window, random moves after
    the release (see the module docstring); ``random_trajectory`` for a robot without an
    end effector."""
    link = grasp_link(robot)
    if link is None:
        return random_trajectory(robot, duration_ms, rng)
    t_ms = np.arange(0.0, duration_ms + 1.0, 1.0)
    q = np.tile(robot.home_qpos, (t_ms.size, 1))
    t_grasp, t_release = (f * duration_ms for f in GRASP_WINDOW)
    window = t_release - t_grasp
    q_grasp = _random_moves(robot, t_ms, q, robot.home_qpos.copy(), 0.0, t_grasp - 100.0, rng)
    waypoints = _task_waypoints(robot, link, q_grasp, task_scale(duration_ms), rng)
    sel = t_ms >= t_grasp
    q[sel] = q_grasp
    previous = q_grasp
    for (_, a, b), q_next in zip(TASK_MOVES, waypoints):
        start, move = t_grasp + a * window, (b - a) * window
        tau = np.clip((t_ms[sel] - start) / move, 0, 1)[:, None]
        q[sel] += (q_next - previous) * _min_jerk(tau)
        previous = q_next
    _random_moves(robot, t_ms, q, previous, t_release, None, rng)
    return Trajectory(t_ms, q)


def default_camera(robot: RobotModel, yaw_deg: float = 0.0) -> tuple[dict, np.ndarray]:
    """``(intrinsics, camera-to-world)`` of the sample camera; ``yaw_deg`` turns its position
    about the vertical axis through the robot's centre (home pose), still looking at it."""
    pts = kinematics_for(robot.model_id, robot.revision).link_positions(robot.home_qpos[None])[0]
    center = (pts.min(0) + pts.max(0)) / 2
    extent = float(np.max(pts.max(0) - pts.min(0)))
    distance = max(1.0, 1.6 * extent * FOCAL / HEIGHT * 1.6)
    offset = np.array([distance * 0.9, distance * 0.35, 0.25 * extent])
    if yaw_deg:
        c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
        offset = np.array([c * offset[0] - s * offset[1], s * offset[0] + c * offset[1], offset[2]])
    eye = center + offset
    intrinsics = {"fx": FOCAL, "fy": FOCAL, "cx": WIDTH / 2, "cy": HEIGHT / 2, "width": WIDTH, "height": HEIGHT}
    return intrinsics, look_at(eye, center)


def render_video(robot: RobotModel, qs: np.ndarray, intrinsics: dict, cam_to_world: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """(N, H, W, 3) frames of the robot skeleton for configurations ``qs`` (N, J)."""
    pix = project_points(kinematics_for(robot.model_id, robot.revision).link_positions(qs), intrinsics, cam_to_world)
    texture = cv2.GaussianBlur(rng.integers(60, 200, (HEIGHT, WIDTH, 3), dtype=np.uint8), (0, 0), 3)
    frames = np.empty((len(qs), HEIGHT, WIDTH, 3), np.uint8)
    pix = np.round(pix).astype(np.int32)
    for i in range(len(qs)):  # drawing is per image; this is sample generation, not a gate
        img = texture.copy()
        pts = pix[i]
        for a, b in zip(pts[:-1], pts[1:]):
            cv2.line(img, tuple(map(int, a)), tuple(map(int, b)), (30, 30, 220), 4, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, tuple(map(int, p)), 6, (240, 200, 40), -1, cv2.LINE_AA)
        frames[i] = img
    return frames


HUMAN_PHOTO = "grace_hopper"  # ``kibotos.media.human_video.person_photos``: always installed
HUMAN_HEIGHT = 0.6  # the person's height as a fraction of the frame


def hand_pixels(robot: RobotModel, qs: np.ndarray, intrinsics: dict, cam_to_world: np.ndarray) -> np.ndarray:
    """(N, 2) pixel position of the demonstrator's hand for configurations ``qs``: the
    grasping link (the robot's end effector) projected through the camera; the robot's
    keypoint centroid when it has no end effector."""
    kin = kinematics_for(robot.model_id, robot.revision)
    link = grasp_link(robot)
    pts = kin.link_positions(qs, (link,)) if link else kin.link_positions(qs).mean(axis=1, keepdims=True)
    return project_points(pts, intrinsics, cam_to_world)[:, 0]


def render_human_video(robot: RobotModel, qs: np.ndarray, intrinsics: dict, cam_to_world: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """(N, H, W, 3) frames of a person demonstrating configurations ``qs`` (N, J): a photo of
    a person (``HUMAN_PHOTO``) over a textured background, moved with the demonstrator's
    hand, i.e. the retargeted end effector seen through the declared camera
    (``hand_pixels``, relative to the first frame), its path scaled down as a whole where
    it would leave the frame (the direction of every move is kept)."""
    from kibotos.media.human_video import person_photos

    photo = person_photos()[HUMAN_PHOTO]
    ph = int(HUMAN_HEIGHT * HEIGHT)
    pw = int(round(photo.shape[1] * ph / photo.shape[0]))
    person = cv2.resize(photo, (pw, ph), interpolation=cv2.INTER_AREA)
    texture = cv2.GaussianBlur(rng.integers(60, 200, (HEIGHT, WIDTH, 3), dtype=np.uint8), (0, 0), 3)
    hand = hand_pixels(robot, qs, intrinsics, cam_to_world)
    path = hand - (hand.min(axis=0) + hand.max(axis=0)) / 2
    room = np.array([WIDTH - pw, HEIGHT - ph]) / 2
    gain = min(1.0, float(np.min(room / np.maximum(np.abs(path).max(axis=0), 1e-9))))
    centre = np.array([WIDTH / 2, HEIGHT / 2]) + gain * path
    x0 = np.clip(np.round(centre[:, 0] - pw / 2), 0, WIDTH - pw).astype(int)
    y0 = np.clip(np.round(centre[:, 1] - ph / 2), 0, HEIGHT - ph).astype(int)
    frames = np.repeat(texture[None], len(qs), axis=0)
    for i in range(len(qs)):
        frames[i, y0[i]: y0[i] + ph, x0[i]: x0[i] + pw] = person
    return frames


def grasp_link(robot: RobotModel) -> str | None:
    """The link that holds the sample object (None: the robot has no end effector)."""
    if not robot.end_effector_links:
        return None
    return GRASP_LINKS.get(robot.model_id, robot.end_effector_links[0])


def object_stream(robot: RobotModel, traj: Trajectory, obj_t_ms: np.ndarray, duration_ms: float,
                  rng: np.random.Generator, *, carried: bool = True) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The object's pose stream, its grasp contacts and the grasp declaration:
    ``(arrays, attributes)`` for ``write_bundle``. Poses at ``obj_t_ms`` (kinematic time):
    rigidly attached to ``grasp_link`` inside the grasp window (forward kinematics of the
    noise-free trajectory), at rest before and after it, plus tracking noise. Not
    ``carried``: the hand misses it — at rest where the grasp should have begun, no contact."""
    link = grasp_link(robot)
    t_grasp, t_release = (f * duration_ms for f in GRASP_WINDOW)
    held = np.clip(obj_t_ms.astype(np.float64), t_grasp, t_release if carried else t_grasp)
    hand = serial_kinematics_for(robot.model_id, robot.revision, link).link_poses(traj.at(held))
    obj = hand @ pose7_to_matrix(OBJECT_IN_HAND)
    n = len(obj_t_ms)
    obj[:, :3, 3] += rng.normal(0.0, NOISE["object_pos_m"] / np.sqrt(3), (n, 3))
    obj[:, :3, :3] = rotvec_to_matrix(rng.normal(0.0, np.radians(NOISE["object_rot_deg"]) / np.sqrt(3), (n, 3))) \
        @ obj[:, :3, :3]
    offset = matrix_to_pose7(invert(pose7_to_matrix(OBJECT_IN_HAND)))  # the link in the object frame
    base = f"objects/{OBJECT_NAME}"
    arrays = {
        f"{base}/timestamps_ms": obj_t_ms.astype(np.int64),
        f"{base}/pose": matrix_to_pose7(obj),
        f"contacts/{link}": ((obj_t_ms >= t_grasp) & (obj_t_ms <= t_release) & carried).astype(np.uint8),
    }
    attributes = {f"{base}/pose": {"frame": "robot_base", "tracking": "sample generator (FK + noise)",
                                   "grasp": {"link": link, "offset": [round(float(x), 9) for x in offset]}}}
    return arrays, attributes


def ik_perturbation(robot: RobotModel, traj: Trajectory, ts_ms: np.ndarray, duration_ms: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """A smooth bump (sin^2) on the grasping chain's joints, centred in the grasp window,
    that moves the grasping link ``IK_PERTURB_PEAK_M`` at its peak: ``(dq (T, J), dv (T, J))``.

    Its joint-space direction is the minimum-norm one (Jacobian pseudo-inverse) for the
    axis direction needing the least joint motion, so no joint comes near a speed,
    acceleration or jerk bound: gates A–E cannot tell it from a genuine trajectory (sized
    for the default 8 s episodes; shorter ones get a proportionally sharper bump). Where
    that direction's motion curls away (it is linear in joint space only) and needs far
    more joint motion than the linear estimate to reach the peak displacement, the next
    axis direction is taken."""
    link = grasp_link(robot)
    chain = serial_kinematics_for(robot.model_id, robot.revision, link)
    t_grasp, t_release = (f * duration_ms for f in GRASP_WINDOW)
    centre, width = (t_grasp + t_release) / 2, IK_PERTURB_WIDTH * (t_release - t_grasp)
    q_c = traj.at(np.array([centre]))
    pinv = np.linalg.pinv(chain.link_jacobians(q_c)[0, :3])
    moves = sorted((pinv @ d for d in np.vstack([np.eye(3), -np.eye(3)])), key=lambda m: float(np.abs(m).max()))
    p0 = chain.link_poses(q_c)[0, :3, 3]
    for step in moves:
        direction = np.zeros(robot.dof)
        direction[chain.joint_index] = step
        lo, hi = 0.0, 10.0
        for _ in range(60):  # the scale whose displacement at the peak is IK_PERTURB_PEAK_M
            mid = (lo + hi) / 2
            moved = np.linalg.norm(chain.link_poses(q_c + mid * direction)[0, :3, 3] - p0)
            lo, hi = (mid, hi) if moved < IK_PERTURB_PEAK_M else (lo, mid)
        if lo <= 1.5 * IK_PERTURB_PEAK_M:  # near the linear estimate (the step is per metre)
            break
    phase = np.clip((ts_ms - centre) / width + 0.5, 0.0, 1.0)
    bump = np.sin(np.pi * phase) ** 2
    dbump = np.where((phase > 0) & (phase < 1), np.pi / (width / 1000.0) * np.sin(2 * np.pi * phase), 0.0)
    return bump[:, None] * lo * direction, dbump[:, None] * lo * direction


# ``VIDEO_MISMATCH`` variants that show other frames than the rendered ones
FRAME_VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "video_reversed": lambda frames: np.ascontiguousarray(frames[::-1]),
    "video_static": lambda frames: np.repeat(frames[len(frames) // 2][None], len(frames), axis=0),
    "video_blank": lambda frames: np.full_like(frames, 16),
}


def video_variant(frames: np.ndarray, variant: str) -> np.ndarray:
    """The frames a ``VIDEO_MISMATCH`` variant shows instead of the rendered ``frames``
    (the others: ``frames`` unchanged): played backwards, the middle frame held, blank."""
    term = FRAME_VARIANTS.get(variant)
    return frames if term is None else term(frames)


@dataclass(frozen=True)
class Episode:
    manifest: dict
    timestamps_ms: np.ndarray
    joint_pos: np.ndarray
    joint_vel: np.ndarray | None
    video_mp4: bytes
    true_offset_ms: float
    extra_arrays: dict[str, np.ndarray] = field(default_factory=dict)  # objects/*, contacts/*
    array_attributes: dict[str, dict] = field(default_factory=dict)
    secondary_mp4: dict[str, bytes] = field(default_factory=dict)  # "secondary_<name>" -> mp4

    def write(self, path: str | Path) -> Path:
        return write_bundle(path, self.manifest, timestamps_ms=self.timestamps_ms, joint_pos=self.joint_pos,
                            joint_vel=self.joint_vel, video_mp4=self.video_mp4, extra_arrays=self.extra_arrays,
                            array_attributes=self.array_attributes, secondary_mp4=self.secondary_mp4)


_SAMPLE_NS = uuid.UUID("0d6e6c2e-3f55-4b0c-8d1e-6a4a3b0f7c11")


def _uuid(*parts: object) -> str:
    """Deterministic per (robot, variant, seed, miner, role): reproducible samples, and
    no two different samples share a submission id."""
    return str(uuid.uuid5(_SAMPLE_NS, ":".join(map(str, parts))))


@dataclass(frozen=True)
class _Build:
    """What the terms of one episode share."""

    robot: RobotModel
    variant: str
    seed: int
    rng: np.random.Generator  # the episode's generator: each term draws from it in a fixed order
    duration_ms: float
    rate_hz: float
    prismatic: np.ndarray  # (J,) bool


# --- variants that change the motion itself (the video shows them too) ----------------

def _limit_violation(traj: Trajectory, b: _Build) -> Trajectory:
    """The joint with the widest range shifted 0.3 past its upper limit."""
    robot = b.robot
    j = int(np.argmax(robot.pos_upper - robot.pos_lower))
    shift = np.zeros(robot.dof)
    shift[j] = robot.pos_upper[j] - traj.q[:, j].min() + 0.3
    return replace(traj, q=traj.q + shift)


def _teleport(traj: Trajectory, b: _Build) -> Trajectory:
    """One revolute joint jumps (3 control periods at its speed limit, at least 0.6 rad)
    half way through, towards the side with more room."""
    robot = b.robot
    room_up, room_down = robot.pos_upper - traj.q.max(0), traj.q.min(0) - robot.pos_lower
    j = int(np.argmax(np.maximum(room_up, room_down) * ~b.prismatic))
    jump = max(0.6, 3.0 * robot.vel_limit[j] / b.rate_hz)
    sign = 1.0 if room_up[j] >= room_down[j] else -1.0
    jump = min(jump, max(room_up[j], room_down[j]) - 0.05)
    q = traj.q.copy()
    q[traj.t_ms >= b.duration_ms / 2, j] += sign * jump
    return replace(traj, q=q)


def _tremor(traj: Trajectory, b: _Build) -> Trajectory:
    """A 4 Hz tremor on every joint with three times the jerk limit."""
    w = 2 * np.pi * 4.0
    amp = 3.0 * b.robot.jerk_limit / w**3
    tremor = np.sin(w * traj.t_ms[:, None] / 1000.0 + b.rng.uniform(0, 2 * np.pi, b.robot.dof)) * amp
    return replace(traj, q=traj.q + tremor)


MOTION_VARIANTS: dict[str, Callable[[Trajectory, _Build], Trajectory]] = {
    "limit_violation": _limit_violation, "teleport": _teleport, "jerk": _tremor,
}


def _recorded(traj: Trajectory, b: _Build) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ts, q, v)`` sampled at ``rate_hz`` with the sensor noise of ``NOISE``."""
    ts = np.round(np.arange(0.0, b.duration_ms + 1e-9, 1000.0 / b.rate_hz)).astype(np.int64)
    q_clean = traj.at(ts.astype(np.float64))
    vel = np.gradient(traj.q, traj.t_ms / 1000.0, axis=0)
    v_clean = np.stack([np.interp(ts, traj.t_ms, vel[:, j]) for j in range(b.robot.dof)], axis=1)
    noise = np.where(b.prismatic, NOISE["prismatic_m"], NOISE["revolute_rad"])
    q = q_clean + b.rng.normal(0, 1, q_clean.shape) * noise
    v = v_clean + b.rng.normal(0, NOISE["vel_rad_s"], v_clean.shape) * np.where(b.prismatic, 0.1, 1.0)
    return ts, q, v


# --- the video: which motion it shows, how long, what sync offset the manifest claims --

VIDEO_LENGTH = {"short_video": 0.55}  # variant -> the fraction of the episode the video covers
VIDEO_LATE_MS = {"video_delayed": VIDEO_DELAY_MS}  # variant -> how late the video shows the motion
# variant -> the claimed sync offset given the true one
CLAIMS: dict[str, Callable[[float], float]] = {
    "video_delayed": lambda offset: 0.0,
    "sync_lie": lambda offset: offset - 400.0,
}


def _another_episode(traj: Trajectory, b: _Build) -> Trajectory:
    """Another episode's motion (its own generator), for the same camera."""
    return task_trajectory(b.robot, b.duration_ms, np.random.default_rng([b.seed, 0x5A4B]))


SHOWN_MOTION: dict[str, Callable[[Trajectory, _Build], Trajectory]] = {"video_swapped": _another_episode}


@dataclass(frozen=True)
class _Video:
    mp4: bytes
    frame_kin_t: np.ndarray  # each frame's kinematic time (ms)
    cameras: dict
    videos: dict
    secondary_mp4: dict[str, bytes]
    claimed_ms: float


def _video(traj: Trajectory, b: _Build, *, offset: float, fps: float, subject: str, scene_seed: int | None,
           secondary_cameras: tuple[str, ...]) -> _Video:
    """The primary video (it starts ``offset`` ms before kinematics time 0) and the
    secondary cameras' videos."""
    robot, variant = b.robot, b.variant
    video_ms = VIDEO_LENGTH.get(variant, 1.0) * b.duration_ms + offset
    n_frames = int(np.floor(video_ms * fps / 1000.0)) + 1
    frame_kin_t = np.arange(n_frames) * 1000.0 / fps - offset
    intrinsics, extrinsics = default_camera(robot)
    scene_rng = b.rng if scene_seed is None else np.random.default_rng([scene_seed, 0x5CE7E])
    render = render_human_video if subject == "human" else render_video
    shown_t = frame_kin_t - VIDEO_LATE_MS.get(variant, 0.0)
    shown = SHOWN_MOTION[variant](traj, b) if variant in SHOWN_MOTION else traj
    frames = video_variant(render(robot, shown.at(shown_t), intrinsics, extrinsics, scene_rng), variant)
    mp4 = encode_mp4(frames, fps)
    cameras = {"primary": {"intrinsics": intrinsics, "extrinsics": extrinsics.round(6).tolist()}}
    videos = {"primary": {"fps": fps, "frame_count": n_frames, "subject": subject}}
    secondary_mp4: dict[str, bytes] = {}
    for name in secondary_cameras:
        # its own generator (its own background): the other streams stay those of a mono bundle
        cam_rng = np.random.default_rng([b.seed, 0x5EC0, list(SECONDARY_VIEWS).index(name)])
        intr, pose = default_camera(robot, SECONDARY_VIEWS[name])
        key = f"secondary_{name}"
        secondary_mp4[key] = encode_mp4(render_video(robot, traj.at(frame_kin_t), intr, pose, cam_rng), fps)
        cameras[key] = {"intrinsics": intr, "extrinsics": pose.round(6).tolist()}
        videos[key] = {"fps": fps, "frame_count": n_frames, "subject": "robot"}
    claimed = CLAIMS[variant](offset) if variant in CLAIMS else offset
    return _Video(mp4, frame_kin_t, cameras, videos, secondary_mp4, claimed)


# --- the object stream and the variants that the IK / task stages catch -----------------

NEEDS_OBJECT = ("ik_perturbed", "ik_target_shift", "task_failed")
NOT_CARRIED = ("task_failed",)  # the hand misses the object


def _shifted_target(arrays: dict[str, np.ndarray], ts: np.ndarray, q: np.ndarray, v: np.ndarray,
                    traj: Trajectory, b: _Build) -> tuple[np.ndarray, np.ndarray]:
    """The object stream moved ``IK_TARGET_SHIFT_M`` towards the robot's base,
    horizontally (the shifted path stays reachable); the joints unchanged."""
    pose = arrays[f"objects/{OBJECT_NAME}/pose"].copy()
    toward = -pose[:, :2].mean(axis=0)
    pose[:, :2] += IK_TARGET_SHIFT_M * toward / np.linalg.norm(toward)
    arrays[f"objects/{OBJECT_NAME}/pose"] = pose
    return q, v


def _perturbed_chain(arrays: dict[str, np.ndarray], ts: np.ndarray, q: np.ndarray, v: np.ndarray,
                     traj: Trajectory, b: _Build) -> tuple[np.ndarray, np.ndarray]:
    """The grasping chain's joints bumped (``ik_perturbation``); the object stream unchanged."""
    dq, dv = ik_perturbation(b.robot, traj, ts.astype(np.float64), b.duration_ms)
    return q + dq, v + dv


OBJECT_VARIANTS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "ik_target_shift": _shifted_target, "ik_perturbed": _perturbed_chain,
}


# --- variants of the recorded streams only (what gates A, B and D read) ------------------

Streams = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # (ts, q, v)


def _nan(ts: np.ndarray, q: np.ndarray, v: np.ndarray, b: _Build) -> Streams:
    q[len(q) // 3: len(q) // 3 + 5, b.robot.dof // 2] = np.nan
    return ts, q, v


def _flatline(ts: np.ndarray, q: np.ndarray, v: np.ndarray, b: _Build) -> Streams:
    return ts, np.tile(q[0], (len(q), 1)), np.zeros_like(v)


def _swapped_timestamps(ts: np.ndarray, q: np.ndarray, v: np.ndarray, b: _Build) -> Streams:
    k = len(ts) // 2
    ts = ts.copy()
    ts[k], ts[k + 1] = ts[k + 1], ts[k]
    return ts, q, v


def _gap(ts: np.ndarray, q: np.ndarray, v: np.ndarray, b: _Build) -> Streams:
    keep = (ts < b.duration_ms * 0.5) | (ts >= b.duration_ms * 0.5 + 400)
    return ts[keep], q[keep], v[keep]


def _degrees(ts: np.ndarray, q: np.ndarray, v: np.ndarray, b: _Build) -> Streams:
    return ts, np.where(b.prismatic, q, np.rad2deg(q)), np.where(b.prismatic, v, np.rad2deg(v))


def _one_joint_short(ts: np.ndarray, q: np.ndarray, v: np.ndarray, b: _Build) -> Streams:
    return ts, q[:, :-1], v[:, :-1]


def _no_velocity(ts: np.ndarray, q: np.ndarray, v: np.ndarray, b: _Build) -> Streams:
    return ts, q, None  # a position glitch; the recording has no velocity stream to contradict it


STREAM_VARIANTS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, _Build], Streams]] = {
    "nan": _nan, "flatline": _flatline, "non_monotonic": _swapped_timestamps, "gap": _gap,
    "degrees": _degrees, "shape_mismatch": _one_joint_short, "teleport": _no_velocity,
}


def _manifest(b: _Build, miner_id: str, video: _Video, subject: str, secondary_cameras: tuple[str, ...]) -> dict:
    robot, variant, seed = b.robot, b.variant, b.seed
    views = tuple(f"secondary_{name}" for name in secondary_cameras)  # distinct ids for distinct samples
    human = ("human",) if subject == "human" and variant != "human_video" else ()
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "bundle_version": "1.0.0",
        "submission_id": _uuid(robot.model_id, variant, seed, miner_id, "submission", *views, *human),
        "episode_id": _uuid(robot.model_id, variant, seed, miner_id, "episode", *views, *human),
        "miner_id": miner_id,
        "created_at": dt.datetime(2026, 11, 1, tzinfo=dt.UTC).isoformat(),
        "robot_model_id": robot.model_id,
        "robot_model_revision": robot.revision,
        "joint_names": list(robot.joint_names),
        "sampling_rate_hz": b.rate_hz,
        "time_base": "relative",
        "time_units": "ms",
        "units": {"joint_pos": "rad", "joint_vel": "rad/s"},
        "camera": video.cameras,
        "video": video.videos,
        "sync": {"sync_offset_ms_claimed": round(video.claimed_ms, 1)},
        "sample_variant": variant,
    }
    task = task_for(robot, b.duration_ms)
    if task is not None:
        manifest["task"] = {"task_id": task[0], "task_version": task[1]}
    return manifest


def _check_arguments(variant: str, subject: str, with_object: bool, secondary_cameras: tuple[str, ...]) -> None:
    if subject not in ("robot", "human"):
        raise ValueError(f"subject {subject!r}: robot or human")
    if variant not in EXPECTED:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    unknown = [n for n in secondary_cameras if n not in SECONDARY_VIEWS]
    if unknown or len(set(secondary_cameras)) != len(secondary_cameras):
        raise ValueError(f"secondary cameras {list(secondary_cameras)}: distinct names of {', '.join(SECONDARY_VIEWS)}")
    if variant in NEEDS_OBJECT and not with_object:
        raise ValueError(f"variant {variant!r} needs the object stream (with_object=True, a robot with an end effector)")


def make_episode(
    robot: RobotModel,
    variant: str = "genuine",
    *,
    seed: int = 0,
    miner_id: str = "miner-sample",
    duration_ms: float = 8000.0,
    rate_hz: float = 50.0,
    fps: float = 30.0,
    offset_ms: float | None = None,
    with_object: bool = True,
    secondary_cameras: tuple[str, ...] = (),
    scene_seed: int | None = None,
    subject: str = "robot",
) -> Episode:
    """One sample episode of ``robot``; ``with_object`` adds the object pose stream (robots
    with an end effector; the IK variants need it); ``secondary_cameras`` (names of
    ``SECONDARY_VIEWS``) films it from those viewpoints too. ``scene_seed`` fixes the
    background (one place, one fixed camera, whatever the motion); by default it follows
    ``seed``. ``subject`` ``"human"`` films a person demonstrating it
    (``render_human_video``; the variant ``human_video`` is the genuine one).

    A variant is the genuine episode with its terms: ``MOTION_VARIANTS`` (the motion),
    ``VIDEO_LENGTH`` / ``VIDEO_LATE_MS`` / ``SHOWN_MOTION`` / ``FRAME_VARIANTS`` / ``CLAIMS``
    (the video and its claimed offset), ``NOT_CARRIED`` / ``OBJECT_VARIANTS`` (the object
    stream) and ``STREAM_VARIANTS`` (the recorded joint streams), applied in that order."""
    if variant == "human_video":
        subject = "human"
    with_object = with_object and grasp_link(robot) is not None
    _check_arguments(variant, subject, with_object, secondary_cameras)
    rng = np.random.default_rng(seed)
    offset = float(rng.uniform(20, 180) if offset_ms is None else offset_ms)
    traj = task_trajectory(robot, duration_ms, rng)
    b = _Build(robot, variant, seed, rng, duration_ms, rate_hz,
               prismatic=np.array([t == "prismatic" for t in robot.joint_types]))
    if variant in MOTION_VARIANTS:
        traj = MOTION_VARIANTS[variant](traj, b)
    ts, q, v = _recorded(traj, b)
    video = _video(traj, b, offset=offset, fps=fps, subject=subject, scene_seed=scene_seed,
                   secondary_cameras=secondary_cameras)

    extra_arrays: dict[str, np.ndarray] = {}
    array_attributes: dict[str, dict] = {}
    if with_object:
        # its own generator: the joint and video streams stay those of a bundle without it
        obj_rng = np.random.default_rng([seed, 0x0B7EC7])
        t = video.frame_kin_t
        obj_t = np.unique(np.round(t[(t >= 0) & (t <= duration_ms)]).astype(np.int64))
        extra_arrays, array_attributes = object_stream(robot, traj, obj_t, duration_ms, obj_rng,
                                                       carried=variant not in NOT_CARRIED)
        if variant in OBJECT_VARIANTS:
            q, v = OBJECT_VARIANTS[variant](extra_arrays, ts, q, v, traj, b)

    vel: np.ndarray | None = v
    if variant in STREAM_VARIANTS:
        ts, q, vel = STREAM_VARIANTS[variant](ts, q, v, b)
    manifest = _manifest(b, miner_id, video, subject, secondary_cameras)
    return Episode(manifest, ts, q.astype(np.float32), None if vel is None else vel.astype(np.float32), video.mp4,
                   offset, extra_arrays, array_attributes, video.secondary_mp4)


def write_samples(out_dir: str | Path, robots: list[tuple[str, str]], variants: list[str], *, seed: int = 0,
                  miner_id: str = "miner-sample") -> list[Path]:
    out = Path(out_dir)
    paths = []
    for k, (model_id, revision) in enumerate(robots):
        robot = get_robot(model_id, revision)
        for i, variant in enumerate(variants):
            ep = make_episode(robot, variant, seed=seed * 1000 + k * 100 + i, miner_id=miner_id)
            paths.append(ep.write(out / f"{model_id}-{variant}-{seed}.zarr.zip"))
    return paths
