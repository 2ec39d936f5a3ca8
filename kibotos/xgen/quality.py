"""Stage ``quality``: an XGen clip judged by the verifier, as a miner's submission would be.

``judge_clip(clip_dir)`` converts one exported clip (``clip.npz`` + ``metadata.json``) into
a real submission bundle and runs the verification chain in-process — the same functions
the stream stages call: gates A-E (``processors.chain.run_chain``), the IK residual job
(``gpu_consumers.ik.check_ik``) against the object stream, the task evaluation
(``kibotos.tasks.evaluate_task``, schema ``cargo_pickup``), then the report and the score
``S`` (``processors.chain.build_report``, ``kibotos.scoring.score_submission``).

**The robot** is ``unitree_g1@29dof-rev1.0-floating`` (``kibotos.robots``): the registered
G1 URDF with its floating base as six virtual joints (``floating_base_x/y/z`` in metres,
``floating_base_yaw/pitch/roll`` in radians, intrinsic z-y-x) ahead of the 29 joints, so
every stream is in the world frame (z up, floor z = 0). The fixed-base G1 cannot judge a
clip: its base frame (the pelvis) walks and squats, and a box resting on the floor would
move in it.

**The bundle** (``bundle.zarr.zip`` in the clip folder):

* ``kinematics/joint_pos`` (T, 35): root position, root yaw/pitch/roll (yaw unwrapped) from
  ``robot_qpos[:, :7]``, then the 29 joints; ``timestamps_ms`` = frame / fps;
* ``video/primary/encoded``: the G1 and the box rendered by MuJoCo (the clip's own model)
  from a fixed world camera beside the motion, declared in the manifest (intrinsics and
  camera-to-world extrinsics), ``subject: robot``, sync offset 0;
* ``objects/box/pose`` (T, 7) world, with ``grasp: {link: left_wrist_yaw_link, offset}``:
  the offset is the grasp the clip declares (``metadata.object.grasp``: each wrist link's
  pose in the box frame, fixed for the whole hold), never fitted to the joints; clips
  without it fall back to the palm anchor with the wrist's orientation at first contact;
* ``contacts/left_wrist_yaw_link``, ``contacts/right_wrist_yaw_link`` from the clip's
  contact graph (palm-box columns);
* ``manifest.task``: ``cargo_pickup``.

**Both hands.** A bundle's object stream declares one grasping link, and the IK residual
job takes its targets from it. The check runs the job twice — on the bundle (left wrist)
and on the same bundle seen with the stream's grasp declared for the right wrist (the
offset recorded in the stream's ``xgen_grasps`` attribute) — and keeps the worse result,
with both hands' targets listed (``ik_residual.metrics.hands``).

**Passing** (the clip may join a dataset): the verifier accepts it (every gate and the IK
and task stages pass), the task checklist is complete (``quality.require_task_complete``)
and ``S >= quality.min_score`` (``kibotos/config/xgen.yaml``). Reason codes: the
verifier's own (e.g. ``joint_limit_violation``, ``ik_peak_exceeded``,
``task_object_not_moved``), ``xgen_quality_task_incomplete``, ``xgen_quality_low_score``,
``xgen_clip_invalid`` (clip files missing or malformed), ``xgen_quality_render_failed``.
``quality.json`` in the clip folder records the result (``QualityResult.to_dict``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpu_consumers.registry import EVIDENCE_GATES
from kibotos.xgen import g1
from kibotos.xgen.config import XGenConfig, load_xgen_config

ROBOT_ID, FLOATING_REVISION = "unitree_g1", "29dof-rev1.0-floating"
OBJECT = "box"
GRASP_LINKS = ("left_wrist_yaw_link", "right_wrist_yaw_link")  # left palm, right palm (contact columns 0, 1)
BUNDLE_NAME, RESULT_NAME = "bundle.zarr.zip", "quality.json"
QUALITY_VERSION = "xgen-quality-1"


@dataclass(frozen=True)
class QualityResult:
    """The verifier's judgement of one clip.

    ``passed``: the clip may join a dataset. ``verdict``: the verifier's (``accepted`` |
    ``rejected``). ``reason_code``: None when ``passed``, else why not (the verifier's
    reason, or an ``xgen_quality_*`` / ``xgen_clip_invalid`` code). ``score``: ``S`` of an
    accepted clip (None when rejected). ``report``: the ``VerificationReport`` as JSON
    (every gate and stage result with metrics and thresholds, and the score breakdown).
    """

    clip_id: str
    passed: bool
    verdict: str
    reason_code: str | None
    score: float | None
    report: dict[str, Any] = field(default_factory=dict)
    bundle_path: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ClipInvalid(ValueError):
    """A clip folder that cannot be read as an XGen clip."""


# --- clip -> bundle ----------------------------------------------------------------------

def _mat(quat: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(quat, float) / np.linalg.norm(quat)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _quat(rot: np.ndarray) -> np.ndarray:
    import mujoco

    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(rot, dtype=float).reshape(9))
    return q


def _pose_mat(pose7: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = _mat(pose7[3:]), pose7[:3]
    return out


def _pose7(mat: np.ndarray) -> np.ndarray:
    return np.concatenate([mat[:3, 3], _quat(mat[:3, :3])])


def floating_joint_rows(qpos: np.ndarray) -> np.ndarray:
    """(T, 36) MuJoCo G1 qpos -> (T, 35) rows of the floating-base registry model: root
    xyz, yaw/pitch/roll (intrinsic z-y-x, yaw and roll unwrapped), the 29 joints."""
    rots = np.array([_mat(q[3:7]) for q in qpos])
    yaw = np.unwrap(np.arctan2(rots[:, 1, 0], rots[:, 0, 0]))
    pitch = -np.arcsin(np.clip(rots[:, 2, 0], -1.0, 1.0))
    roll = np.unwrap(np.arctan2(rots[:, 2, 1], rots[:, 2, 2]))
    return np.concatenate([qpos[:, :3], yaw[:, None], pitch[:, None], roll[:, None], qpos[:, 7:]], axis=1)


def read_clip(clip_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The clip's arrays and metadata, checked for the shapes ``judge_clip`` relies on."""
    npz, meta_path = clip_dir / "clip.npz", clip_dir / "metadata.json"
    if not npz.is_file() or not meta_path.is_file():
        raise ClipInvalid(f"{clip_dir}: clip.npz or metadata.json missing")
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("robot_qpos", "object_pose", "contact_graph", "phase")}
        meta = json.loads(meta_path.read_text())
    except (KeyError, ValueError, OSError) as exc:
        raise ClipInvalid(f"{clip_dir}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(meta, dict):
        raise ClipInvalid("metadata.json is not an object")
    q, box, contact = arrays["robot_qpos"], arrays["object_pose"], arrays["contact_graph"]
    n = len(q)
    if q.ndim != 2 or q.shape[1] != 36 or box.shape != (n, 7) or contact.ndim != 2 or contact.shape[0] != n \
            or contact.shape[1] < 2 or n < 10:
        raise ClipInvalid(f"shapes robot_qpos {q.shape}, object_pose {box.shape}, contact_graph {contact.shape}")
    if not (np.isfinite(q).all() and np.isfinite(box).all()):
        raise ClipInvalid("non-finite robot_qpos or object_pose")
    fps = meta.get("fps")
    if not isinstance(fps, (int, float)) or not 1.0 <= fps <= 1000.0:
        raise ClipInvalid(f"metadata fps {fps!r}")
    names = meta.get("joint_names")
    if names is not None and list(names) != list(g1.joint_names()):
        raise ClipInvalid("metadata joint_names differ from the G1 model's order")
    size = (meta.get("object") or {}).get("size_m")
    if not (isinstance(size, list) and len(size) == 3 and all(isinstance(v, (int, float)) and v > 0 for v in size)):
        raise ClipInvalid(f"metadata object.size_m {size!r}")
    return arrays, meta


def _first_contact_grasp(qpos: np.ndarray, box: np.ndarray, contact: np.ndarray, meta: dict, side: int
                         ) -> np.ndarray:
    """Fallback grasp (clips without ``metadata.object.grasp``): the palm anchor with the
    wrist's orientation at first contact, palm normal snapped onto the face normal."""
    import mujoco

    m = g1.model()
    d = mujoco.MjData(m)
    touching = np.flatnonzero(contact[:, side])
    t = int(touching[0]) if touching.size else int(np.argmax(np.linalg.norm(np.diff(box[:, :3], axis=0), axis=1)))
    d.qpos[:] = qpos[t]
    mujoco.mj_kinematics(m, d)
    link = m.body(GRASP_LINKS[side]).id
    rel = _mat(box[t, 3:]).T @ d.xmat[link].reshape(3, 3)
    y = np.array([0.0, 1.0, 0.0])  # both palms face along the box's y axis (g1.PALM_NORMAL)
    x = rel[:, 0] - rel[1, 0] * y
    x /= np.linalg.norm(x)
    rot = np.stack([x, y, np.cross(x, y)], axis=1)
    anchors = np.asarray((meta.get("object") or {}).get("anchors_box_frame_m") or [[0, 0, 0], [0, 0, 0]], float)
    palm = np.array(g1.PALM_OFFSET[g1.SIDES[side]])
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, anchors[side] - rot @ palm
    return out


def grasp_in_box(arrays: dict[str, np.ndarray], meta: dict, side: int) -> np.ndarray:
    """4x4 pose of wrist link ``side`` (0 left, 1 right) in the box frame while held."""
    declared = ((meta.get("object") or {}).get("grasp") or {}).get(GRASP_LINKS[side])
    if declared is not None:
        pose = np.asarray(declared, float)
        if pose.shape != (7,) or not np.isfinite(pose).all() or abs(np.linalg.norm(pose[3:]) - 1) > 1e-3:
            raise ClipInvalid(f"metadata object.grasp.{GRASP_LINKS[side]} is not a pose [x,y,z,qw,qx,qy,qz]")
        return _pose_mat(pose)
    return _first_contact_grasp(arrays["robot_qpos"].astype(float), arrays["object_pose"].astype(float),
                                arrays["contact_graph"], meta, side)


def camera_for(qpos: np.ndarray, box: np.ndarray, width: int, height: int, fovy_deg: float
               ) -> tuple[dict, np.ndarray, dict]:
    """A fixed world camera beside the motion: ``(intrinsics, camera-to-world (OpenCV axes),
    MuJoCo free-camera settings)``. It looks at the middle of the robot's and the box's
    path from the side of the robot's mean heading, far enough to keep both in view."""
    from kibotos.media.camera import look_at

    heading = np.array([_mat(q[3:7])[:2, 0] for q in qpos]).mean(axis=0)
    heading = heading / max(np.linalg.norm(heading), 1e-9) if np.linalg.norm(heading) > 1e-6 else np.array([1.0, 0])
    pts = np.concatenate([qpos[:, :3], box[:, :3]])
    centre = np.array([*(pts[:, :2].min(0) + pts[:, :2].max(0)) / 2, 0.6])
    extent = float(np.max(pts[:, :2].max(0) - pts[:, :2].min(0)))
    distance = max(3.2, 1.6 * extent + 2.0)
    elevation = np.radians(-12.0)
    side = np.array([-heading[1], heading[0]])  # the robot's left
    # camera ahead-left of the robot, 35 deg off its side, looking back at the path
    view = np.cos(np.radians(35)) * side + np.sin(np.radians(35)) * heading
    eye = centre + distance * np.array([*(np.cos(elevation) * view), -np.sin(elevation)])
    f = 0.5 * height / np.tan(np.radians(fovy_deg) / 2)
    intrinsics = {"fx": f, "fy": f, "cx": width / 2, "cy": height / 2, "width": width, "height": height}
    to_target = centre - eye
    free = {"lookat": centre, "distance": float(np.linalg.norm(to_target)),
            "azimuth": float(np.degrees(np.arctan2(to_target[1], to_target[0]))),
            "elevation": float(np.degrees(np.arcsin(to_target[2] / np.linalg.norm(to_target))))}
    return intrinsics, look_at(eye, centre), free


def render_clip_video(qpos: np.ndarray, box: np.ndarray, box_size: np.ndarray, free: dict, width: int,
                      height: int) -> np.ndarray:
    """(T, H, W, 3) uint8: the clip's G1 model and box rendered offscreen by MuJoCo from the
    free camera ``free`` (``camera_for``), on a checker floor."""
    import copy

    import mujoco

    from kibotos.media.gl import mujoco_gl_context

    GLContext = mujoco_gl_context()  # the process's one GL platform (kibotos.media.gl)

    m = copy.copy(g1.model())
    box_geom = m.geom("xgen_box").id
    m.geom_size[box_geom] = np.asarray(box_size, float) / 2
    m.geom_rgba[box_geom] = (0.65, 0.45, 0.25, 1.0)
    m.vis.global_.offwidth, m.vis.global_.offheight = max(width, 640), max(height, 480)
    # no multisampling: MuJoCo's default 4x MSAA made each software-GL frame 2-3x slower
    # for smoother edges the verifier does not look at (mean pixel change 0.3 of 255)
    m.vis.quality.offsamples = 0
    d = mujoco.MjData(m)
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.lookat[:], cam.distance, cam.azimuth, cam.elevation = (free["lookat"], free["distance"], free["azimuth"],
                                                               free["elevation"])
    frames = np.empty((len(qpos), height, width, 3), np.uint8)
    gl = GLContext(max(width, 640), max(height, 480))
    gl.make_current()
    context = mujoco.MjrContext(m, mujoco.mjtFontScale.mjFONTSCALE_100)
    try:
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, context)
        scene = mujoco.MjvScene(m, maxgeom=2000)
        # software GL here: shadows and reflections cost most of a frame and tell the
        # verifier nothing
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
            scene.flags[flag] = 0
        option, perturb = mujoco.MjvOption(), mujoco.MjvPerturb()
        viewport = mujoco.MjrRect(0, 0, width, height)
        floor = _checker_floor(mujoco)
        for t in range(len(qpos)):
            d.qpos[:] = qpos[t]
            d.mocap_pos[0], d.mocap_quat[0] = box[t, :3], box[t, 3:]
            mujoco.mj_kinematics(m, d)
            mujoco.mjv_updateScene(m, d, option, perturb, cam, mujoco.mjtCatBit.mjCAT_ALL, scene)
            floor(scene)
            mujoco.mjr_render(viewport, scene, context)
            rgb = np.empty((height, width, 3), np.uint8)
            mujoco.mjr_readPixels(rgb, None, viewport, context)
            frames[t] = rgb[::-1]
    finally:
        context.free()
        gl.free()
    return frames


