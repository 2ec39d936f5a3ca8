"""The sample set behind the verdict-identity test, and how its fixture is made.

``CASES`` are sample episodes (``kibotos.synthetic.samples``): every variant on one
robot, a few on the others, three size classes and noisy genuine ones
(``kibotos.synthetic.perturb``). ``results`` runs the gate chain on one (``run_chain``,
what ``kibotos verify`` runs) and then every gate the chain did not reach, on the same
view, so that each gate's metrics are pinned on every case.

The fixture (``verdicts_sample_set.json`` next to this file) was written from the code
before gate C was optimised (issue 17)::

    .venv/bin/python -m tests.processors.verdict_identity --write

Rewrite it only for an intended change of a verdict or metric, and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FIXTURE = Path(__file__).with_name("verdicts_sample_set.json")

PANDA = ("franka_panda", "fer-v1")
G1 = ("unitree_g1", "29dof-rev1.0")
UR5 = ("ur5", "joint-limited-v1")

# metrics that are time estimates (ms): equal within TIME_TOLERANCE_MS
TIME_ESTIMATES = frozenset({"estimated_offset_ms", "offset_used_ms", "sync_disagreement_ms", "overlap_ms"})
TIME_TOLERANCE_MS = 1.0
# x264 does not always give the same bytes for the same frames here (seen on the static
# G1 video, about one run in three), so the digest holds the decoded video, not the mp4's hash
VIDEO_LUMA_TOLERANCE = 0.5
# every other float: relative REL_TOLERANCE (metrics are compared as the gates round them;
# the same arithmetic in another order moves a value by ~1e-15, which flips a rounded
# last digit with a negligible probability)
REL_TOLERANCE = 1e-6
ABS_TOLERANCE = 1e-9
# measured, not judged, or naming source lines: differ run to run and edit to edit
VOLATILE = frozenset({"wall_ms", "trace"})  # "trace": an internal error's traceback (paths, line numbers)


@dataclass(frozen=True)
class Case:
    name: str
    robot: tuple[str, str]
    variant: str = "genuine"
    seed: int = 0
    duration_ms: float = 8000.0
    offset_ms: float | None = None
    perturb: str | None = None  # "noise", "drop", "jitter"


def _cases() -> list[Case]:
    from kibotos.synthetic.samples import VARIANTS

    cases = [Case(f"panda-{v}", PANDA, v, seed=11) for v in VARIANTS]
    cases += [Case(f"g1-{v}", G1, v, seed=12) for v in ("genuine", "sync_lie", "video_static", "teleport", "nan")]
    cases += [Case(f"ur5-{v}", UR5, v, seed=13) for v in ("genuine", "jerk", "video_blank", "degrees", "gap")]
    cases += [
        Case("panda-small", PANDA, seed=21, duration_ms=5000.0),
        Case("ur5-medium", UR5, seed=22, duration_ms=20000.0),
        Case("g1-small-offset400", G1, seed=23, duration_ms=5000.0, offset_ms=400.0),
        Case("panda-noise-0.03", PANDA, seed=24, perturb="noise"),
        Case("ur5-dropped-4pc", UR5, seed=25, perturb="drop"),
        Case("g1-jitter-3ms", G1, seed=26, perturb="jitter"),
    ]
    return cases


def episode(case: Case):
    from kibotos.robots import get_robot
    from kibotos.synthetic import perturb
    from kibotos.synthetic.samples import make_episode

    ep = make_episode(get_robot(*case.robot), case.variant, seed=case.seed, duration_ms=case.duration_ms,
                      offset_ms=case.offset_ms)
    noisy: dict[str, Callable] = {
        "noise": lambda e: perturb.with_joint_noise(e, 0.03),
        "drop": lambda e: perturb.with_dropped_samples(e, 0.04),
        "jitter": lambda e: perturb.with_timestamp_jitter(e, 3),
    }
    return noisy[case.perturb](ep) if case.perturb else ep


def digest(ep) -> dict:
    """What the gates read of an episode: a changed sample generator shows here first.
    Arrays by shape, sum and absolute sum (BLAS under load may move the generator's
    float32 output by an ulp from run to run; ``differences`` compares these within
    1e-6), the video by its decoded size, frame count and mean luma (within
    ``VIDEO_LUMA_TOLERANCE``), the manifest by hash (less the ids ``perturb.copy_of`` draws)."""
    manifest = {k: v for k, v in ep.manifest.items() if k not in ("submission_id", "episode_id", "created_at")}
    arrays = {name: a for name, a in (("timestamps_ms", ep.timestamps_ms), ("joint_pos", ep.joint_pos),
                                      ("joint_vel", ep.joint_vel)) if a is not None}
    return {"video": video_digest(ep.video_mp4),
            "manifest_sha256": hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()[:16],
            "arrays": {name: {"shape": list(a.shape), "sum": float(a.astype("float64").sum()),
                              "abs_sum": float(abs(a.astype("float64")).sum())} for name, a in arrays.items()}}


def video_digest(data: bytes) -> dict:
    from kibotos.media.video import decode_luma

    luma = np.asarray(decode_luma(data).frames, dtype=np.float64)
    return {"frames": int(luma.shape[0]), "shape": list(luma.shape[1:]),
            "mean_luma": round(float(luma.mean()), 3) if luma.size else 0.0}


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def results(path: Path) -> dict:
    """Every gate's result on the bundle at ``path``: the chain first, then the gates it
    did not reach; ``verdict`` is the chain's."""
    from kibotos.bundle.reader import Limits, open_bundle
    from kibotos.config.gates import load_config
    from processors.base import gates, run_gate
    from processors.chain import build_report, run_chain

    config = load_config()
    with open_bundle(path, Limits.from_config(config)) as view:
        chain = run_chain(view, config)
        rest = [run_gate(g, view, config) for g in gates()[len(chain):]]
    report = build_report("x", chain, config.config_version)
    return {
        "verdict": report.verdict, "reason_code": report.reason_code, "failed_gate": report.failed_gate,
        "chain": [r.gate for r in chain],
        "gates": {r.gate: {"passed": r.passed, "reason_code": r.reason_code, "flags": list(r.flags),
                           "metrics": _clean(r.metrics)} for r in [*chain, *rest]},
    }


