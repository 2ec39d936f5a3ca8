"""Non-contact box simulation: a box the hands let go of falls, lands and comes to rest on
the floor — never below it — in Genesis (the physics engine) and in the analytic fallback.

The Genesis scene is built once for the module (~30 s with a warm kernel cache on a
loaded CPU, a few minutes on a cold one)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from kibotos.xgen.interaction import Hold, box_trajectory
from kibotos.xgen.noncontact import AnalyticBox, lowest_corner, simulator

FPS = 30.0
SIZE = np.array([0.25, 0.4, 0.3])
G = 9.81


def _tilted(deg: float) -> np.ndarray:
    a = np.radians(deg) / 2
    return np.array([np.cos(a), np.sin(a), 0.0, 0.0])  # about x


@pytest.fixture(scope="module")
def genesis():
    if importlib.util.find_spec("genesis") is None:
        pytest.skip("genesis-world is not installed")
    return simulator("genesis", 8, G)


def _settled(poses: np.ndarray, frames: int = 10) -> float:
    """Largest speed (m/s) of the box centre over the last ``frames`` frames."""
    return float(np.linalg.norm(np.diff(poses[-frames:, :3], axis=0), axis=1).max() * FPS)


def _rests_on_a_face(pose: np.ndarray) -> bool:
    """Its centre sits at half of one extent above the floor (a face down, not an edge)."""
    return bool(np.min(np.abs(pose[2] - SIZE / 2)) < 0.01)


def test_genesis_box_released_above_the_floor_falls_and_rests_on_it(genesis):
    start = np.array([0.3, -0.2, 0.9, *_tilted(15.0)])
    poses = genesis.fall(start, np.array([0.3, 0.0, 0.0]), np.zeros(3), SIZE, 2.0, 75, FPS)
    bottoms = np.array([lowest_corner(p, SIZE) for p in poses])
    assert bottoms.min() >= -1e-6, "a corner below the floor"
    # it falls: after 0.2 s the centre has dropped by about g t^2 / 2 (no floor yet)
    k = 6
    assert start[2] - poses[k - 1, 2] == pytest.approx(0.5 * G * (k / FPS) ** 2, abs=0.02)
    # it lands and comes to rest, on the floor, on one of its faces
    assert _settled(poses) < 0.02
    assert bottoms[-1] == pytest.approx(0.0, abs=0.005)
    assert _rests_on_a_face(poses[-1])
    # thrown forward at 0.3 m/s: it moved on, it did not fall straight down
    assert poses[-1, 0] > start[0] + 0.05
    assert genesis.last_metrics["max_floor_lift_m"] < 0.03


def test_genesis_box_resting_on_the_floor_stays(genesis):
    start = np.array([0.0, 0.0, SIZE[2] / 2 + 0.001, 1.0, 0.0, 0.0, 0.0])
    poses = genesis.fall(start, np.zeros(3), np.zeros(3), SIZE, 2.0, 30, FPS)
    assert np.abs(poses[:, :3] - start[:3]).max() < 0.01
    assert min(lowest_corner(p, SIZE) for p in poses) >= -1e-6


def test_analytic_fallback_falls_and_rests_on_the_floor():
    start = np.array([0.0, 0.0, 0.9, 1.0, 0.0, 0.0, 0.0])
    poses = AnalyticBox(G).fall(start, np.zeros(3), np.zeros(3), SIZE, 2.0, 30, FPS)
    bottoms = np.array([lowest_corner(p, SIZE) for p in poses])
    assert bottoms.min() >= -1e-9
    landed = int(np.argmax(np.abs(bottoms) < 1e-9))
    # it reaches the floor when g t^2 / 2 covers the drop (one frame's resolution)
    assert (landed + 1) / FPS == pytest.approx(np.sqrt(2 * (0.9 - SIZE[2] / 2) / G), abs=1.5 / FPS)
    assert np.allclose(poses[landed:, :3], poses[-1, :3])


def test_box_trajectory_hands_the_released_box_to_the_simulator(genesis):
    """Palms lift the box to 0.9 m and open: after the last held frame it is the
    simulator's (Genesis), and it ends at rest on the floor."""
    n, fps = 60, FPS
    z = np.concatenate([np.linspace(0.15, 0.9, 15), np.full(n - 15, 0.9)])
    palms = np.zeros((n, 2, 3))
    palms[:, 0] = np.stack([np.zeros(n), np.full(n, 0.2), z], axis=1)
    palms[:, 1] = np.stack([np.zeros(n), np.full(n, -0.2), z], axis=1)
    rest = np.array([0.0, 0.0, 0.15, 1.0, 0.0, 0.0, 0.0])
    box = box_trajectory(palms, Hold(start=0, lift=1, carry=15, place=19, end=19), rest, SIZE, fps, G, genesis)
    assert box[19, 2] == pytest.approx(0.9, abs=1e-6)  # held
    bottoms = np.array([lowest_corner(p, SIZE) for p in box])
    assert bottoms.min() >= -1e-6
    assert box[-1, 2] == pytest.approx(SIZE[2] / 2, abs=0.01) and _settled(box) < 0.02
