"""``kibotos bench pipeline`` on the tiniest configuration (one small episode, one gate
worker): every stage runs end to end and the JSON is consistent with itself; timings are
for the benchmark's reader, never asserted against targets."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path

from typer.testing import CliRunner

from benchmarks.pipeline import DOCTOR_EQUIVALENT_CHECKS, LONE_EPISODES, bench_lerobot_doctor
from kibotos.cli.main import app
from processors.chain import gates

STAGES = ("floor", "floor_fast", "chain", "gates_abde", "stack_1w")


def _consistent(stage: dict) -> None:
    assert stage["episodes"] == 1 and stage["bytes"] > 0 and stage["wall_s"] > 0
    assert math.isclose(stage["episodes_per_s"], 1 / stage["wall_s"], rel_tol=0.01)
    assert math.isclose(stage["mb_per_s"], stage["bytes"] / 1e6 / stage["wall_s"], rel_tol=0.01, abs_tol=0.001)
    lat = stage["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["max"]
    assert stage["by_size"]["small"]["latency_ms"] == lat


def test_one_small_episode_through_every_stage(tmp_path):
    out = tmp_path / "pipeline.json"
    res = CliRunner().invoke(app, ["bench", "pipeline", "--episodes", "1", "--sizes", "small", "--workers", "1",
                                   "--json", str(out), "--timeout", "300"])
    assert res.exit_code == 0, res.output
    for title in ("pipeline: 1 episodes per size (small)", "per-gate cost", "ratios of wall times"):
        assert title in res.output
    result = json.loads(out.read_text())

    assert list(result["stages"]) == list(STAGES)
    for name in STAGES:
        _consistent(result["stages"][name])
    floor, floor_fast, chain, abde, stack = (result["stages"][n] for n in STAGES)
    assert floor["frames_decoded"] > 0 and floor_fast["frames_decoded"] == floor["frames_decoded"]
    assert abde["gate_ids"] == ["gate_a_integrity", "gate_b_timestamps", "gate_d_limits", "gate_e_plausibility"]
    fast = result["fast_decode"]
    assert fast["episodes"] == 1 and fast["verdicts_differ"] == 0 and fast["offset_diff_ms"]["max"] is not None
    assert fast["within_10_ms"] == (fast["offset_diff_ms"]["max"] <= 10.0)
    gate_ids = [g.gate_id for g in gates()]
    for stage in (chain, stack):
        assert stage["verdicts"] == {"accepted": 1}  # a genuine episode
        assert list(stage["gates"]) == gate_ids
        assert math.isclose(sum(g["share"] for g in stage["gates"].values()), 1.0, abs_tol=0.01)
    # the stack's latency holds the gates' own time plus what is outside them
    assert sum(g["total_ms"] for g in stack["gates"].values()) <= stack["latency_ms"]["p50"]
    assert 0 <= stack["outside_gates_ms"]["p50"] <= stack["latency_ms"]["p50"]
    assert stack["workers"] == 1 and stack["warmup_episodes"] == 2 and stack["peak_rss"]["gate_workers_mb"] > 0

    ratios = result["ratios"]
    assert set(ratios) >= {"chain_over_floor", "chain_over_floor_small", "floor_fast_over_floor",
                           "stack_1w_over_chain", "stack_1w_lone_small_over_chain"}
    assert math.isclose(ratios["chain_over_floor"], chain["wall_s"] / floor["wall_s"], rel_tol=0.01)
    assert math.isclose(ratios["floor_fast_over_floor"], floor_fast["wall_s"] / floor["wall_s"], rel_tol=0.01)
    # a size class's ratio is that of the two stages' summed per-episode latencies (not of wall
    # times: those also hold the loop around the episodes, which a loaded machine stretches)
    small_chain, small_floor = chain["by_size"]["small"], floor["by_size"]["small"]
    assert math.isclose(ratios["chain_over_floor_small"],
                        small_chain["latency_ms"]["mean"] * small_chain["episodes"]
                        / (small_floor["latency_ms"]["mean"] * small_floor["episodes"]), rel_tol=0.01)
    lone = result["lone_small"]
    assert lone["chain_ms"] > 0 and lone["stack_ms"]["1w"] > 0
    # the lone episodes' latency is their median; each hop of their path is traced
    assert len(stack["lone_small_latencies_ms"]) == LONE_EPISODES
    assert math.isclose(lone["stack_ms"]["1w"], statistics.median(stack["lone_small_latencies_ms"]), abs_tol=0.1)
    hops = stack["lone_small_hops"]
    assert list(hops) == ["gates.a.passed", "gates.b.passed", "gates.c.passed", "gates.d.passed",
                          "gates.e.passed", "evidence.completed", "verdicts"]
    assert all(h["hop_ms"] >= h["outside_ms"] for h in hops.values())
    assert "lone small episodes: per hop" in res.output
    assert math.isclose(ratios["stack_1w_lone_small_over_chain"], lone["stack_ms"]["1w"] / lone["chain_ms"],
                        rel_tol=0.01)
    assert math.isclose(ratios["stack_1w_over_chain"], stack["wall_s"] / chain["wall_s"], rel_tol=0.01)

    doctor = result["lerobot_doctor"]
    if importlib.util.find_spec("lerobot_doctor") is None:
        assert doctor["status"] == "unavailable" and "[bench]" in doctor["reason"]
    else:
        assert doctor["status"] == "ok", doctor.get("reason")
        # our conversion is a valid LeRobot v3 dataset of a clean episode
        assert all(doctor["severities"][c] == {"PASS": 1} for c in DOCTOR_EQUIVALENT_CHECKS)
        assert 0 < doctor["equivalent"]["wall_s"] <= doctor["wall_s"]
        assert math.isclose(ratios["lerobot_doctor_equivalent_over_chain"],
                            doctor["equivalent"]["wall_s"] / chain["wall_s"], rel_tol=0.01)
        assert 0 < doctor["equivalent_abde"]["wall_s"] < doctor["equivalent"]["wall_s"]
        assert math.isclose(ratios["lerobot_doctor_abde_over_gates_abde"],
                            doctor["equivalent_abde"]["wall_s"] / abde["wall_s"], rel_tol=0.01)
        # the paired comparison: both alternated on each episode, medians of the rounds
        pair = doctor["paired_abde"]
        assert pair["rounds"] >= 3 and pair["gates_abde"]["episodes"] == pair["doctor_abde"]["episodes"] == 1
        assert math.isclose(ratios["lerobot_doctor_abde_over_gates_abde_paired"],
                            pair["doctor_abde"]["wall_s"] / pair["gates_abde"]["wall_s"], rel_tol=0.01)

    assert result["machine"]["usable_cpus"] >= 1 and result["config"]["robots"] and len(result["episodes"]) == 1
    assert not list(Path.cwd().glob("kibotos-bench*-data"))  # faust's data dirs stay in the stack home


def test_lerobot_doctor_missing_is_reported_not_measured(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lerobot_doctor", None)  # import raises ImportError
    doctor = bench_lerobot_doctor([], [], tmp_path, progress=lambda m: None)
    assert doctor["status"] == "unavailable"
    assert "pip install -e '.[bench]'" in doctor["reason"] and "wall_s" not in doctor


def test_cli_rejects_unknown_sizes_and_worker_counts():
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", "pipeline", "--sizes", "huge"])
    assert bad.exit_code == 2 and "known: small (5 s), medium (20 s), large (60 s)" in bad.output
    bad = runner.invoke(app, ["bench", "pipeline", "--workers", "0,2"])
    assert bad.exit_code == 2 and "workers must be" in bad.output


def test_paired_comparison_alternates_gates_and_doctor(tmp_path):
    """``paired_abde``: the gates and the doctor's checks less ``videos``, one after the
    other on each episode, ``rounds`` times; each episode's median of each."""
    import pytest

    pytest.importorskip("lerobot_doctor")
    from benchmarks.pipeline import gates_abde_verifier, generate_episodes
    from kibotos.config.gates import load_config
    from kibotos.robots import list_robots

    episodes = generate_episodes(tmp_path / "episodes", 1, ["small"], list_robots()[:1], lambda m: None)
    verify, calls = gates_abde_verifier(load_config()), []

    def paired(path):
        calls.append(path)
        results = verify(path)
        assert [r.passed for r in results] == [True] * 4  # a genuine episode: every gate ran
        return results

    doctor = bench_lerobot_doctor(episodes, [], tmp_path / "lerobot", lambda m: None, paired=paired, rounds=3)
    assert doctor["status"] == "ok", doctor.get("reason")
    pair = doctor["paired_abde"]
    assert calls == [episodes[0].path] * 3 and pair["rounds"] == 3
    assert pair["gates_abde"]["episodes"] == pair["doctor_abde"]["episodes"] == 1
    assert pair["gates_abde"]["wall_s"] > 0 and pair["doctor_abde"]["wall_s"] > 0
    assert "paired_abde" not in bench_lerobot_doctor(episodes, [], tmp_path / "again", lambda m: None)
