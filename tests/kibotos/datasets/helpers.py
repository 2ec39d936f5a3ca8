"""Accepted verdicts over real sample bundles, as the decision stage publishes them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from kibotos.objectstore import LocalObjectStore

DAY_MS = 86_400_000
T0 = 1_796_000_000_000  # 2026-12-01 ~ (epoch ms)
ROBOT_TASK = {"franka_panda": ("fer-v1", "pick_place"), "ur5": ("joint-limited-v1", "pick_place"),
              "unitree_g1": ("29dof-rev1.0", "cargo_pickup")}


def sid(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kibotos-test-episode-{n}"))


def report(submission_id: str, miner: str, robot: str, score: float | None, *, flags=(), keyframe_uri=None) -> dict:
    rev, task = ROBOT_TASK[robot]
    gates = [
        {"gate": "gate_a_integrity", "passed": True, "metrics": {}, "thresholds": {}, "reason_code": None,
         "flags": ["joint_vel_computed"]},
        {"gate": "gate_c_sync", "passed": True, "metrics": {}, "thresholds": {}, "reason_code": None,
         "flags": list(flags)},
        {"gate": "playback", "passed": True, "thresholds": {}, "reason_code": None, "flags": [],
         "metrics": {"keyframes": [{"frame": 3, "sim_uri": keyframe_uri or f"file:///kf/{submission_id}-sim.png",
                                    "real_uri": None}]}},
        {"gate": "task_completion", "passed": True, "metrics": {"task_id": task, "checklist_fraction": 1.0},
         "thresholds": {}, "reason_code": None, "flags": []},
    ]
    rep = {"submission_id": submission_id, "miner_id": miner, "verdict": "accepted", "reason_code": None,
           "failed_gate": None, "gates": gates, "sync": {}, "config_version": "gates-test",
           "robot_model_id": robot, "robot_model_revision": rev, "points": 10.0}
    if score is not None:
        rep["scores"] = {"score": score, "reward": 10.0 * score, "config_version": "scoring-test",
                         "components": [{"name": "retarget", "value": score}, {"name": "task", "value": 1.0}]}
    return rep


def verdict(n: int, miner: str, robot: str, score: float | None, bundle_uri: str, *, decided_at: int | None = None,
            verdict_kind: str = "accepted", event_type: str = "decision", flags=()) -> dict:
    s = sid(n)
    rep = report(s, miner, robot, score, flags=flags)
    rep["verdict"] = verdict_kind
    return {"schema_version": 3, "submission_id": s, "miner_id": miner, "verdict": verdict_kind,
            "reason_code": None if verdict_kind == "accepted" else "copied_submission", "failed_gate": None,
            "config_version": "gates-test", "decided_at": T0 + n * 1000 if decided_at is None else decided_at,
            "points": round(10.0 * (score or 0.5), 4) if verdict_kind == "accepted" else 0.0,
            "report_json": json.dumps(rep), "bundle_uri": bundle_uri, "upload_id": None,
            "event_id": None, "event_type": event_type, "revision": 0 if event_type == "decision" else 1}


def put_bundles(objects: LocalObjectStore, bundles: dict[str, Path]) -> dict[str, str]:
    """robot -> URI of its sample bundle in ``objects``."""
    return {robot: objects.put_file(path, f"submissions/{robot}.zarr.zip").uri for robot, path in bundles.items()}


def copy_bundle(objects: LocalObjectStore, src: Path, n: int) -> str:
    return objects.put_file(src, f"submissions/copy-{n}.zarr.zip").uri
