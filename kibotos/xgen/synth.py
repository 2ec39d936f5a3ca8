"""A procedural human cargo pickup (XGen test data; the seed's "placeholder motion"):
a skeleton with adult proportions walks up to a box on the floor, squats and leans, holds
the box between both palms, lifts it, carries it two steps, sets it down, lets go and
stands up. Phases in order: approach, grasp, lift, carry, place, release.

Output: the 33 MediaPipe landmarks in a z-up world frame (ground truth, with global
position), the same motion as a pose estimator would report it (MediaPipe world
convention: hip-centred, camera axes) and the ground-truth box, phases and palm contact.
Bone lengths are constant by construction (limbs are placed by two-link IK).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kibotos.xgen.phases import PHASES
from kibotos.xgen.skeleton import IDX, N_LANDMARKS, HumanMotion, validate_motion

# adult proportions, metres (hip joint height ~0.93 m for a ~1.75 m person)
THIGH, SHANK, ANKLE_H = 0.43, 0.42, 0.08
HIP_HALF, SPINE, SHOULDER_HALF, NECK = 0.09, 0.50, 0.19, 0.22
UPPER_ARM, FOREARM, PALM = 0.30, 0.27, 0.07
FOOT_HALF = 0.10  # ankles' half spacing
STAND_Z = 0.90
# seconds of the reference 6 s script; a clip of another duration scales them
_SCRIPT = (("walk", 1.2), ("reach", 0.8), ("grasp", 0.4), ("lift", 0.8), ("carry", 1.0), ("place", 0.8),
           ("release", 1.0))


@dataclass(frozen=True)
class SyntheticPickup:
    world: np.ndarray  # (T, 33, 3) z-up world landmarks, metres
    motion: HumanMotion  # what a pose estimator reports (MediaPipe world convention)
    fps: float
    phase: np.ndarray  # (T,) int8 index into PHASES
    box_pose: np.ndarray  # (T, 7) centre xyz + quat wxyz (world)
    box_size: np.ndarray  # (3,) x depth, y width (between the palms), z height
    palms: np.ndarray  # (T, 2, 3) palm centres (left, right), world
    camera_yaw: float  # radians: camera looks along (-sin, cos, 0); 0 = along +y


def _smooth(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _two_link(root: np.ndarray, target: np.ndarray, a: float, b: float, pole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(middle joint, reachable end) for a two-link limb from ``root`` towards ``target``,
    the middle joint bending towards ``pole``."""
    d_vec = target - root
    d = float(np.linalg.norm(d_vec))
    u = d_vec / max(d, 1e-9)
    d = float(np.clip(d, abs(a - b) + 1e-3, 0.995 * (a + b)))
    cos_a = (a * a + d * d - b * b) / (2 * a * d)
    v = pole - np.dot(pole, u) * u
    v = v / max(np.linalg.norm(v), 1e-9)
    mid = root + a * (cos_a * u + np.sqrt(max(0.0, 1 - cos_a * cos_a)) * v)
    return mid, root + d * u


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def camera_rotation(camera_yaw: float) -> np.ndarray:
    """World-from-camera rotation (columns: image right, image down, viewing direction) of a
    level camera turned ``camera_yaw`` about z from looking along +y."""
    fwd = _rot_z(camera_yaw) @ np.array([0.0, 1.0, 0.0])
    down = np.array([0.0, 0.0, -1.0])
    right = np.cross(down, fwd)
    return np.stack([right, down, fwd], axis=1)


