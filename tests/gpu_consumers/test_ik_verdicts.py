"""The IK job's verdicts and metrics on the sample set, held to what the solver gave before
it was made faster (issue 17): the same pass/fail, reason codes, flags and target frames;
the submitted joints' residuals (no solver involved) equal to rounding; the solver's own
residual (``ik_feasibility``) within 1 mm or 5 % RMS, 2 mm or 5 % peak (orientation within
0.5 degrees or 5 %).

``ik_verdicts.json`` was recorded with the solver as it was before the change (multi-start
and batch Levenberg–Marquardt run until nothing moved, 60 iterations at most) by
``python -m tests.gpu_consumers.test_ik_verdicts --record``; re-record it only for a
deliberate change of what the job measures, never to make this test pass.

Why the solver's metrics are held within tolerances, and its joint-space distance to the
submitted joints not at all: the multi-start on the first frame used to take the start with
the smallest residual after 60 iterations, when several starts had reached the target
exactly (residuals ~1e-17 m: for the Panda's genuine episode starts 0, 4, 5, 17 and 23,
and it took 17 — a choice made by rounding). It now takes the first start to reach the
target (home first on a tie). Another exact start can lie on another IK branch (elbow,
wrist flip, a redundant arm's null space): the solution's distance to the submitted joints
then changes by radians (it is reported as information, never scored or judged), and the
smoothness-coupled solve can land on a different local optimum — the one case here is the
UR5 ``jerk`` episode, peak 2.78 mm on the submitted joints' own branch where the old choice
gave 1.59 mm (RMS 0.48 mm both): hence 2 mm on the peak.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gpu_consumers.ik import IKSolver, check_ik
from kibotos.bundle import open_bundle
from kibotos.config.gates import load_config
from kibotos.robots import get_robot, list_robots
from kibotos.synthetic.samples import OBJECT_NAME, make_episode

GOLDEN = Path(__file__).with_name("ik_verdicts.json")
CONFIG = load_config()
POSE = f"objects/{OBJECT_NAME}/pose"

# every robot the IK job serves (all registered ones), on the variants that reach the IK
# job with their own joints or object stream (the video-only variants share the genuine
# episode's kinematics), two seeds of the genuine episode, and a target out of reach
VARIANTS = (("genuine", 0), ("genuine", 1), ("ik_perturbed", 0), ("ik_target_shift", 0), ("task_failed", 0),
            ("jerk", 0), ("gap", 0), ("out_of_reach", 0))

# (metric path, absolute tolerance, relative tolerance)
SOLVER_METRICS = (
    (("ik_feasibility", "rms_pos_error_m"), 1e-3, 0.05),
    (("ik_feasibility", "peak_pos_error_m"), 2e-3, 0.05),
    (("ik_feasibility", "orientation_error_deg", "mean"), 0.5, 0.05),
    (("ik_feasibility", "orientation_error_deg", "p95"), 0.5, 0.05),
    (("ik_feasibility", "orientation_error_deg", "max"), 0.5, 0.05),
    (("ik_feasibility", "orientation_error_deg", "fraction_above_limit"), 0.01, 0.05),
)
# measured on the submitted joints only: the solver has no part in them
EXACT_METRICS = (("applicable",), ("target_source",), ("target_frames",), ("rms_pos_error_m",),
                 ("peak_pos_error_m",), ("orientation_error_deg",), ("s_retarget",), ("failed_checks",),
                 ("trajectory",))


def _bundle(key: tuple[str, str], variant: str, seed: int, root: Path, samples=None) -> Path:
    """The sample bundle (from the session's ``samples`` cache when there is one)."""
    if variant != "out_of_reach":
        if samples is not None:
            return samples.path(key, variant, seed)
        return make_episode(get_robot(*key), variant, seed=seed).write(root / f"{key[0]}-{variant}-{seed}.zarr.zip")
    ep = samples.episode(key, "genuine", seed) if samples is not None else \
        make_episode(get_robot(*key), "genuine", seed=seed)
    pose = ep.extra_arrays[POSE].copy()
    pose[:, 0] += 3.0  # three metres further than any of these robots reaches
    return replace(ep, extra_arrays=ep.extra_arrays | {POSE: pose}).write(root / f"{key[0]}-{variant}-{seed}.zarr.zip")


def _summary(res) -> dict:
    m = res.metrics
    out = {"passed": res.passed, "reason_code": res.reason_code, "flags": list(res.flags)}
    for path in EXACT_METRICS + tuple(p for p, _, _ in SOLVER_METRICS):
        v = m
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        out["/".join(path)] = v
    return out


def _run(key, variant, seed, solver, root: Path, samples=None) -> dict:
    with open_bundle(_bundle(key, variant, seed, root, samples)) as view:
        return _summary(check_ik(view, CONFIG, solver))


def _case_id(key, variant, seed) -> str:
    return f"{key[0]}@{key[1]}/{variant}/{seed}"


CASES = [(key, variant, seed) for key in list_robots() for variant, seed in VARIANTS]


def compare(got: dict, want: dict) -> list[str]:
    """What differs beyond the tolerances (empty: the same verdict and metrics)."""
    problems = [f"{k}: {got.get(k)!r} != {want[k]!r}" for k in ("passed", "reason_code", "flags")
                if got.get(k) != want[k]]
    for path in EXACT_METRICS:
        k = "/".join(path)
        if got.get(k) != want[k]:
            problems.append(f"{k}: {got.get(k)!r} != {want[k]!r}")
    for path, atol, rtol in SOLVER_METRICS:
        k = "/".join(path)
        a, b = got.get(k), want[k]
        if (a is None) != (b is None):
            problems.append(f"{k}: {a!r} != {b!r}")
        elif a is not None and abs(a - b) > max(atol, rtol * abs(b)):
            problems.append(f"{k}: {a!r} differs from {b!r} by more than {atol} or {rtol:.0%}")
    return problems


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def solvers():
    made: dict[tuple[str, str], IKSolver] = {}
    return lambda key: made.setdefault(key, IKSolver(get_robot(*key)))


def test_every_case_is_recorded(golden):
    assert sorted(golden) == sorted(_case_id(*c) for c in CASES)
    # the record exercises both verdicts, the solver-decided reason and a non-applicable case
    reasons = {v["reason_code"] for v in golden.values()}
    assert {None, "ik_peak_exceeded", "ik_rms_exceeded", "ik_target_infeasible"} <= reasons
    assert any(v["applicable"] is False for v in golden.values())


@pytest.mark.parametrize("key, variant, seed", CASES, ids=[_case_id(*c) for c in CASES])
def test_verdict_and_metrics_as_recorded(golden, solvers, samples, tmp_path, key, variant, seed):
    got = _run(key, variant, seed, solvers(key), tmp_path, samples)
    assert compare(got, golden[_case_id(key, variant, seed)]) == []


def test_compare_catches_a_changed_residual_or_verdict(golden):
    """The comparison itself can fail: a residual 2 mm and 10 % off, a flipped verdict."""
    case = golden[_case_id(("franka_panda", "fer-v1"), "genuine", 0)]
    assert compare(dict(case), case) == []
    worse = dict(case)
    worse["ik_feasibility/rms_pos_error_m"] = case["ik_feasibility/rms_pos_error_m"] * 1.1 + 0.002
    assert any("ik_feasibility/rms_pos_error_m" in p for p in compare(worse, case))
    assert compare(case | {"passed": not case["passed"]}, case) != []
    assert compare(case | {"reason_code": "ik_target_infeasible"}, case) != []


def record() -> None:
    import tempfile

    made: dict[tuple[str, str], IKSolver] = {}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, variant, seed in CASES:
            solver = made.setdefault(key, IKSolver(get_robot(*key)))
            out[_case_id(key, variant, seed)] = _run(key, variant, seed, solver, Path(tmp))
            print(_case_id(key, variant, seed), out[_case_id(key, variant, seed)]["reason_code"], flush=True)
    GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True, default=lambda x: np.asarray(x).tolist()) + "\n")


if __name__ == "__main__":
    if "--record" in sys.argv:
        record()