def compute(cases: list[Case] | None = None) -> dict:
    out = {}
    with tempfile.TemporaryDirectory(prefix="kibotos-verdicts-") as tmp:
        for case in cases or _cases():
            ep = episode(case)
            path = ep.write(Path(tmp) / f"{case.name}.zarr.zip")
            out[case.name] = {"digest": digest(ep)} | results(path)
    return out


def differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Where ``actual`` departs from ``expected`` beyond the tolerances (module docstring)."""
    key = where.rsplit(".", 1)[-1]
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{where}.{k}: missing" for k in expected if k not in actual]
        out += [f"{where}.{k}: unexpected ({actual[k]!r})" for k in actual if k not in expected]
        for k in expected:
            if k in actual:
                out += differences(expected[k], actual[k], f"{where}.{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {expected!r} != {actual!r}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in differences(e, a, f"{where}[{i}]")]
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        if math.isnan(expected) or math.isnan(actual):
            ok = math.isnan(expected) and math.isnan(actual)
        elif key in TIME_ESTIMATES:
            ok = abs(expected - actual) <= TIME_TOLERANCE_MS
        elif key == "mean_luma":
            ok = abs(expected - actual) <= VIDEO_LUMA_TOLERANCE
        else:
            ok = abs(expected - actual) <= max(REL_TOLERANCE * abs(expected), ABS_TOLERANCE)
        return [] if ok else [f"{where}: {expected!r} -> {actual!r}"]
    if type(expected) is not type(actual) or expected != actual:
        return [f"{where}: {expected!r} -> {actual!r}"]
    return []


def main(argv: list[str]) -> int:
    if argv != ["--write"]:
        print(__doc__)
        return 2
    FIXTURE.write_text(json.dumps(compute(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
