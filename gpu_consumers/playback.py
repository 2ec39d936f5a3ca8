"""Genesis playback (design §6): replay the submitted joints on the registered robot model,
render it through the manifest camera at chosen keyframes, and put each simulated frame
next to the real one.

Two pure pieces and a job function, no broker and no Ray (a Ray actor keeps one
``PlaybackRenderer`` warm and calls ``run_playback`` per submission):

* ``PlaybackRenderer`` — one Genesis scene per robot model, built on first use and reused:
  the robot as a *kinematic* (visualization-only) entity, no collision geometry, no
  physics; one offscreen camera. ``render`` sets each joint row with ``set_qpos`` and
  rasterizes it through a camera placed from the manifest extrinsics.
* ``run_playback`` — keyframes (``gpu_consumers.keyframes``), real frames decoded at those
  indices only, simulated frames rendered, both stored as PNG, and a ``GateResult``
  (gate ``playback``) whose metrics hold the keyframes, the stored pairs, the sync offset
  used and a per-keyframe sim-vs-real silhouette overlap (informational).

Measured here (CPU backend, OSMesa, Franka Panda, 320x240, on 2 cores shared with other
work, so ranges): ``import genesis`` 9-25 s; then the scene (``gs.init`` + URDF + build +
first render) ~15-18 s with a cold cache (kernel compilation ~7 s of it), ~8-11 s warm;
then ~0.1-0.2 s per keyframe (``set_qpos`` ~1 ms, the RGB pass 50-150 ms, the
segmentation pass 30-70 ms).
Two choices make the build cheap: the kinematic material (a full rigid entity compiles the
physics solver) and ``collision=False`` (a rigid URDF's collision meshes are made
watertight at load: ~30 s for the Panda, useless for rendering).

Caches (``configure_caches``; all under ``cache_dir``, by default
``$XDG_CACHE_HOME/kibotos/genesis`` or ``~/.cache/kibotos/genesis``, persistent, so a
second process reuses what the first compiled):

* ``quadrants/`` — Genesis' compiled kernels (Quadrants' offline cache,
  ``QD_OFFLINE_CACHE_FILE_PATH``); written by ``gs.destroy()``, which Genesis registers
  at exit: a process killed with SIGKILL leaves it unwritten.
* ``genesis/`` — Genesis' processed-asset caches (``GS_CACHE_FILE_PATH``: convex hulls,
  watertight meshes…; mostly unused with collision off).
* ``mesa/`` — compiled GL shaders of the software rasterizer (``MESA_SHADER_CACHE_DIR``).
* ``urdf/`` — model files with absolute mesh paths (below).

These environment variables only take effect before Genesis initializes in the process;
values already set by an operator win.

Model files: example-robot-data URDFs name meshes ``package://example-robot-data/...``.
Genesis' MuJoCo-based URDF parser resolves those against the URDF's own folder, fails,
and falls back to its legacy parser with a warning. The renderer writes a copy of the
URDF whose mesh paths are absolute, which both parsers load.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gpu_consumers.keyframes import STRATEGIES, Keyframe, select_keyframes
from gpu_consumers.registry import EVIDENCE_GATES
from kibotos.bundle.kinematics import METHOD as JOINT_VEL_METHOD
from kibotos.bundle.kinematics import joint_velocity, npy_bytes
from kibotos.bundle.reader import JOINT_POS, TIMESTAMPS, VIDEO_ENCODED, VIDEO_FRAMES, BundleView
from kibotos.config.gates import KeyframeConfig, load_config
from kibotos.errors import BundleError, KibotosError, ServiceError
from kibotos.media.gl import current_gl_platform, default_genesis_cache, genesis_caches, process_gl_platform
from kibotos.media.phash import phash
from kibotos.media.video import decode_rgb_frames
from kibotos.reports.model import GateResult
from kibotos.robots import RobotModel, get_robot

GATE_ID = EVIDENCE_GATES["playback"]
# a real pixel is foreground when it differs from the per-pixel median of the keyframes
# by more than this (max over RGB channels)
FOREGROUND_LEVEL = 40
NEAR_M, FAR_M = 0.02, 50.0
_GS_LOCK = threading.Lock()


# the cache root's default (``Settings.genesis_cache_dir``'s) and the variables Genesis reads
# for its caches: set by ``kibotos.media.gl`` (a GPU actor: ``configure_process`` at its start)
default_cache_dir = default_genesis_cache
configure_caches = genesis_caches


def _genesis(backend: str, cache_dir: Path, gl_platform: str | None):
    """The ``genesis`` module, initialized once per process (later calls reuse it, whatever
    backend they ask for)."""
    with _GS_LOCK:
        if "genesis" not in sys.modules:
            if gl_platform:
                # Genesis and PyOpenGL settle the GL platform when they are imported: the
                # process's own (configure_process at a GPU actor's start) wins
                process_gl_platform(gl_platform)
        elif gl_platform and current_gl_platform() != gl_platform:
            raise ServiceError(f"genesis was imported before the renderer with PYOPENGL_PLATFORM="
                               f"{current_gl_platform()!r}; offscreen rendering needs "
                               f"{gl_platform!r}: set it in the environment or import genesis later")
        import genesis as gs

        if not gs._initialized:
            genesis_caches(cache_dir)  # read when Genesis initializes and when it compiles (already set at a GPU actor's start)
            gs.init(backend=gs.cpu if backend == "cpu" else gs.gpu, logging_level="warning")
        return gs


def resolved_urdf(robot: RobotModel, cache_dir: str | Path) -> Path:
    """A copy of the robot's URDF whose mesh paths are absolute (``package://PKG/...``
    resolved against the ancestor folder named ``PKG``), written once under ``cache_dir``."""
    if robot.model_format != "urdf":
        raise ServiceError(f"{robot.model_id}@{robot.revision}: playback supports URDF models, "
                           f"not {robot.model_format}", reason_code="playback_model_unsupported")
    source = robot.model_path.read_bytes()
    dest = Path(cache_dir) / "urdf" / (f"{robot.model_id}-{robot.revision}-"
                                       f"{hashlib.sha256(source).hexdigest()[:16]}.urdf")
    if dest.is_file():
        return dest
    root = ET.fromstring(source)
    folder = robot.model_path.parent
    for mesh in root.iter("mesh"):
        name = mesh.get("filename", "")
        if name.startswith("package://"):
            package, _, rest = name[len("package://"):].partition("/")
            base = next((p for p in folder.parents if p.name == package), None)
            path = base / rest if base is not None else folder / rest
        else:
            path = folder / name
        if not path.is_file():
            raise ServiceError(f"{robot.model_id}: mesh {name!r} not found (looked at {path})",
                               reason_code="playback_model_unsupported")
        mesh.set("filename", str(path.resolve()))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, dest)
    return dest


def genesis_camera_pose(camera_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pos, lookat, up)`` of a Genesis camera for an OpenCV camera-to-world pose.

    OpenCV camera axes are x right, y down, z forward; Genesis (OpenGL) cameras look down
    their -z with y up. The camera looks along OpenCV +z and its image "up" is OpenCV -y.
    """
    pose = np.asarray(camera_to_world, dtype=np.float64)
    pos = pose[:3, 3]
    return pos, pos + pose[:3, 2], -pose[:3, 1]


