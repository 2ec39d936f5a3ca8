"""A rollout preview: the policy replaying one clip in the evaluation environment (no DI,
DR, pushes or early termination), rendered offscreen by MuJoCo from the simulator's own
state after every control step and encoded as an mp4 (``kibotos eval --preview``, the
``eval`` job when a request asks for it). It is stored next to the policy in the object
store, ``xmimic/policies/<policy_id>/preview.mp4`` (``preview_key``), where the read API
serves it (``GET /policies/<id>/preview.mp4``) and the policy page's ``<video>`` finds it.

MuJoCo rather than Genesis: the MuJoCo backend's state is the rollout itself (no second
scene to keep in sync), and a 320x240 software-GL frame costs milliseconds where a
Genesis scene costs tens of seconds to build on this CPU. The GL context is the process's
one platform (``kibotos.media.gl``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import cast

import numpy as np
import torch

from kibotos.xmimic.clips import Clip
from kibotos.xmimic.config import XMimicConfig

PREVIEW_NAME = "preview.mp4"
ROBOT_RGBA = (0.25, 0.45, 0.85, 1.0)
MAX_PREVIEW_BYTES = 256 << 20


def preview_key(policy_id: str) -> str:
    """Object-store key of a policy's rollout preview: beside its ``model.pt``."""
    return f"xmimic/policies/{policy_id}/{PREVIEW_NAME}"


def store_preview(store, policy_id: str, path: Path) -> str:
    """Upload a written preview next to the policy; returns its URI."""
    return store.put_file(path, preview_key(policy_id)).uri


def find_preview(policy_id: str, *, store=None, home: Path | None = None) -> bytes | None:
    """A policy's preview: the object store's (any node's evaluation), else the local
    registry's (``kibotos eval --preview`` before previews were stored); None when neither."""
    if store is not None and store.stat(preview_key(policy_id)) is not None:
        return store.read_bytes(store.uri_for(preview_key(policy_id)), MAX_PREVIEW_BYTES)
    if home is not None:
        p = Path(home) / "policies" / policy_id / PREVIEW_NAME
        if p.is_file():
            return p.read_bytes()
    return None


def rollout_frames(clip: Clip, cfg: XMimicConfig, policy_path: Path | None, *, task: str | None = None,
                   width: int = 320, height: int = 240) -> tuple[np.ndarray, dict]:
    """(T, height, width, 3) uint8 frames of one evaluation episode, and its outcome."""
    import mujoco

    from kibotos.media.gl import mujoco_gl_context
    from kibotos.xmimic.env import XMimicEnv
    from kibotos.xmimic.evaluate import load_policy
    from kibotos.xmimic.sim.mujoco_sim import STATE_SPEC, MujocoSim

    env = XMimicEnv([clip], cfg, task=task, num_envs=1, backend="mujoco", training=False)
    actor = load_policy(policy_path, env)[0] if policy_path is not None else None
    sim, lay = cast(MujocoSim, env.sim), cast(MujocoSim, env.sim).lay  # backend="mujoco"
    model = copy.copy(sim.models[0])  # the simulator's own model, lit for the camera
    model.vis.headlight.ambient[:] = 0.45
    model.vis.headlight.diffuse[:] = 0.55
    data = mujoco.MjData(model)
    # the training model carries no robot meshes (only the palm pads collide): the robot
    # is drawn as a capsule from each body to its parent
    bones = [(b, int(model.body_parentid[b])) for b in range(1, model.nbody)
             if model.body_parentid[b] > 0 and b != lay.box_body]
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.distance, cam.azimuth, cam.elevation = 2.6, 135.0, -18.0
    gl = mujoco_gl_context()(width, height)
    gl.make_current()
    context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
    frames, outcome = [], {}
    try:
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, context)
        scene = mujoco.MjvScene(model, maxgeom=2000)
        # software GL: shadows, reflections and the skybox are most of a frame's cost
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
            scene.flags[flag] = 0
        option, perturb = mujoco.MjvOption(), mujoco.MjvPerturb()
        option.geomgroup[:] = 1  # the palm pads too
        viewport = mujoco.MjrRect(0, 0, width, height)

        def grab() -> None:
            mujoco.mj_setState(model, data, sim.x[0], STATE_SPEC)
            mujoco.mj_forward(model, data)
            # between the pelvis and the box: both stay in view through the pickup
            cam.lookat[:] = 0.5 * (data.xpos[lay.pelvis] + data.xpos[lay.box_body])
            mujoco.mjv_updateScene(model, data, option, perturb, cam, mujoco.mjtCatBit.mjCAT_ALL, scene)
            for b, p in bones:
                if scene.ngeom >= scene.maxgeom or np.linalg.norm(data.xpos[b] - data.xpos[p]) < 1e-3:
                    continue
                g = scene.geoms[scene.ngeom]
                mujoco.mjv_initGeom(g, mujoco.mjtGeom.mjGEOM_CAPSULE, np.zeros(3), np.zeros(3), np.eye(3).ravel(),
                                    np.array(ROBOT_RGBA, np.float32))
                mujoco.mjv_connector(g, mujoco.mjtGeom.mjGEOM_CAPSULE, 0.025, data.xpos[p], data.xpos[b])
                scene.ngeom += 1
            mujoco.mjr_render(viewport, scene, context)
            rgb = np.empty((height, width, 3), np.uint8)
            mujoco.mjr_readPixels(rgb, None, viewport, context)
            frames.append(rgb[::-1].copy())

        obs = env.get_observations()
        grab()
        with torch.inference_mode():
            for _ in range(env.max_episode_length + 1):
                act = actor(obs) if actor is not None else torch.zeros(1, env.num_actions)
                obs, _, _, extras = env.step(act)
                out = extras.get("episode_outcome")
                if out is not None:  # the environment has reset: the last frame grabbed is the episode's end
                    outcome = {"success": bool(out["success"][0]),
                               "final_height_error_m": float(out["final_height_error_m"][0])}
                    break
                grab()
    finally:
        context.free()
        gl.free()
    return np.stack(frames), outcome


def write_preview(clip: Clip, cfg: XMimicConfig, policy_path: Path | None, dest: Path, *, task: str | None = None,
                  width: int = 320, height: int = 240) -> dict:
    """Render and write ``dest`` (mp4 at the control rate: one frame per control step);
    returns frames, fps, outcome."""
    from kibotos.media.video import encode_mp4

    frames, outcome = rollout_frames(clip, cfg, policy_path, task=task, width=width, height=height)
    fps = float(cfg.sim.control_fps)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp.mp4")
    tmp.write_bytes(encode_mp4(frames, fps))
    tmp.replace(dest)
    return {"path": str(dest), "frames": len(frames), "fps": fps, "clip": clip.clip_id, **outcome}
