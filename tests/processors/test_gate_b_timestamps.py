"""Gate B — timestamps: strictly increasing, gaps, missing samples, sampling rate."""

from __future__ import annotations

import numpy as np
import pytest

from kibotos.config.gates import load_config
from kibotos.robots import get_robot
from kibotos.synthetic.samples import EXPECTED
from processors.gate_b_timestamps import GATE_ID
from tests.fixtures.episodes import PANDA, ROBOT_IDS, ROBOTS, manifest_for, run_gate_on, small_bundle, variants_of

CONFIG = load_config()


def _bundle(tmp_path, ts: np.ndarray, rate_hz: float = 50.0):
    robot = get_robot(*PANDA)
    q = np.tile(robot.home_qpos, (len(ts), 1)).astype(np.float32)
    q += np.linspace(0, 0.1, len(ts), dtype=np.float32)[:, None]  # moving, so gate A would pass too
    return small_bundle(tmp_path / "e.zarr.zip", robot, timestamps_ms=np.asarray(ts, np.int64), joint_pos=q,
                        manifest=manifest_for(robot, sampling_rate_hz=rate_hz))


def _regular(n: int, dt_ms: int = 20) -> np.ndarray:
    return np.arange(n, dtype=np.int64) * dt_ms


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_genuine_passes(samples, key):
    res = run_gate_on(GATE_ID, samples.path(key))
    assert res.passed, (res.reason_code, res.metrics)
    assert res.metrics["missing_fraction"] == 0.0 and res.metrics["median_dt_ms"] == 20.0
    assert res.thresholds == CONFIG.gate_b.model_dump() | {"nominal_dt_ms": 20.0}
    assert res.metrics["wall_ms"] > 0


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
@pytest.mark.parametrize("variant", variants_of(GATE_ID))
def test_rejects_its_failure_classes(samples, key, variant):
    res = run_gate_on(GATE_ID, samples.path(key, variant))
    assert (res.passed, res.reason_code) == (False, EXPECTED[variant][1]), res.metrics


@pytest.mark.parametrize("gap_ms, passes", [(190, True), (200, True), (201, False), (210, False)])
def test_gap_boundary(tmp_path, gap_ms, passes):
    """One gap in 500 samples: too few missing samples to matter, only its length counts."""
    ts = _regular(500)
    ts[250:] += gap_ms - 20
    res = run_gate_on(GATE_ID, _bundle(tmp_path, ts))
    assert res.metrics["max_dt_ms"] == gap_ms
    assert res.metrics["missing_fraction"] < CONFIG.gate_b.max_missing_fraction
    assert res.passed is passes, res.metrics
    assert passes or res.reason_code == "timestamp_gap"


@pytest.mark.parametrize("missing, passes", [(0.04, True), (0.05, True), (0.06, False)])
def test_missing_samples_boundary(tmp_path, missing, passes):
    """Single samples dropped across 1000: each leaves a 40 ms hole, far below the gap bound."""
    ts = _regular(1000)
    drop = np.linspace(10, 990, int(round(missing * 1000))).astype(int)
    assert len(set(drop)) == len(drop) and np.all(np.diff(drop) > 1)
    ts = np.delete(ts, drop)
    res = run_gate_on(GATE_ID, _bundle(tmp_path, ts))
    assert res.metrics["missing_fraction"] == pytest.approx(missing)
    assert res.metrics["max_dt_ms"] == 40
    assert res.passed is passes, res.metrics
    assert passes or res.reason_code == "missing_samples"


@pytest.mark.parametrize(
    "dt_ms, rate_hz, passes, reason",
    [
        (20, 50.0, True, None),
        (18, 50.0, True, None),    # 10 % faster than declared: the bound itself
        (17, 50.0, False, "sampling_rate_mismatch"),
        (10, 50.0, False, "sampling_rate_mismatch"),
        (10, 100.0, True, None),
        # 10 % slower is within the rate bound, but the samples the declared rate
        # promises are missing (9 % > 5 %)
        (22, 50.0, False, "missing_samples"),
        # beyond the rate bound the declared rate itself is what is wrong
        (23, 50.0, False, "sampling_rate_mismatch"),
    ],
)
def test_sampling_rate_must_match_the_manifest(tmp_path, dt_ms, rate_hz, passes, reason):
    res = run_gate_on(GATE_ID, _bundle(tmp_path, _regular(300, dt_ms), rate_hz=rate_hz))
    assert res.passed is passes, res.metrics
    assert res.reason_code == reason


@pytest.mark.parametrize("edit", ["duplicate", "backwards"])
def test_not_strictly_increasing(tmp_path, edit):
    ts = _regular(100)
    if edit == "duplicate":
        ts[40] = ts[39]
    else:
        ts[60:] -= 30
    res = run_gate_on(GATE_ID, _bundle(tmp_path, ts))
    assert (res.passed, res.reason_code) == (False, "timestamps_not_increasing")
    assert res.metrics["non_positive_dt"] == 1


def test_tighter_config_rejects_a_genuine_sample(samples):
    strict = CONFIG.model_copy(update={"gate_b": CONFIG.gate_b.model_copy(update={"max_gap_ms": 19})})
    res = run_gate_on(GATE_ID, samples.path(PANDA), strict)
    assert (res.passed, res.reason_code) == (False, "timestamp_gap")
    assert res.thresholds["max_gap_ms"] == 19