def scaled_intrinsics(intrinsics: dict, width: int, height: int) -> dict:
    """The intrinsics of the same camera at another image size."""
    sx, sy = width / float(intrinsics["width"]), height / float(intrinsics["height"])
    return {"fx": float(intrinsics["fx"]) * sx, "fy": float(intrinsics["fy"]) * sy,
            "cx": float(intrinsics["cx"]) * sx, "cy": float(intrinsics["cy"]) * sy,
            "width": width, "height": height}


def pinhole_warp(intrinsics: dict, width: int, height: int) -> tuple[float, np.ndarray | None]:
    """Genesis renders a centred pinhole with one focal length ``f`` (vertical field of view
    ``2 atan(H / 2f)``). Returns that field of view in degrees for ``f = min(fx, fy)`` and
    the affine map from the Genesis image to the manifest camera's image (``None`` when
    the two agree within half a pixel): an off-centre principal point is a shift of the
    image, unequal focal lengths a stretch of one axis."""
    fx, fy, cx, cy = (float(intrinsics[k]) for k in ("fx", "fy", "cx", "cy"))
    f = min(fx, fy)
    fov = math.degrees(2.0 * math.atan(0.5 * height / f))
    a, b = fx / f, fy / f
    warp = np.array([[a, 0.0, cx - a * width / 2.0], [0.0, b, cy - b * height / 2.0]])
    corners = np.array([[0.0, 0.0, 1.0], [width, height, 1.0]])
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    if np.abs(corners @ warp.T - corners @ identity.T).max() <= 0.5:
        return fov, None
    return fov, warp


