"""Clip previews rendered in Genesis: ``preview.mp4`` per clip (the G1 and the box), and for
the base clip ``preview_side_by_side.mp4`` (the source video left, the preview right, on
one clock). Both are written into the clip's folder.

The scene reuses the playback job's machinery (``gpu_consumers.playback``: Genesis
initialised once per process with its kernel/shader caches, kinematic visual-only robot,
no collision meshes, camera placement from an OpenCV camera-to-world pose). What differs:

* the robot is the registry's floating-base G1 (``unitree_g1@29dof-rev1.0-floating``), so
  a clip's rows (``quality.floating_joint_rows``: root pose + 29 joints) are set directly;
* the box and the floor are debug meshes redrawn per frame: the box changes size between
  clips and Genesis cannot resize a built body, so one scene serves every clip (a debug
  camera renders debug meshes; the playback job's camera does not);
* the camera is the one the quality check declares (``quality.camera_for``), so the
  preview and the judged bundle's video show the same view.

Cost on this CPU (software GL): ``import genesis`` 10-40 s and the scene ~10-30 s once per
process (``PreviewRenderer`` keeps it), then ~0.1-0.3 s per frame at 320x240; previews are
rendered at ``fps`` (default 10) over the clip's whole duration.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from kibotos.xgen.quality import FLOATING_REVISION, ROBOT_ID, camera_for, floating_joint_rows, read_clip

PREVIEW_NAME, SIDE_BY_SIDE_NAME = "preview.mp4", "preview_side_by_side.mp4"
BOX_RGBA = (166, 115, 64, 255)


def _floor_mesh(centre_xy: np.ndarray, half: int = 8, tile: float = 0.5):
    """A checker floor (two-tone tiles) around ``centre_xy`` as one trimesh, just below z = 0."""
    import trimesh

    parts = []
    cx, cy = (np.round(np.asarray(centre_xy) / tile) * tile).tolist()
    for i in range(-half, half):
        for j in range(-half, half):
            t = trimesh.creation.box(extents=(tile, tile, 0.002))
            t.apply_translation((cx + (i + 0.5) * tile, cy + (j + 0.5) * tile, -0.0011))
            shade = 190 if (i + j) % 2 else 150
            t.visual.face_colors = (shade, shade, shade - 8, 255)
            parts.append(t)
    return trimesh.util.concatenate(parts)


class PreviewRenderer:
    """One Genesis scene (robot + camera) reused for every clip of a process."""

    def __init__(self, width: int = 320, height: int = 240, *, backend: str = "cpu", cache_dir=None):
        self.width, self.height, self.backend = int(width), int(height), backend
        self.cache_dir = cache_dir
        self.build_seconds: float | None = None
        # Genesis objects (no type stubs), built on first use
        self._scene: Any = None
        self._entity: Any = None
        self._camera: Any = None
        self._qs_idx: list[int] | None = None

    def _build(self):
        from gpu_consumers.playback import _genesis, default_cache_dir
        from kibotos.robots import get_robot

        t0 = time.perf_counter()
        gs = _genesis(self.backend, Path(self.cache_dir) if self.cache_dir else default_cache_dir(),
                      "osmesa" if self.backend == "cpu" else "egl")
        robot = get_robot(ROBOT_ID, FLOATING_REVISION)
        # no shadow pass: it renders the G1's meshes a second time (software GL here)
        scene = gs.Scene(show_viewer=False, vis_options=gs.options.VisOptions(show_world_frame=False, shadow=False))
        entity = scene.add_entity(gs.morphs.URDF(file=str(robot.model_path), fixed=True, collision=False),
                                  material=gs.materials.Kinematic())
        camera = scene.add_camera(res=(self.width, self.height), pos=(3.0, 0.0, 1.2), lookat=(0.0, 0.0, 0.6),
                                  fov=45.0, GUI=False, debug=True)
        scene.build()
        names = {j.name: j for j in entity.joints}
        self._qs_idx = [int(names[n].qs_idx_local[0]) for n in robot.joint_names]
        self._scene, self._entity, self._camera = scene, entity, camera
        self.build_seconds = round(time.perf_counter() - t0, 3)

    def render(self, rows: np.ndarray, box: np.ndarray, box_size: np.ndarray, intrinsics: dict,
               cam_to_world: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 frames of joint rows (N, 35) and box poses (N, 7)."""
        import trimesh

        from gpu_consumers.playback import genesis_camera_pose, scaled_intrinsics

        if self._scene is None:
            self._build()
        scene, cam = self._scene, self._camera
        intr = scaled_intrinsics(intrinsics, self.width, self.height)
        fov = math.degrees(2.0 * math.atan(0.5 * self.height / min(intr["fx"], intr["fy"])))
        if not math.isclose(cam.fov, fov, rel_tol=1e-9):
            cam._fov = float(fov)  # as the playback job does: Genesis fixes it at construction
            for cached in ("f", "intrinsics", "projection_matrix"):
                cam.__dict__.pop(cached, None)
        pos, lookat, up = genesis_camera_pose(cam_to_world)
        cam.set_pose(pos=pos, lookat=lookat, up=up)
        scene.clear_debug_objects()
        scene.draw_debug_mesh(_floor_mesh(rows[:, :2].mean(axis=0)))
        cube = trimesh.creation.box(extents=np.asarray(box_size, float))
        cube.visual.face_colors = BOX_RGBA
        # the box is drawn once per clip and moved by its node's pose: a debug mesh drawn
        # anew each frame is a new mesh to upload and its shaders to load again, which made
        # a preview frame ~3x slower (same pixels)
        context = scene._visualizer.context
        node = context.external_nodes[scene.draw_debug_mesh(cube, T=np.eye(4)).name]
        frames = np.empty((len(rows), self.height, self.width, 3), np.uint8)
        for i in range(len(rows)):
            self._entity.set_qpos(np.asarray(rows[i], np.float32), qs_idx_local=self._qs_idx)
            pose = np.eye(4)
            pose[:3, :3], pose[:3, 3] = _mat(box[i, 3:]), box[i, :3]
            context.set_node_pose(node, pose)
            rgb, *_ = cam.render(rgb=True, force_render=True)
            frames[i] = np.asarray(rgb)
        return frames

    def close(self) -> None:
        if self._scene is not None:
            self._scene.destroy()
            self._scene = None


