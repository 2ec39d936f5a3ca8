"""``kibotos bench evidence``: the IK stage (the cheapest) measured against its bare model
call; structure and sanity only — timings are for the benchmark's reader, not for tests."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from benchmarks.evidence import run_evidence_bench
from kibotos.cli.main import app


def test_ik_stage_is_measured_against_bare_forward_kinematics():
    result = run_evidence_bench(["ik"], repeats=1, progress=lambda m: None)
    [ik] = result["results"]
    assert ik["stage"] == "ik" and ik["passed"] is True and ik["frames"] >= 100
    assert ik["stage_s"] > 0 and ik["bare_s"] > 0
    # the stage solves constrained IK (many FK + Jacobian evaluations): never cheaper than one FK pass
    assert ik["ratio"] > 1.0
    # the same on the thread's CPU time (the stage and the pass run on one thread)
    assert ik["stage_cpu_s"] > 0 and ik["bare_cpu_s"] > 0 and ik["ratio_cpu"] > 1.0 and ik["runs"] >= 20
    assert ik["bare_numpy_cpu_s"] > 0 and ik["ratio_cpu_numpy_fk"] > 1.0
    assert result["machine"]["cpus"] >= 1 and json.loads(json.dumps(result)) == result


def test_cli_rejects_an_unknown_stage_and_writes_json(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", "evidence", "--stage", "teleport"])
    assert bad.exit_code == 2 and "known: pose, ik, playback" in bad.output
    out = tmp_path / "bench.json"
    ok = runner.invoke(app, ["bench", "evidence", "--stage", "ik", "--repeats", "1", "--json", str(out)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(out.read_text())["results"][0]["unit"] == "ms per 1000 frames"