@dataclass(frozen=True)
class RenderResult:
    rgb: np.ndarray  # (K, H, W, 3) uint8
    mask: np.ndarray  # (K, H, W) bool: robot pixels
    wall_s: np.ndarray  # (K,) seconds per frame (set_qpos + render + warp)


class _RobotScene:
    """One robot in one Genesis scene with one camera."""

    def __init__(self, gs, robot: RobotModel, width: int, height: int, cache_dir: Path):
        self.robot = robot
        self.scene = gs.Scene(
            show_viewer=False,
            vis_options=gs.options.VisOptions(show_world_frame=False, segmentation_level="entity"),
        )
        # kinematic: visualization only (no physics, no collision kernels); collision=False:
        # no watertight collision meshes, the costliest part of loading a rigid URDF
        self.entity = self.scene.add_entity(
            gs.morphs.URDF(file=str(resolved_urdf(robot, cache_dir)), fixed=True, collision=False),
            material=gs.materials.Kinematic(),
        )
        self.camera = self.scene.add_camera(res=(width, height), pos=(2.0, 0.0, 1.0), lookat=(0.0, 0.0, 0.5),
                                            fov=40.0, near=NEAR_M, far=FAR_M, GUI=False)
        self.scene.build()
        names = {j.name: j for j in self.entity.joints}
        missing = [n for n in robot.joint_names if n not in names]
        if missing:
            raise ServiceError(f"{robot.model_id}: joints missing from the Genesis model: {missing}",
                               reason_code="playback_model_unsupported")
        self.qs_idx = [int(names[n].qs_idx_local[0]) for n in robot.joint_names]
        self.set_qpos(robot.home_qpos)
        self.camera.render(rgb=True, segmentation=True, force_render=True)  # compiles the render path

    def set_qpos(self, q: np.ndarray) -> None:
        self.entity.set_qpos(np.asarray(q, dtype=np.float32), qs_idx_local=self.qs_idx)

    def set_camera(self, fov_deg: float, camera_to_world: np.ndarray) -> None:
        cam = self.camera
        if not math.isclose(cam.fov, fov_deg, rel_tol=1e-9):
            # Genesis 1.4 fixes the field of view at construction; the rasterizer re-reads
            # `_fov` on every pose update, and the derived values are cached properties
            cam._fov = float(fov_deg)
            for cached in ("f", "intrinsics", "projection_matrix"):
                cam.__dict__.pop(cached, None)
        pos, lookat, up = genesis_camera_pose(camera_to_world)
        cam.set_pose(pos=pos, lookat=lookat, up=up)

    def close(self) -> None:
        self.scene.destroy()