def _checker_floor(mujoco):
    """Adds floor tiles to a scene (the G1 model has no floor of its own): static texture
    the video's motion energy can be measured against."""
    tiles = [(x, y) for x in range(-8, 9) for y in range(-8, 9)]

    def add(scene):
        for x, y in tiles:
            if scene.ngeom >= scene.maxgeom:
                return
            shade = 0.72 if (x + y) % 2 else 0.6
            g = scene.geoms[scene.ngeom]
            mujoco.mjv_initGeom(g, mujoco.mjtGeom.mjGEOM_BOX, np.array([0.25, 0.25, 0.001]),
                                np.array([x * 0.5, y * 0.5, -0.001]), np.eye(3).reshape(9),
                                np.array([shade, shade, shade * 0.95, 1.0], np.float32))
            scene.ngeom += 1

    return add


def clip_bundle(clip_dir: Path, out_path: Path, *, width: int = 320, height: int = 240,
                video_fps: float = 10.0) -> Path:
    """Write the clip as a submission bundle at ``out_path`` (module docstring)."""
    from kibotos.bundle.manifest import SCHEMA_VERSION
    from kibotos.bundle.writer import write_bundle
    from kibotos.media.video import encode_mp4

    arrays, meta = read_clip(clip_dir)
    qpos = arrays["robot_qpos"].astype(np.float64)
    box = arrays["object_pose"].astype(np.float64)
    box[:, 3:] /= np.linalg.norm(box[:, 3:], axis=1, keepdims=True)
    contact = arrays["contact_graph"].astype(np.uint8)
    fps = float(meta["fps"])
    n = len(qpos)
    ts = np.round(np.arange(n) * 1000.0 / fps).astype(np.int64)
    rows = floating_joint_rows(qpos)
    robot_names = _floating_joint_names()
    grasps = [grasp_in_box(arrays, meta, side) for side in (0, 1)]
    fovy = 45.0
    intrinsics, cam_to_world, free = camera_for(qpos, box, width, height, fovy)
    # the video at its own rate (software GL renders the G1's meshes at ~5-10 frames/s here);
    # video frame k shows kinematic frame round(k fps / video_fps), on the same clock
    video_fps = min(float(video_fps), fps)
    n_video = int(np.floor((n - 1) / fps * video_fps + 1e-9)) + 1
    shown = np.clip(np.round(np.arange(n_video) * fps / video_fps).astype(int), 0, n - 1)
    frames = render_clip_video(qpos[shown], box[shown], np.asarray(meta["object"]["size_m"], float), free, width,
                               height)
    clip_id = str(meta.get("clip_id") or clip_dir.name)
    digest = hashlib.sha256((clip_dir / "clip.npz").read_bytes()).hexdigest()
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "bundle_version": "1.0.0",
        "submission_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"kibotos-xgen-clip:{clip_id}:{digest}")),
        "episode_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"kibotos-xgen-episode:{clip_id}:{digest}")),
        "miner_id": str(meta.get("uploader") or "xgen")[:128],
        "created_at": "2026-12-01T00:00:00+00:00",
        "robot_model_id": ROBOT_ID,
        "robot_model_revision": FLOATING_REVISION,
        "joint_names": list(robot_names),
        "sampling_rate_hz": fps,
        "time_base": "relative",
        "time_units": "ms",
        "units": {"joint_pos": "rad", "joint_vel": "rad/s"},
        "camera": {"primary": {"intrinsics": intrinsics, "extrinsics": np.round(cam_to_world, 6).tolist()}},
        "video": {"primary": {"fps": video_fps, "frame_count": n_video, "subject": "robot"}},
        "sync": {"sync_offset_ms_claimed": 0.0},
        "task": {"task_id": meta.get("task_id") or "cargo_pickup", "task_version": str(meta.get("task_version") or "1")},
        "xgen": {"clip_id": clip_id, "clip_sha256": digest, "source_sha256": meta.get("source_sha256"),
                 "format_version": meta.get("format_version"), "quality_version": QUALITY_VERSION},
    }
    base = f"objects/{OBJECT}"
    extra: dict[str, np.ndarray] = {f"{base}/timestamps_ms": ts, f"{base}/pose": box,
             f"contacts/{GRASP_LINKS[0]}": contact[:, 0], f"contacts/{GRASP_LINKS[1]}": contact[:, 1]}
    attrs = {f"{base}/pose": {"frame": "world", "source": "xgen clip object_pose",
                              "grasp": {"link": GRASP_LINKS[0],
                                        "offset": [round(float(v), 9) for v in _pose7(grasps[0])]},
                              # the other hand's declared grasp (a bundle names one per stream)
                              "xgen_grasps": {link: [round(float(v), 9) for v in _pose7(g)]
                                              for link, g in zip(GRASP_LINKS, grasps)}}}
    out_path = Path(out_path)
    if out_path.exists():
        out_path.unlink()
    return write_bundle(out_path, manifest, timestamps_ms=ts, joint_pos=rows.astype(np.float32),
                        video_mp4=encode_mp4(frames, video_fps), extra_arrays=extra, array_attributes=attrs)


