"""A video of the procedural human (``synth.cargo_pickup``) that a pose estimator can
read: shaded capsule body parts (skin, shirt, trousers, shoes), a head with eyes, nose
and mouth, and the cargo box, rendered offscreen by MuJoCo from the camera
``SyntheticPickup.camera_yaw`` describes.

The OpenGL context (the process's one platform, ``kibotos.media.gl``) is made here rather than through
``mujoco.Renderer``, which picks its platform from ``MUJOCO_GL`` once, when mujoco is
first imported — usually long before anything renders.
"""

from __future__ import annotations

import numpy as np

from kibotos.xgen.skeleton import IDX
from kibotos.xgen.synth import SyntheticPickup

SKIN, SHIRT, TROUSERS, SHOES, DARK, BOX = ((0.87, 0.68, 0.55, 1), (0.15, 0.35, 0.75, 1), (0.2, 0.2, 0.25, 1),
                                           (0.1, 0.1, 0.1, 1), (0.05, 0.05, 0.05, 1), (0.65, 0.45, 0.25, 1))
# (from landmark(s), to landmark(s), radius m, colour): a landmark tuple is averaged
_LIMBS = [
    (("left_hip", "right_hip"), ("left_shoulder", "right_shoulder"), 0.13, SHIRT),
    (("left_hip",), ("right_hip",), 0.11, TROUSERS),
    (("left_shoulder",), ("right_shoulder",), 0.07, SHIRT),
]
for _s in ("left", "right"):
    _LIMBS += [
        ((f"{_s}_hip",), (f"{_s}_knee",), 0.075, TROUSERS),
        ((f"{_s}_knee",), (f"{_s}_ankle",), 0.06, TROUSERS),
        ((f"{_s}_heel",), (f"{_s}_foot_index",), 0.045, SHOES),
        ((f"{_s}_shoulder",), (f"{_s}_elbow",), 0.05, SHIRT),
        ((f"{_s}_elbow",), (f"{_s}_wrist",), 0.04, SKIN),
        ((f"{_s}_wrist",), (f"{_s}_index",), 0.035, SKIN),
        ((f"{_s}_wrist",), (f"{_s}_pinky",), 0.03, SKIN),
        ((f"{_s}_wrist",), (f"{_s}_thumb",), 0.018, SKIN),
    ]

_SCENE = """<mujoco><visual><headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5"/>
<global offwidth="1280" offheight="1280"/></visual>
<asset><texture name="grid" type="2d" builtin="checker" rgb1="0.75 0.75 0.72" rgb2="0.65 0.65 0.62" width="256" height="256"/>
<material name="grid" texture="grid" texrepeat="8 8"/></asset>
<worldbody><light pos="1 -2 4" dir="-0.2 0.4 -1" diffuse="0.6 0.6 0.6"/>
<geom type="plane" size="20 20 0.1" material="grid"/></worldbody></mujoco>"""


