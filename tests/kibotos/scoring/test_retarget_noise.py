"""Noise shows in S_retarget, not in a rejection (issue 13 §1): on every registered robot a
noise ladder 0 -> 0.03 rad on a genuine episode (``perturb.with_joint_noise``, the same noise
pattern scaled) gives a non-increasing S_retarget — through the real IK residual stage,
whose trajectory metrics feed the smoothness term — with Spearman(noise, S) <= -0.8, while
the IK stage (and gates A-E, ``tests/processors/test_gate_e_noise.py``) accept every rung."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_consumers.ik import IKSolver, check_ik
from kibotos.bundle import open_bundle
from kibotos.config.gates import load_config
from kibotos.robots import get_robot
from kibotos.scoring import load_scoring_config, s_retarget
from kibotos.synthetic import perturb
from tests.fixtures.episodes import ROBOT_IDS, ROBOTS

LEVELS = (0.0, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03)


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):  # ties share their mean rank
        ranks[x == v] = ranks[x == v].mean()
    return ranks


def spearman(x, y) -> float:
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    return float(np.corrcoef(rx, ry)[0, 1])


def test_spearman_helper():
    assert spearman([1, 2, 3, 4], [9, 7, 5, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_s_retarget_falls_monotonically_with_noise(samples, tmp_path, key):
    solver = IKSolver(get_robot(*key))
    gates, scoring = load_config(), load_scoring_config()
    ep = samples.episode(key)
    values, smoothness = [], []
    for level in LEVELS:
        noisy = perturb.with_joint_noise(ep, level) if level else ep
        with open_bundle(noisy.write(tmp_path / f"{level}.zarr.zip")) as view:
            res = check_ik(view, gates, solver)
        assert res.passed, (level, res.reason_code, res.metrics)
        comp = s_retarget({res.gate: res}, scoring)
        values.append(comp.value)
        smoothness.append(comp.inputs["terms"]["smoothness"])
    assert all(b <= a for a, b in zip(values, values[1:])), values
    assert all(b <= a for a, b in zip(smoothness, smoothness[1:])), smoothness
    assert spearman(LEVELS, values) <= -0.8, values
    assert values[-1] < values[0] - 0.1, values  # a real fall, not a rounding step