class PlaybackRenderer:
    """Kinematic replay of joint rows on a registered robot model, rendered offscreen.

    :param robot: the model rendered when ``render`` is not told another one.
    :param width: rendered image width (every camera is rescaled to this size).
    :param height: rendered image height.
    :param backend: Genesis backend, ``"cpu"`` or ``"gpu"`` (kinematics only: rendering is
        OpenGL either way). Genesis is initialized once per process.
    :param cache_dir: persistent cache root (``default_cache_dir()`` when ``None``).
    :param gl_platform: PyOpenGL platform, ``"osmesa"`` (software, CPU) or ``"egl"``
        (GPU); by default OSMesa for the CPU backend, EGL otherwise.

    Scenes are built on first use, one per ``(model_id, revision)``, and reused; a Ray
    actor should hold one renderer for its lifetime (``warm_up`` builds ahead of jobs).
    Not thread-safe: one render at a time.
    """

    def __init__(self, robot: RobotModel, width: int = 320, height: int = 240, *, backend: str = "cpu",
                 cache_dir: str | Path | None = None, gl_platform: str | None = None):
        if backend not in ("cpu", "gpu"):
            raise ValueError(f"backend must be 'cpu' or 'gpu', not {backend!r}")
        self.robot = robot
        self.width, self.height = int(width), int(height)
        self.backend = backend
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.gl_platform = gl_platform or ("osmesa" if backend == "cpu" else "egl")
        self._scenes: dict[tuple[str, str], _RobotScene] = {}
        self.build_seconds: dict[tuple[str, str], float] = {}

    def _scene(self, robot: RobotModel | None) -> _RobotScene:
        robot = robot or self.robot
        if robot.key not in self._scenes:
            t0 = time.perf_counter()
            gs = _genesis(self.backend, self.cache_dir, self.gl_platform)
            self._scenes[robot.key] = _RobotScene(gs, robot, self.width, self.height, self.cache_dir)
            self.build_seconds[robot.key] = round(time.perf_counter() - t0, 3)
        return self._scenes[robot.key]

    def warm_up(self, robot: RobotModel | None = None) -> float:
        """Build the scene of ``robot`` (default: the renderer's) now; seconds it took (0 if built)."""
        key = (robot or self.robot).key
        built = key in self._scenes
        self._scene(robot)
        return 0.0 if built else self.build_seconds[key]

    def render_frames(self, joint_pos_rows: np.ndarray, joint_names: list[str] | tuple[str, ...],
                      camera_intrinsics: dict, camera_to_world: np.ndarray, *,
                      robot: RobotModel | None = None) -> RenderResult:
        """``render`` with the robot masks and the wall time of every frame."""
        robot = robot or self.robot
        rows = np.asarray(joint_pos_rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(joint_names):
            raise KibotosError(f"joint rows of shape {rows.shape} for {len(joint_names)} joint names",
                               reason_code="playback_failed")
        if not np.isfinite(rows).all():
            raise KibotosError("non-finite joint positions", reason_code="playback_failed")
        unknown = [n for n in joint_names if n not in robot.joint_names]
        if unknown:
            raise KibotosError(f"joints unknown to {robot.model_id}@{robot.revision}: {unknown[:5]}",
                               reason_code="playback_failed")
        pose = np.asarray(camera_to_world, dtype=np.float64)
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise KibotosError("camera extrinsics must be a finite 4x4 matrix", reason_code="playback_failed")
        # joints the bundle does not carry stay at the model's home pose
        full = np.tile(robot.home_qpos, (rows.shape[0], 1))
        full[:, [robot.joint_names.index(n) for n in joint_names]] = rows
        intr = scaled_intrinsics(camera_intrinsics, self.width, self.height)
        fov, warp = pinhole_warp(intr, self.width, self.height)

        scene = self._scene(robot)
        scene.set_camera(fov, pose)
        k = rows.shape[0]
        rgb = np.empty((k, self.height, self.width, 3), np.uint8)
        mask = np.empty((k, self.height, self.width), bool)
        wall = np.empty(k)
        for i in range(k):  # the rasterizer draws one configuration at a time
            t0 = time.perf_counter()
            scene.set_qpos(full[i])
            img, _, seg, _ = scene.camera.render(rgb=True, segmentation=True, force_render=True)
            img, seg = np.asarray(img), np.asarray(seg) > 0
            if warp is not None:
                size = (self.width, self.height)
                img = cv2.warpAffine(img, warp, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                seg = cv2.warpAffine(seg.astype(np.uint8), warp, size, flags=cv2.INTER_NEAREST,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
            rgb[i], mask[i] = img, seg
            wall[i] = time.perf_counter() - t0
        return RenderResult(rgb, mask, wall)

    def render(self, joint_pos_rows: np.ndarray, joint_names: list[str] | tuple[str, ...],
               camera_intrinsics: dict, camera_to_world: np.ndarray, *,
               robot: RobotModel | None = None) -> np.ndarray:
        """(K, H, W, 3) uint8 RGB images of the robot at each joint row.

        :param joint_pos_rows: (K, J) joint positions, columns in ``joint_names`` order.
        :param joint_names: the bundle's joint names (any subset of the model's, any order).
        :param camera_intrinsics: ``{fx, fy, cx, cy, width, height}`` (OpenCV pinhole; rescaled
            to the renderer's size; distortion ignored).
        :param camera_to_world: 4x4 OpenCV camera-to-world pose, world = robot base frame.
        :param robot: another registered model (its scene is built once, then cached).
        :raises KibotosError: ``playback_failed`` for rows, names or poses that cannot be replayed.
        """
        return self.render_frames(joint_pos_rows, joint_names, camera_intrinsics, camera_to_world,
                                  robot=robot).rgb

    def close(self) -> None:
        for scene in self._scenes.values():
            scene.close()
        self._scenes.clear()


def joints_at(ts_ms: np.ndarray, joint_pos: np.ndarray, t_ms: np.ndarray) -> np.ndarray:
    """(len(t_ms), J) joint positions linearly interpolated at kinematic times ``t_ms``."""
    t = np.asarray(ts_ms, dtype=np.float64)
    q = np.asarray(joint_pos, dtype=np.float64)
    if t.size == 1:
        return np.repeat(q, len(t_ms), axis=0)
    idx = np.clip(np.searchsorted(t, t_ms, side="right") - 1, 0, t.size - 2)
    w = np.clip((np.asarray(t_ms) - t[idx]) / np.maximum(t[idx + 1] - t[idx], 1e-9), 0.0, 1.0)[:, None]
    return q[idx] * (1.0 - w) + q[idx + 1] * w


def real_frames(view: BundleView, indices: list[int], width: int, height: int) -> dict[int, np.ndarray]:
    """The bundle's video frames at ``indices``, RGB, resized to ``width`` x ``height``."""
    if view.has(VIDEO_ENCODED):
        frames = decode_rgb_frames(view.read(VIDEO_ENCODED).tobytes(), indices)
    else:
        raw = view.read(VIDEO_FRAMES)
        frames = {}
        for i in indices:
            if 0 <= i < raw.shape[0]:
                f = raw[i].reshape(raw.shape[1], raw.shape[2], -1)
                frames[i] = f[..., :3] if f.shape[2] >= 3 else np.repeat(f[..., :1], 3, axis=2)
    return {i: f if f.shape[:2] == (height, width) else cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA)
            for i, f in frames.items()}


def foreground_masks(frames: np.ndarray) -> np.ndarray | None:
    """(K, H, W) bool: pixels that differ from the per-pixel median of the K frames (the
    static background, when the robot moves between keyframes). ``None`` below 3 frames."""
    if frames.shape[0] < 3:
        return None
    blurred = np.stack([cv2.GaussianBlur(f, (5, 5), 0) for f in frames]).astype(np.int16)
    background = np.median(blurred, axis=0)
    fg = (np.abs(blurred - background).max(axis=-1) > FOREGROUND_LEVEL).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    return np.stack([cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel) for m in fg]) > 0


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise KibotosError("PNG encoding failed", reason_code="playback_failed")
    return buf.tobytes()


def _ratio(num: np.ndarray, den: np.ndarray) -> list[float | None]:
    return [round(float(n) / float(d), 4) if d > 0 else None for n, d in zip(num, den)]


def _transition_times(t_ms: np.ndarray, on: np.ndarray) -> np.ndarray:
    """Kinematic times halfway between the samples where ``on`` switches."""
    change = np.flatnonzero(on[1:] != on[:-1]) + 1
    return (t_ms[change - 1] + t_ms[change]) / 2.0


def task_phase_boundaries(view: BundleView) -> tuple[np.ndarray | None, dict[str, int]]:
    """The bundle's task-phase boundaries on the kinematic clock, and how many each source gave:

    * ``contacts/<link>`` — every switch of a contact stream (grasp made, grasp released), on
      the kinematics' timestamps or on those of the object stream of the same length;
    * ``task:<phase>`` — the phase events of the declared task (``kibotos.tasks``: grasp,
      lift, hold, carry, place, release) that the bundle's evidence shows.

    ``(None, {})`` when the bundle has neither: the keyframes fall back to move/pause
    transitions of the joint speed."""
    from kibotos.tasks import evaluate_task
    from kibotos.tasks.objects import read_tracks

    kin_t = view.read(TIMESTAMPS).astype(np.float64)
    times: list[np.ndarray] = []
    sources: dict[str, int] = {}
    tracks, _ = read_tracks(view)
    clocks = [kin_t] + [t.t_ms for t in tracks]
    for info in view.arrays():
        parts = info.path.split("/")
        if len(parts) != 2 or parts[0] != "contacts" or len(info.shape) != 1:
            continue
        c = view.read(info.path)
        if not (np.issubdtype(c.dtype, np.number) or c.dtype == bool) or not np.all(np.isfinite(c)):
            continue
        clock = next((t for t in clocks if t.shape[0] == c.shape[0]), None)
        if clock is None:
            continue
        found = _transition_times(clock, c.astype(bool))
        if found.size:
            times.append(found)
            sources[info.path] = int(found.size)
    try:
        task = evaluate_task(view)
    except BundleError:  # gates A-E judged the streams; no task events from a stream they refused
        task = None
    if task is not None and task.metrics.get("applicable"):
        for phase in task.metrics.get("phases") or []:
            if phase.get("t_ms") is not None:
                times.append(np.array([float(phase["t_ms"])]))
                sources[f"task:{phase['name']}"] = 1
    if not times:
        return None, {}
    return np.unique(np.concatenate(times)), sources


def _computed_velocity(view: BundleView, store, key_prefix: str) -> dict[str, Any]:
    """Design §12: a bundle without ``kinematics/joint_vel`` gets the validator's estimate,
    stored (gate A flags it)."""
    vel = joint_velocity(view)
    if vel.source != "computed":
        return {}
    ref = store.put_bytes(npy_bytes(vel.values), f"{key_prefix}/joint_vel_computed.npy")
    return {"joint_vel_computed_uri": ref.uri, "joint_vel_method": JOINT_VEL_METHOD}


def playback_keyframes(view: BundleView, ts: np.ndarray, q: np.ndarray, sync_offset_ms: float,
                       kf_cfg: KeyframeConfig) -> tuple[list[Keyframe], dict[str, Any]]:
    """The keyframes (at the task's phase boundaries when the bundle shows them, else the
    joint speed's moves and pauses) and the metrics that say how they were chosen."""
    video = view.manifest.video["primary"]
    bounds_ms, bound_sources = task_phase_boundaries(view)
    keyframes: list[Keyframe] = select_keyframes(ts, q, video.fps, video.frame_count, sync_offset_ms,
                                                 config=kf_cfg, phase_boundaries_ms=bounds_ms)
    return keyframes, {
        "phase_boundaries_from": "task_evidence" if bound_sources else "joint_speed_move_pause",
        "phase_boundary_sources": bound_sources,
        "keyframe_indices": [k.video_frame_index for k in keyframes],
        "keyframe_strategies": {s: sum(k.strategy == s for k in keyframes) for s in STRATEGIES},
    }


def _replay(view: BundleView, renderer: PlaybackRenderer, ts: np.ndarray, q: np.ndarray,
            keyframes: list[Keyframe]) -> tuple[RenderResult, float]:
    """The robot rendered at the keyframes through the manifest camera, and the seconds its
    scene took to build (0 when warm)."""
    m = view.manifest
    camera = m.camera["primary"]
    robot = get_robot(m.robot_model_id, m.robot_model_revision)
    build_s = renderer.warm_up(robot)
    rendered = renderer.render_frames(joints_at(ts, q, np.array([k.kin_time_ms for k in keyframes])),
                                      m.joint_names, camera.intrinsics.model_dump(),
                                      np.asarray(camera.extrinsics, dtype=np.float64), robot=robot)
    return rendered, build_s


def silhouette_overlap(rendered: RenderResult, real_stack: np.ndarray, have_real: np.ndarray
                       ) -> tuple[list[float | None], list[float | None]]:
    """Per keyframe with a real frame: the IoU of the sim silhouette and the real frame's
    moving pixels, and the fraction of those pixels the silhouette covers (None elsewhere)."""
    n = len(have_real)
    iou: list[float | None] = [None] * n
    covered: list[float | None] = [None] * n
    fg = foreground_masks(real_stack[have_real]) if have_real.any() else None
    if fg is not None:
        sim = rendered.mask[have_real]
        inter = (sim & fg).sum(axis=(1, 2))
        rows = np.flatnonzero(have_real)
        for j, a, b in zip(rows, _ratio(inter, (sim | fg).sum(axis=(1, 2))), _ratio(inter, fg.sum(axis=(1, 2)))):
            iou[j], covered[j] = a, b
    return iou, covered


def _stored_pairs(keyframes: list[Keyframe], rendered: RenderResult, real_stack: np.ndarray, have_real: np.ndarray,
                  overlap: tuple[list[float | None], list[float | None]], store, key_prefix: str,
                  frame_px: int) -> list[dict[str, Any]]:
    """Each keyframe's real and sim frames stored as PNG, with its measures."""
    iou, covered = overlap
    sim_px = rendered.mask.sum(axis=(1, 2))
    entries = []
    for j, kf in enumerate(keyframes):
        base = f"{key_prefix}/{kf.video_frame_index:06d}"
        sim_ref = store.put_bytes(_png(rendered.rgb[j]), f"{base}-sim.png")
        real_ref = store.put_bytes(_png(real_stack[j]), f"{base}-real.png") if have_real[j] else None
        entries.append({
            "frame": kf.video_frame_index, "kin_time_ms": kf.kin_time_ms, "strategy": kf.strategy,
            "sim_uri": sim_ref.uri, "real_uri": real_ref.uri if real_ref else None,
            # the simulation render's fingerprint (design §8: hashes of video *and* sim renders)
            "sim_phash": f"{phash(rendered.rgb[j]):016x}",
            "sim_pixel_fraction": round(float(sim_px[j]) / frame_px, 5),
            "silhouette_iou": iou[j], "real_foreground_in_sim": covered[j],
            "render_ms": round(float(rendered.wall_s[j]) * 1000.0, 2),
        })
    return entries


def run_playback(view: BundleView, sync_offset_ms: float, renderer: PlaybackRenderer, store,
                 key_prefix: str, *, keyframe_config: KeyframeConfig | None = None) -> GateResult:
    """Replay one bundle in Genesis at its keyframes and store the real/sim frame pairs:
    the keyframes (``playback_keyframes``), the replay (``_replay``), the silhouettes'
    overlap (``silhouette_overlap``) and the stored pairs (``_stored_pairs``).

    :param sync_offset_ms: the offset keyframes are aligned with (``t_video = t_kin + offset``).
    :param renderer: a warm renderer (the bundle's robot scene is built on first use).
    :param store: object store with ``put_bytes(data, key)``; pairs land at
        ``<key_prefix>/<frame>-real.png`` and ``<key_prefix>/<frame>-sim.png`` (same keys on
        a redelivery: storing is idempotent). A bundle without ``kinematics/joint_vel`` also
        gets the validator's estimate at ``<key_prefix>/joint_vel_computed.npy`` (design §12).
    :param keyframe_config: the keyframe counts (default: the packaged gate config's).
    :returns: gate ``playback``; fails only when the model cannot be replayed
        (``playback_failed``) or renders nothing in any keyframe (``playback_empty_render``).
        Overlap scores are informational.
    """
    t_start = time.perf_counter()
    m = view.manifest
    kf_cfg = keyframe_config or load_config().keyframes
    thresholds: dict[str, Any] = {**kf_cfg.model_dump(), "foreground_level": FOREGROUND_LEVEL,
                                  "render_size": [renderer.width, renderer.height]}
    metrics: dict[str, Any] = {"sync_offset_ms": round(float(sync_offset_ms), 3),
                               "robot": f"{m.robot_model_id}@{m.robot_model_revision}"}
    ts = view.read(TIMESTAMPS).astype(np.float64)
    q = view.read(JOINT_POS).astype(np.float64)
    metrics |= _computed_velocity(view, store, key_prefix)
    keyframes, chosen = playback_keyframes(view, ts, q, sync_offset_ms, kf_cfg)
    metrics |= chosen
    if not keyframes:
        return GateResult(gate=GATE_ID, passed=True, metrics=metrics, thresholds=thresholds,
                          flags=["playback_no_keyframes"])

    try:
        rendered, build_s = _replay(view, renderer, ts, q, keyframes)
    # anything but a KibotosError (Genesis itself failing) propagates: a validator fault,
    # retried and then dead-lettered with the verdict pending (streams.stage), never a rejection
    except KibotosError as exc:  # rows, names or a pose the submission declares cannot be replayed
        if isinstance(exc, ServiceError):
            raise  # the renderer's environment, not the submission: never a verdict on the miner
        metrics["error"] = f"{type(exc).__name__}: {exc}"[:500]
        return GateResult(gate=GATE_ID, passed=False, metrics=metrics, thresholds=thresholds,
                          reason_code="playback_failed")
    if build_s:
        metrics["scene_build_s"] = build_s

    indices = metrics["keyframe_indices"]
    real = real_frames(view, indices, renderer.width, renderer.height)
    have_real = np.array([i in real for i in indices])
    real_stack = np.stack([real.get(i, np.zeros_like(rendered.rgb[0])) for i in indices])
    overlap = silhouette_overlap(rendered, real_stack, have_real)
    sim_px = rendered.mask.sum(axis=(1, 2))
    valid_iou = [x for x in overlap[0] if x is not None]
    metrics |= {
        "keyframes": _stored_pairs(keyframes, rendered, real_stack, have_real, overlap, store, key_prefix,
                                   renderer.width * renderer.height),
        "empty_render_frames": int((sim_px == 0).sum()),
        "missing_real_frames": int((~have_real).sum()),
        "mean_silhouette_iou": round(float(np.mean(valid_iou)), 4) if valid_iou else None,
        "render_ms_mean": round(float(rendered.wall_s.mean()) * 1000.0, 2),
        "playback_wall_ms": round((time.perf_counter() - t_start) * 1000.0, 1),
    }
    if not sim_px.any():
        return GateResult(gate=GATE_ID, passed=False, metrics=metrics, thresholds=thresholds,
                          reason_code="playback_empty_render")
    return GateResult(gate=GATE_ID, passed=True, metrics=metrics, thresholds=thresholds)