def _point(world: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    return world[[IDX[n] for n in names]].mean(axis=0)


def render_pickup(pickup: SyntheticPickup, width: int = 480, height: int = 640, distance: float = 3.2,
                  elevation_deg: float = -8.0) -> np.ndarray:
    """(T, height, width, 3) uint8 RGB frames; the camera follows the person's mean
    position from ``pickup.camera_yaw``."""
    import mujoco

    from kibotos.media.gl import mujoco_gl_context

    GLContext = mujoco_gl_context()  # the process's one GL platform (kibotos.media.gl)

    model = mujoco.MjModel.from_xml_string(_SCENE)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    hips = 0.5 * (pickup.world[:, IDX["left_hip"]] + pickup.world[:, IDX["right_hip"]])
    cam.lookat[:] = [*hips[:, :2].mean(axis=0), 0.85]
    cam.distance = distance
    cam.azimuth = 90.0 + np.degrees(pickup.camera_yaw)
    cam.elevation = elevation_deg
    frames = np.empty((len(pickup.world), height, width, 3), np.uint8)
    gl = GLContext(width, height)
    gl.make_current()
    context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
    try:
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, context)
        scene = mujoco.MjvScene(model, maxgeom=256)
        option, perturb = mujoco.MjvOption(), mujoco.MjvPerturb()
        viewport = mujoco.MjrRect(0, 0, width, height)
        for t, world in enumerate(pickup.world):
            mujoco.mjv_updateScene(model, data, option, perturb, cam, mujoco.mjtCatBit.mjCAT_ALL, scene)
            _add_person(mujoco, scene, world)
            box = pickup.box_pose[t]
            box_rot = np.empty(9)
            mujoco.mju_quat2Mat(box_rot, box[3:])
            _add(mujoco, scene, mujoco.mjtGeom.mjGEOM_BOX, pickup.box_size / 2, box[:3], box_rot, BOX)
            mujoco.mjr_render(viewport, scene, context)
            rgb = np.empty((height, width, 3), np.uint8)
            mujoco.mjr_readPixels(rgb, None, viewport, context)
            frames[t] = rgb[::-1]
    finally:
        context.free()
        gl.free()
    return frames


def _add(mujoco, scene, kind, size, pos, mat, rgba):
    g = scene.geoms[scene.ngeom]
    mujoco.mjv_initGeom(g, kind, np.asarray(size, float), np.asarray(pos, float),
                        np.asarray(mat, float).reshape(9), np.asarray(rgba, np.float32))
    scene.ngeom += 1
    return g


def _add_person(mujoco, scene, world: np.ndarray) -> None:
    capsule = mujoco.mjtGeom.mjGEOM_CAPSULE
    for a, b, radius, rgba in _LIMBS:
        g = _add(mujoco, scene, capsule, [radius, 0, 0], [0, 0, 0], np.eye(3), rgba)
        mujoco.mjv_connector(g, capsule, radius, _point(world, a), _point(world, b))
    # head: an ellipsoid oriented by the face landmarks, with hair, eyes, nose and mouth
    ears = world[IDX["left_ear"]] - world[IDX["right_ear"]]
    centre = 0.5 * (world[IDX["left_ear"]] + world[IDX["right_ear"]])
    fwd = world[IDX["nose"]] - centre
    y = ears / np.linalg.norm(ears)
    x = fwd - np.dot(fwd, y) * y
    x /= np.linalg.norm(x)
    rot = np.stack([x, y, np.cross(x, y)], axis=1)
    neck = 0.5 * (world[IDX["left_shoulder"]] + world[IDX["right_shoulder"]])
    g = _add(mujoco, scene, capsule, [0.05, 0, 0], [0, 0, 0], np.eye(3), SKIN)
    mujoco.mjv_connector(g, capsule, 0.05, neck, centre - 0.06 * rot[:, 2])
    ellipsoid = mujoco.mjtGeom.mjGEOM_ELLIPSOID
    _add(mujoco, scene, ellipsoid, [0.095, 0.08, 0.115], centre, rot, SKIN)
    _add(mujoco, scene, ellipsoid, [0.1, 0.085, 0.06], centre + 0.05 * rot[:, 2] - 0.015 * rot[:, 0], rot, DARK)
    sphere = mujoco.mjtGeom.mjGEOM_SPHERE
    for side in ("left", "right"):
        _add(mujoco, scene, sphere, [0.014, 0, 0], world[IDX[f"{side}_eye"]] + 0.005 * x, np.eye(3), DARK)
    _add(mujoco, scene, sphere, [0.018, 0, 0], world[IDX["nose"]], np.eye(3), SKIN)
    g = _add(mujoco, scene, capsule, [0.008, 0, 0], [0, 0, 0], np.eye(3), (0.6, 0.2, 0.2, 1))
    mujoco.mjv_connector(g, capsule, 0.008, world[IDX["mouth_left"]], world[IDX["mouth_right"]])