@functools.lru_cache(maxsize=1)
def _floating_joint_names() -> tuple[str, ...]:
    from kibotos.robots import get_robot

    robot = get_robot(ROBOT_ID, FLOATING_REVISION)
    if tuple(robot.joint_names[6:]) != tuple(g1.joint_names()):
        raise ClipInvalid("the registry's floating G1 joint order differs from the clip's G1 model")
    return robot.joint_names


# --- judging -----------------------------------------------------------------------------

class _GraspDeclaredFor:
    """A bundle view whose box stream declares its grasp for another link (the IK job
    reads the declaration from the pose array's attributes); everything else delegates."""

    def __init__(self, view, link: str):
        self._view, self._link = view, link

    def __getattr__(self, name):
        return getattr(self._view, name)

    def node_attrs(self, path: str) -> dict[str, Any]:
        attrs = self._view.node_attrs(path)
        grasps = attrs.get("xgen_grasps")
        if path == f"objects/{OBJECT}/pose" and isinstance(grasps, dict) and self._link in grasps:
            attrs = {**attrs, "grasp": {"link": self._link, "offset": grasps[self._link]}}
        return attrs


def _both_hands(view, config):
    """The IK residual result over both wrists (module docstring: Both hands)."""
    from gpu_consumers.ik import check_ik

    results = [check_ik(view, config, _ik_solver()), check_ik(_GraspDeclaredFor(view, GRASP_LINKS[1]), config,
                                                              _ik_solver())]
    failed = [r for r in results if not r.passed]
    scored = [r for r in results if isinstance(r.metrics.get("s_retarget"), (int, float))]
    worst = failed[0] if failed else min(scored, key=lambda r: r.metrics["s_retarget"]) if scored else results[0]
    hands = {}
    targets = []
    for link, r in zip(GRASP_LINKS, results):
        hands[link] = {"passed": r.passed, "reason_code": r.reason_code, "s_retarget": r.metrics.get("s_retarget"),
                       "rms_pos_error_m": r.metrics.get("rms_pos_error_m"),
                       "peak_pos_error_m": r.metrics.get("peak_pos_error_m")}
        targets += [t for t in r.metrics.get("targets") or [] if t.get("link") == link]
    return worst.model_copy(update={"metrics": {**worst.metrics, "targets": targets, "hands": hands},
                                    "flags": sorted({f for r in results for f in r.flags})})