def _mat(quat: np.ndarray) -> np.ndarray:
    from kibotos.xgen.quality import _mat as mat

    return mat(quat)


def _sampled(n: int, clip_fps: float, fps: float) -> np.ndarray:
    fps = min(fps, clip_fps)
    count = int(np.floor((n - 1) / clip_fps * fps + 1e-9)) + 1
    return np.clip(np.round(np.arange(count) * clip_fps / fps).astype(int), 0, n - 1)


def write_preview(clip_dir: str | Path, renderer: PreviewRenderer | None = None, *, fps: float = 10.0,
                  source_video: str | Path | None = None) -> dict[str, str]:
    """Render the clip in ``clip_dir`` to ``preview.mp4`` and, given its ``source_video``
    (the base clip's: its frame t is the source's frame t), ``preview_side_by_side.mp4``.
    Returns ``{name: path}`` of what was written; errors propagate (a job records them)."""
    from kibotos.media.video import encode_mp4

    clip_dir = Path(clip_dir)
    arrays, meta = read_clip(clip_dir)
    qpos, box = arrays["robot_qpos"].astype(float), arrays["object_pose"].astype(float)
    clip_fps = float(meta["fps"])
    renderer = renderer or PreviewRenderer()
    intr, cam, _ = camera_for(qpos, box, renderer.width, renderer.height, 45.0)
    shown = _sampled(len(qpos), clip_fps, fps)
    rate = min(fps, clip_fps)
    frames = renderer.render(floating_joint_rows(qpos)[shown], box[shown], np.asarray(meta["object"]["size_m"]), intr,
                             cam)
    out = {PREVIEW_NAME: clip_dir / PREVIEW_NAME}
    out[PREVIEW_NAME].write_bytes(encode_mp4(frames, rate))
    if source_video is not None:
        source = _source_frames(Path(source_video), shown / clip_fps, renderer.height)
        both = np.concatenate([source, frames], axis=2)
        out[SIDE_BY_SIDE_NAME] = clip_dir / SIDE_BY_SIDE_NAME
        out[SIDE_BY_SIDE_NAME].write_bytes(encode_mp4(both, rate))
    return {k: str(v) for k, v in out.items()}


def _source_frames(path: Path, times_s: np.ndarray, height: int) -> np.ndarray:
    """The source video's frames nearest ``times_s``, scaled to ``height`` (even width)."""
    import av
    import cv2

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 30)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    if not decoded:
        raise ValueError(f"{path}: no video frames")
    idx = np.clip(np.round(times_s * rate).astype(int), 0, len(decoded) - 1)
    h, w = decoded[0].shape[:2]
    width = int(round(w * height / h / 2)) * 2
    return np.stack([cv2.resize(decoded[i], (width, height), interpolation=cv2.INTER_AREA) for i in idx])
