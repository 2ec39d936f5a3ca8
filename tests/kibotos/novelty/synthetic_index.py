"""Synthetic novelty-index rows, generated from a seed without any video: unrelated
episodes of three robots in a few scenes, and near-copies of earlier ones (noisy,
time-scaled off the config's grid, trimmed at either end, or unchanged kinematics; the
hashes a bit off, the motion signatures slightly noisy). Cheap to insert by the hundred,
so a candidate query can be checked on a populated index (``test_candidate_query.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kibotos.novelty import index
from kibotos.novelty.config import NoveltySection
from kibotos.novelty.fingerprint import Fingerprint, variant_names
from kibotos.novelty.index import scaled_trajectory

ROBOTS = [("panda", 7), ("ur5", 6), ("g1", 23)]
EMBEDDING_DIM = 1280


def _unit_rms(traj: np.ndarray) -> np.ndarray:
    """Centred per joint, unit RMS: as ``fingerprint.read_trajectory`` stores it."""
    traj = traj - traj.mean(axis=1, keepdims=True)
    rms = float(np.sqrt((traj * traj).mean())) or 1.0
    return (traj / rms).astype(np.float32)


def _near_copy(base: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    traj, hashes = base["traj"], [int(h) ^ (1 << int(rng.integers(0, 64))) for h in base["hashes"]]
    op = int(rng.integers(0, 5))
    if traj.size:
        if op == 0:
            # correlations about 0.999, 0.993, 0.987: above, inside and below the ramp's top
            traj = traj + rng.normal(0, float(rng.choice([0.05, 0.12, 0.16])), traj.shape).astype(np.float32)
        elif op == 1:
            traj = scaled_trajectory(traj, float(rng.choice([0.87, 0.93, 1.08, 1.13, 1.2])))
        elif op == 2:
            traj = traj[:, int(rng.integers(1, 30)):]
        elif op == 3:
            traj = traj[:, : max(12, traj.shape[1] - int(rng.integers(1, 40)))]
        traj = _unit_rms(traj) if traj.shape[1] >= 2 else traj
    if op == 2 and len(hashes) > 8:
        hashes = hashes[3:]
    noise = int(rng.choice([3, 3, 20]))  # motion cosines about 0.997 or 0.89 (between the ramp ends)
    motion = [np.clip(m.astype(np.int16) + rng.integers(-noise, noise + 1, m.shape), -127, 127).astype(np.int8)
              for m in base["motion"]]
    emb = None if base["emb"] is None else base["emb"] + rng.normal(0, 0.1, EMBEDDING_DIM)
    return {"traj": traj, "hashes": hashes, "mirror": list(base["mirror"])[: len(hashes)], "motion": motion,
            "emb": emb, "robot": base["robot"]}


def _fresh(cfg: NoveltySection, rng: np.random.Generator, scenes: list[np.ndarray]) -> dict[str, Any]:
    robot = ROBOTS[int(rng.integers(0, len(ROBOTS)))]
    traj = _unit_rms(np.cumsum(rng.normal(size=(robot[1], int(rng.integers(20, 257)))), axis=1))
    if rng.random() < 0.08:
        traj = np.zeros((0, 0), np.float32)  # static kinematics: not compared
    samples = int(rng.integers(10, 121))
    channels = cfg.motion.width * cfg.motion.height
    hashes = [int(h) for h in rng.integers(0, 2**63, samples, dtype=np.int64)]
    mirror = [int(h) for h in rng.integers(0, 2**63, samples, dtype=np.int64)]
    motion = [rng.integers(-40, 40, (samples, channels)).astype(np.int8)
              for _ in variant_names(tuple(cfg.motion.crop_variants))]
    emb: np.ndarray | None = scenes[int(rng.integers(0, len(scenes)))] + rng.normal(
        0, 0.5 if rng.random() < 0.5 else 3.0, EMBEDDING_DIM)
    if rng.random() < 0.06:  # no readable video
        hashes, mirror, motion, emb = [], [], [], None
    return {"traj": traj, "hashes": hashes, "mirror": mirror, "motion": motion, "emb": emb, "robot": robot}


def make_rows(n: int, cfg: NoveltySection, seed: int = 0, t0_ms: int = 1_800_000_000_000) -> list[dict[str, Any]]:
    """``n`` rows (keyword arguments of ``index.record``), a minute apart, five miners;
    about 45 % are near-copies of an earlier unrelated row."""
    rng = np.random.default_rng(seed)
    scenes = [rng.normal(size=EMBEDDING_DIM) for _ in range(4)]
    variants = variant_names(tuple(cfg.motion.crop_variants))
    rows, originals = [], []
    for i in range(n):
        miner = f"miner-{int(rng.integers(0, 5))}"
        if originals and rng.random() < 0.45:
            entry = _near_copy(originals[int(rng.integers(0, len(originals)))], rng)
        else:
            entry = _fresh(cfg, rng, scenes)
            if entry["hashes"]:
                originals.append(entry)
        emb = entry["emb"]
        fp = Fingerprint(sample_fps=cfg.frames.sample_fps, hashes=entry["hashes"], mirror_hashes=entry["mirror"],
                         motion_variants=variants if entry["motion"] else [], motion=entry["motion"],
                         embedding=None if emb is None else (emb / np.linalg.norm(emb)).astype(np.float32),
                         keyframes=8, trajectory=entry["traj"], trajectory_rate_hz=cfg.trajectory.rate_hz,
                         timings_ms={})
        created = t0_ms + i * 60_000
        rows.append({"submission_id": f"syn-{seed}-{i:05d}", "miner_id": miner, "robot_model_id": entry["robot"][0],
                     "created_at_ms": created, "fingerprint": fp,
                     "received_at_ms": created - int(rng.integers(0, 3)) * 90_000})
    return rows


def insert_rows(client, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        index.record(client, embedding_model="synthetic-embedding", artifacts={}, fingerprint_info={}, **row)