@functools.lru_cache(maxsize=1)
def _ik_solver():
    from gpu_consumers.ik import IKSolver
    from kibotos.robots import get_robot

    return IKSolver(get_robot(ROBOT_ID, FLOATING_REVISION))


def _refused(clip_id: str, code: str, message: str, bundle: Path | None = None) -> QualityResult:
    return QualityResult(clip_id=clip_id, passed=False, verdict="rejected", reason_code=code, score=None,
                         report={"error": message[:500]}, bundle_path=str(bundle) if bundle else None,
                         metrics={"quality_version": QUALITY_VERSION})


def judge_clip(clip_dir: str | Path, *, cfg: XGenConfig | None = None, bundle_path: str | Path | None = None,
               write_result: bool = True, gate_config=None, scoring=None) -> QualityResult:
    """Judge the clip in ``clip_dir`` (module docstring). The bundle is written to
    ``bundle_path`` (default ``<clip_dir>/bundle.zarr.zip``, replaced if present) and, with
    ``write_result``, the result to ``<clip_dir>/quality.json``. Never raises for a bad
    clip: it comes back refused with a reason code. Deterministic for a given clip and
    configs (same submission id, same verdict)."""
    from kibotos.bundle.reader import Limits, open_bundle
    from kibotos.config.gates import load_config
    from kibotos.errors import KibotosError
    from kibotos.scoring import load_scoring_config, score_submission
    from kibotos.tasks import evaluate_task
    from processors.base import run_gate
    from processors.chain import build_report, run_chain

    clip_dir = Path(clip_dir)
    cfg = cfg or load_xgen_config()
    q = cfg.quality
    gate_config = gate_config or load_config()
    scoring = scoring or load_scoring_config()
    bundle = Path(bundle_path) if bundle_path else clip_dir / BUNDLE_NAME
    clip_id = clip_dir.name
    try:
        clip_id = str(json.loads((clip_dir / "metadata.json").read_text()).get("clip_id") or clip_id)
    except (OSError, ValueError, AttributeError):
        pass
    try:
        clip_bundle(clip_dir, bundle, width=q.video_width, height=q.video_height, video_fps=q.video_fps)
    except ClipInvalid as exc:
        return _finish(_refused(clip_id, "xgen_clip_invalid", str(exc)), clip_dir, write_result)
    except (RuntimeError, ImportError, OSError, ValueError) as exc:  # no GL context, codec, disk
        return _finish(_refused(clip_id, "xgen_quality_render_failed", f"{type(exc).__name__}: {exc}"), clip_dir,
                       write_result)

    try:
        view = open_bundle(bundle, Limits.from_config(gate_config))
    except KibotosError as exc:  # the bundle XGen wrote is unreadable to the verifier: say why
        return _finish(_refused(clip_id, exc.reason_code, str(exc), bundle), clip_dir, write_result)
    with view:
        results = run_chain(view, gate_config)  # each gate turns its own errors into a reason code
        if all(r.passed for r in results):
            from processors.base import Gate

            jobs = [Gate(EVIDENCE_GATES["ik"], "ik", 100, "IK residual", _both_hands),
                    Gate(EVIDENCE_GATES["task"], "task", 101, "task completion", lambda v, c: evaluate_task(v))]
            for job in jobs:
                res = run_gate(job, view, gate_config)  # errors become a failed result, never a crash
                results.append(res)
                if not res.passed:
                    break
        m = view.manifest
        sid = str(m.submission_id)
    report_of = functools.partial(build_report, sid, results, gate_config.config_version, miner_id=m.miner_id,
                        robot_model_id=m.robot_model_id, robot_model_revision=m.robot_model_revision)
    report = report_of()
    breakdown = None
    if report.verdict == "accepted":
        try:
            breakdown = score_submission({r.gate: r for r in results}, scoring, passed=True)
        except KibotosError as exc:
            return _finish(_refused(clip_id, exc.reason_code, str(exc), bundle), clip_dir, write_result)
        report = report_of(points=breakdown.reward, scores=breakdown.model_dump(mode="json"))
    by_gate = {r.gate: r for r in results}
    task = by_gate.get(EVIDENCE_GATES["task"])
    ik = by_gate.get(EVIDENCE_GATES["ik"])
    metrics = {
        "quality_version": QUALITY_VERSION,
        "thresholds": q.model_dump(),
        "gates_run": [r.gate for r in results],
        "task_flags": list(task.flags) if task else None,
        "task_failed_checks": task.metrics.get("failed_checks") if task else None,
        "ik_rms_pos_error_m": ik.metrics.get("rms_pos_error_m") if ik else None,
        "ik_flags": list(ik.flags) if ik else None,
        "components": {c.name: c.value for c in breakdown.components} if breakdown else None,
        "wall_ms": {r.gate: r.metrics.get("wall_ms") for r in results},
    }
    score = breakdown.score if breakdown else None
    reason = report.reason_code
    if report.verdict == "accepted":
        if q.require_task_complete and task is not None and ("task_incomplete" in task.flags
                                                             or task.metrics.get("applicable") is False):
            reason = "xgen_quality_task_incomplete"
        elif score is None or score < q.min_score:
            reason = "xgen_quality_low_score"
    out = QualityResult(clip_id=clip_id, passed=reason is None, verdict=report.verdict, reason_code=reason,
                        score=score, report=report.model_dump(mode="json"), bundle_path=str(bundle), metrics=metrics)
    return _finish(out, clip_dir, write_result)


def _finish(result: QualityResult, clip_dir: Path, write: bool) -> QualityResult:
    if write and clip_dir.is_dir():
        (clip_dir / RESULT_NAME).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str))
    return result
