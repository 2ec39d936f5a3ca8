"""Non-contact simulation of the cargo box (the seed's ``interaction/noncontact_sim``):
where no hand holds the box, it moves by physics — it falls from where the hands let go,
lands, bounces or tips if it must, and settles on the floor.

Two simulators with one interface, ``fall(pose0, lin_vel, ang_vel, size, mass_kg, n, fps)
-> (n, 7)`` poses (box centre xyz, quaternion wxyz; world z-up, floor z = 0), frame 0 =
the first free frame, one frame after ``pose0``:

* ``GenesisBox`` — a rigid box on a plane in Genesis (the project's simulator; CPU backend
  here, CUDA on GPU nodes), released with the hands' velocity and stepped at
  ``substeps`` per frame. One scene per box size (Genesis cannot resize a built body),
  built on first use and kept: build ~30 s warm on this CPU (~5 min the first time, while
  Genesis compiles its kernels into the cache), then ~5 ms per physics step. A contact
  solver lets a falling box sink a little into the floor for a step or two on impact; the
  reported poses are lifted so that no corner is below the floor (``last_metrics``
  records the largest lift).
* ``AnalyticBox`` — the pure fallback: vertical free fall from rest, ``z0 - g t^2 / 2``,
  then flat on the floor at the yaw it had. Exact for a box dropped flat from rest, wrong
  for a thrown or tilted one; fast and dependency-free (unit tests and CPU runs that
  cannot afford Genesis' start-up).

``interaction.noncontact_sim`` (``kibotos/config/xgen.yaml``) picks one; ``simulator(kind)``
returns a per-process instance (a Ray actor keeps its Genesis scenes warm).
"""

from __future__ import annotations

import functools
from typing import Protocol

import numpy as np

from kibotos.xgen.result import XGenError

_CORNERS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)


def _mat(quat: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(quat, float) / np.linalg.norm(quat)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def lowest_corner(pose: np.ndarray, size: np.ndarray) -> float:
    """Height (m) of the box's lowest corner."""
    return float(pose[2] + (_CORNERS * np.asarray(size) / 2 @ _mat(pose[3:]).T)[:, 2].min())


class BoxSimulator(Protocol):
    name: str
    last_metrics: dict  # what the last ``fall`` measured

    def fall(self, pose0: np.ndarray, lin_vel: np.ndarray, ang_vel: np.ndarray, size: np.ndarray, mass_kg: float,
             n: int, fps: float) -> np.ndarray: ...


class AnalyticBox:
    """Vertical free fall from rest, then flat on the floor (module docstring)."""

    name = "analytic"

    def __init__(self, gravity: float = 9.81):
        self.gravity = gravity
        self.last_metrics: dict = {}

    def fall(self, pose0, lin_vel, ang_vel, size, mass_kg, n, fps) -> np.ndarray:
        pose0 = np.asarray(pose0, float)
        half_h = float(size[2]) / 2
        rot = _mat(pose0[3:])
        x = rot[:, 0].copy()
        x[2] = 0.0
        x = x / np.linalg.norm(x) if np.linalg.norm(x) > 1e-9 else np.array([1.0, 0.0, 0.0])
        flat_rot = np.stack([x, np.cross([0.0, 0.0, 1.0], x), [0.0, 0.0, 1.0]], axis=1)
        flat = _quat(flat_rot)
        out = np.empty((n, 7))
        for k in range(1, n + 1):
            z = pose0[2] - 0.5 * self.gravity * (k / fps) ** 2
            out[k - 1] = [pose0[0], pose0[1], half_h, *flat] if z <= half_h else [pose0[0], pose0[1], z, *pose0[3:]]
        self.last_metrics = {"simulator": self.name}
        return out


def _quat(rot: np.ndarray) -> np.ndarray:
    import mujoco

    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(rot, float).reshape(9))
    return q