def cargo_pickup(duration_s: float = 6.0, fps: float = 30.0, *, box_size=(0.35, 0.40, 0.40), step: float = 0.22,
                 heading: float = 0.0, camera_yaw: float = 0.0, start_xy=(0.0, 0.0)) -> SyntheticPickup:
    """The scripted motion (module docstring). ``heading`` turns the whole scene about z
    (the person walks along ``heading``), ``camera_yaw`` turns the observing camera."""
    n = max(int(round(duration_s * fps)), 8)
    t = np.arange(n) / fps
    scale = duration_s / sum(d for _, d in _SCRIPT)
    edges = np.cumsum([0.0] + [d * scale for _, d in _SCRIPT])
    seg = {name: (edges[i], edges[i + 1]) for i, (name, _) in enumerate(_SCRIPT)}
    bx, by, bz = box_size
    feet_x = 2 * step  # after three foot moves (right, left, right) the feet stand together here
    box_x0 = feet_x + 0.15 + 0.05 + bx / 2  # box stands just beyond the toes
    carry = 2 * step
    world = np.zeros((n, N_LANDMARKS, 3))
    phase = np.zeros(n, np.int8)
    box = np.zeros((n, 3))
    palms = np.zeros((n, 2, 3))
    rot = _rot_z(heading)
    offset = np.array([start_xy[0], start_xy[1], 0.0])
    pid = {name: i for i, name in enumerate(PHASES)}
    for i, ti in enumerate(t):
        # feet (ankle points) and pelvis in the person's frame (x forward, y left, z up)
        left = np.array([0.0, FOOT_HALF, ANKLE_H])
        right = np.array([0.0, -FOOT_HALF, ANKLE_H])
        pel = np.array([0.0, 0.0, STAND_Z])
        lean, squat = 0.0, 0.0
        carry_x = 0.0

        def walk(t0, t1, x0, lf, rf, ti):
            # three steps (right, left, right) of ``step`` each, from x0
            u = (ti - t0) / (t1 - t0)
            k = int(np.clip(np.floor(u * 3), 0, 2))
            w = _smooth(u * 3 - k) if 0 <= u <= 1 else (1.0 if u > 1 else 0.0)
            # foot positions before/after each of the three foot moves
            r_pos = [x0, x0 + step, x0 + step, x0 + 2 * step]
            l_pos = [x0, x0, x0 + 2 * step, x0 + 2 * step]
            if u >= 1:
                lf[0], rf[0] = x0 + 2 * step, x0 + 2 * step
                return x0 + 2 * step, 0.0
            swing_r = k in (0, 2)
            if swing_r:
                rf[0] = r_pos[k] + (r_pos[k + 1] - r_pos[k]) * w
                rf[2] += 0.08 * np.sin(np.pi * w)
                lf[0] = l_pos[k]
            else:
                lf[0] = l_pos[k] + (l_pos[k + 1] - l_pos[k]) * w
                lf[2] += 0.08 * np.sin(np.pi * w)
                rf[0] = r_pos[k]
            px = x0 + 2 * step * _smooth(u)
            sway = 0.03 * (1 if swing_r else -1) * np.sin(np.pi * w)
            return px, sway

        if ti < seg["walk"][1]:
            phase[i] = pid["approach"]
            px, sway = walk(*seg["walk"], 0.0, left, right, ti)
            pel[0], pel[1] = px, sway
            pel[2] = STAND_Z - 0.015 * abs(np.sin(2 * np.pi * (ti - seg["walk"][0]) / ((seg["walk"][1] - seg["walk"][0]) / 3)))
            swing = 0.12 * np.sin(2 * np.pi * (ti - seg["walk"][0]) / (2 * (seg["walk"][1] - seg["walk"][0]) / 3))
            pose_arms = ("hang", swing)
        else:
            left[0] = right[0] = feet_x
            pel[0] = feet_x
            if ti >= seg["carry"][0]:
                px, sway = walk(*seg["carry"], feet_x, left, right, ti)
                pel[0], pel[1] = px, sway
                carry_x = px - feet_x
                if ti >= seg["carry"][1]:
                    carry_x = carry
                    left[0] = right[0] = feet_x + carry
                    pel[0] = feet_x + carry
            # squat depth in [0, 1] over the script
            if ti < seg["reach"][1]:
                phase[i] = pid["approach"]
                squat = _smooth((ti - seg["reach"][0]) / (seg["reach"][1] - seg["reach"][0]))
                pose_arms = ("reach", squat)
            elif ti < seg["grasp"][1]:
                phase[i], squat = pid["grasp"], 1.0
                pose_arms = ("hold", 0.0)
            elif ti < seg["lift"][1]:
                phase[i] = pid["lift"]
                squat = 1.0 - _smooth((ti - seg["lift"][0]) / (seg["lift"][1] - seg["lift"][0]))
                pose_arms = ("hold", 1.0 - squat)
            elif ti < seg["carry"][1]:
                phase[i], squat = pid["carry"], 0.0
                pose_arms = ("hold", 1.0)
            elif ti < seg["place"][1]:
                phase[i] = pid["place"]
                squat = _smooth((ti - seg["place"][0]) / (seg["place"][1] - seg["place"][0]))
                pose_arms = ("hold", 1.0 - squat)
            else:
                phase[i] = pid["release"]
                u = (ti - seg["release"][0]) / (seg["release"][1] - seg["release"][0])
                squat = 1.0 - _smooth((u - 0.3) / 0.7)
                pose_arms = ("release", u)
            pel[2] = STAND_Z - 0.40 * squat
            pel[0] -= 0.02 * squat
            lean = np.deg2rad(55.0) * squat
        # torso: lean forward about the hips
        spine_dir = np.array([np.sin(lean), 0.0, np.cos(lean)])
        sh_mid = pel + SPINE * spine_dir
        fwd_t = np.array([np.cos(lean), 0.0, -np.sin(lean)])
        lat = np.array([0.0, 1.0, 0.0])
        shoulders = [sh_mid + SHOULDER_HALF * lat, sh_mid - SHOULDER_HALF * lat]
        hips = [pel + HIP_HALF * lat, pel - HIP_HALF * lat]
        # the box: rests on the floor until lifted, follows the palms while held
        grasp_z = bz / 2
        carry_z = 0.95
        box_c = np.array([box_x0 + carry_x, 0.0, grasp_z])
        kind, val = pose_arms
        if kind == "hold":
            box_c[2] = grasp_z + (carry_z - grasp_z) * val
        if kind == "release" or (kind == "hold" and ti >= seg["place"][1]):
            box_c = np.array([box_x0 + carry, 0.0, grasp_z])
        palm_targets = None
        if kind == "hang":
            palm_targets = [shoulders[s] + np.array([0.05 + val * (1 if s else -1), 0.04 * (1 - 2 * s), -0.52]) for s in (0, 1)]
        elif kind == "reach":
            hang = [shoulders[s] + np.array([0.05, 0.04 * (1 - 2 * s), -0.52]) for s in (0, 1)]
            on_box = [box_c + np.array([0.0, (by / 2 + 0.10) * (1 - 2 * s), 0.0]) for s in (0, 1)]
            w = _smooth(val * 1.4)
            palm_targets = [hang[s] * (1 - w) + on_box[s] * w for s in (0, 1)]
            if val > 0.7:  # the last part of the reach closes the hands onto the faces
                c = _smooth((val - 0.7) / 0.3)
                palm_targets = [box_c + np.array([0.0, (by / 2 + 0.10 * (1 - c)) * (1 - 2 * s), 0.0]) for s in (0, 1)]
        elif kind == "hold":
            palm_targets = [box_c + np.array([0.0, by / 2 * (1 - 2 * s), 0.0]) for s in (0, 1)]
        else:  # release: open outwards, then back to hanging
            u = val
            opened = [box_c + np.array([0.0, (by / 2 + 0.12 * _smooth(u / 0.3)) * (1 - 2 * s), 0.02]) for s in (0, 1)]
            hang = [shoulders[s] + np.array([0.05, 0.04 * (1 - 2 * s), -0.52]) for s in (0, 1)]
            w = _smooth((u - 0.3) / 0.7)
            palm_targets = [opened[s] * (1 - w) + hang[s] * w for s in (0, 1)]
        box[i] = box_c
        kp = world[i]
        names = ("left", "right")
        for s in (0, 1):
            side = names[s]
            foot = left if s == 0 else right
            knee, ankle = _two_link(hips[s], foot, THIGH, SHANK, np.array([1.0, 0.0, 0.0]))
            kp[IDX[f"{side}_hip"]] = hips[s]
            kp[IDX[f"{side}_knee"]] = knee
            kp[IDX[f"{side}_ankle"]] = ankle
            kp[IDX[f"{side}_heel"]] = ankle + np.array([-0.06, 0.0, -0.055])
            kp[IDX[f"{side}_foot_index"]] = ankle + np.array([0.15, 0.0, -0.06])
            # the wrist sits one palm length behind the palm centre, towards the shoulder
            # the palm centre lies one palm length beyond the wrist along the forearm: find
            # the wrist whose forearm direction puts the palm on its target (fixed point)
            palm = palm_targets[s]
            # a blend between two reachable targets may leave the arm's reach: pull it in
            reach = palm - shoulders[s]
            palm = shoulders[s] + reach * min(1.0, 0.58 / np.linalg.norm(reach))
            pole = np.array([-0.3, 0.6 * (1 - 2 * s), -1.0])  # elbows point down, back and out
            h = (palm - shoulders[s]) / np.linalg.norm(palm - shoulders[s])
            for _ in range(6):
                elbow, wrist = _two_link(shoulders[s], palm - PALM * h, UPPER_ARM, FOREARM, pole)
                h = (wrist - elbow) / np.linalg.norm(wrist - elbow)
            thumb_dir = fwd_t - np.dot(fwd_t, h) * h
            thumb_dir /= max(np.linalg.norm(thumb_dir), 1e-9)
            kp[IDX[f"{side}_shoulder"]] = shoulders[s]
            kp[IDX[f"{side}_elbow"]] = elbow
            kp[IDX[f"{side}_wrist"]] = wrist
            kp[IDX[f"{side}_index"]] = wrist + 0.09 * h + 0.02 * thumb_dir
            kp[IDX[f"{side}_pinky"]] = wrist + 0.08 * h - 0.03 * thumb_dir
            kp[IDX[f"{side}_thumb"]] = wrist + 0.04 * h + 0.04 * thumb_dir
            palms[i, s] = wrist + PALM * h
        head = sh_mid + NECK * spine_dir
        face_fwd = np.array([np.cos(lean * 0.6), 0.0, -np.sin(lean * 0.6)])
        up = np.cross(face_fwd, lat)
        kp[IDX["nose"]] = head + 0.10 * face_fwd
        for s, side in enumerate(names):
            sgn = 1 - 2 * s
            eye = head + 0.085 * face_fwd + 0.035 * up
            kp[IDX[f"{side}_eye"]] = eye + 0.032 * sgn * lat
            kp[IDX[f"{side}_eye_inner"]] = eye + 0.018 * sgn * lat
            kp[IDX[f"{side}_eye_outer"]] = eye + 0.048 * sgn * lat
            kp[IDX[f"{side}_ear"]] = head + 0.075 * sgn * lat
            kp[IDX[f"mouth_{side}"]] = head + 0.08 * face_fwd - 0.04 * up + 0.025 * sgn * lat
    world = world @ rot.T + offset
    box = box @ rot.T + offset
    palms = palms @ rot.T + offset
    q = np.array([np.cos(heading / 2), 0.0, 0.0, np.sin(heading / 2)])
    box_pose = np.concatenate([box, np.tile(q, (n, 1))], axis=1)
    cam = camera_rotation(camera_yaw)
    hip_mid = 0.5 * (world[:, IDX["left_hip"]] + world[:, IDX["right_hip"]])
    mp = (world - hip_mid[:, None]) @ cam  # camera axes (x right, y down, z away), hip-centred
    motion = validate_motion(mp, None, fps, source="synthetic")
    return SyntheticPickup(world=world, motion=motion, fps=fps, phase=phase, box_pose=box_pose,
                           box_size=np.array(box_size, float), palms=palms, camera_yaw=camera_yaw)