class GenesisBox:
    """A rigid box dropped on a plane in Genesis (module docstring)."""

    name = "genesis"

    def __init__(self, *, substeps: int = 8, gravity: float = 9.81, backend: str = "cpu", cache_dir=None,
                 max_scenes: int = 8):
        self.substeps, self.gravity, self.backend = int(substeps), float(gravity), backend
        self.cache_dir, self.max_scenes = cache_dir, max_scenes
        self._scenes: dict[tuple, tuple] = {}  # (size mm, fps) -> (scene, box entity)
        self.build_seconds: dict[tuple, float] = {}
        self.last_metrics: dict = {}

    def _gs(self):
        from gpu_consumers.playback import _genesis, default_cache_dir

        return _genesis(self.backend, self.cache_dir or default_cache_dir(), "osmesa" if self.backend == "cpu"
                        else "egl")

    def _scene(self, size: np.ndarray, mass_kg: float, fps: float):
        import time

        key = (*(int(round(v * 1000)) for v in size), round(float(fps), 3))
        if key not in self._scenes:
            if len(self._scenes) >= self.max_scenes:  # bounded: sizes vary per augmentation
                old_key = next(iter(self._scenes))
                self._scenes.pop(old_key)[0].destroy()
            t0 = time.perf_counter()
            gs = self._gs()
            scene = gs.Scene(show_viewer=False,
                             sim_options=gs.options.SimOptions(dt=1.0 / (fps * self.substeps), substeps=1,
                                                               gravity=(0.0, 0.0, -self.gravity)),
                             rigid_options=gs.options.RigidOptions(enable_collision=True))
            scene.add_entity(gs.morphs.Plane())
            extents = tuple(float(v) for v in size)
            volume = float(np.prod(extents))
            box = scene.add_entity(gs.morphs.Box(size=extents, pos=(0.0, 0.0, 1.0)),
                                   material=gs.materials.Rigid(rho=max(mass_kg / volume, 1.0)))
            scene.build()
            self._scenes[key] = (scene, box)
            self.build_seconds[key] = round(time.perf_counter() - t0, 3)
        return self._scenes[key]

    def fall(self, pose0, lin_vel, ang_vel, size, mass_kg, n, fps) -> np.ndarray:
        pose0 = np.asarray(pose0, float)
        size = np.asarray(size, float)
        try:
            scene, box = self._scene(size, mass_kg, fps)
            box.set_pos(pose0[:3].astype(np.float32))
            box.set_quat(pose0[3:].astype(np.float32))
            box.set_dofs_velocity(np.concatenate([lin_vel, ang_vel]).astype(np.float32))
            out = np.empty((n, 7))
            for k in range(n):
                for _ in range(self.substeps):
                    scene.step()
                out[k, :3] = np.asarray(box.get_pos(), float).reshape(-1)[:3]
                quat = np.asarray(box.get_quat(), float).reshape(-1)[:4]
                out[k, 3:] = quat / np.linalg.norm(quat)
        except XGenError:
            raise
        except Exception as exc:  # a simulator failure is the stage's refusal, not a crash
            raise XGenError(f"Genesis box simulation failed: {type(exc).__name__}: {exc}",
                            reason_code="xgen_noncontact_sim_failed") from exc
        if not np.isfinite(out).all():
            raise XGenError("Genesis box simulation diverged", reason_code="xgen_noncontact_sim_failed")
        # impact sinks the box into the floor for a step or two: report, then lift it out
        lift = np.array([max(0.0, -lowest_corner(p, size)) for p in out])
        out[:, 2] += lift
        self.last_metrics = {"simulator": self.name, "max_floor_lift_m": round(float(lift.max()), 5),
                             "substeps": self.substeps}
        return out


@functools.lru_cache(maxsize=4)
def simulator(kind: str, substeps: int = 8, gravity: float = 9.81) -> BoxSimulator:
    """The process's simulator of ``kind`` (``analytic`` | ``genesis``), kept warm."""
    if kind == "analytic":
        return AnalyticBox(gravity)
    if kind == "genesis":
        return GenesisBox(substeps=substeps, gravity=gravity)
    raise XGenError(f"unknown non-contact simulator {kind!r} (analytic | genesis)", reason_code="xgen_config_invalid")
