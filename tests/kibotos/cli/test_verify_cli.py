"""``kibotos verify``, ``sample``, ``robots`` and ``bundle inspect`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kibotos.cli.main import app
from kibotos.config.gates import DEFAULT_PATH, load_config
from kibotos.robots import get_robot, list_robots
from kibotos.synthetic.samples import EXPECTED
from processors.base import gates
from tests.fixtures.episodes import PANDA, ROBOTS

CONFIG = load_config()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "240", "NO_COLOR": "1"})


def _json(result) -> dict:
    return json.loads(result.stdout)


def test_genuine_bundle_exits_0_with_a_complete_json_report(runner, samples):
    ep = samples.episode(PANDA)
    result = runner.invoke(app, ["verify", str(samples.path(PANDA)), "--json"])
    assert result.exit_code == 0, result.output
    report = _json(result)
    assert {"submission_id", "verdict", "reason_code", "gates", "sync", "config_version"} <= set(report)
    assert report["submission_id"] == ep.manifest["submission_id"]
    assert (report["verdict"], report["reason_code"]) == ("accepted", None)
    assert report["config_version"] == CONFIG.config_version
    assert [g["gate"] for g in report["gates"]] == [g.gate_id for g in gates()]
    for g in report["gates"]:
        assert {"gate", "passed", "metrics", "thresholds", "reason_code"} <= set(g)
        assert g["passed"] is True and g["reason_code"] is None
        assert g["thresholds"] and g["metrics"]["wall_ms"] > 0
    sync = report["sync"]
    assert set(sync) == {"claimed_offset_ms", "estimated_offset_ms", "sync_confidence"}
    assert sync["claimed_offset_ms"] == ep.manifest["sync"]["sync_offset_ms_claimed"]
    assert isinstance(sync["estimated_offset_ms"], float) and 0 <= sync["sync_confidence"] <= 1


@pytest.mark.parametrize("variant", ["nan", "gap", "sync_lie", "limit_violation", "teleport"])
def test_rejected_bundle_exits_1(runner, samples, variant):
    result = runner.invoke(app, ["verify", str(samples.path(PANDA, variant)), "--json"])
    assert result.exit_code == 1, result.output
    report = _json(result)
    assert report["verdict"] == "rejected"
    assert (report["failed_gate"], report["reason_code"]) == EXPECTED[variant]
    assert report["gates"][-1]["passed"] is False


def test_unreadable_input_exits_2(runner, tmp_path):
    junk = tmp_path / "junk.zarr.zip"
    junk.write_bytes(b"\x00" * 1000)
    result = runner.invoke(app, ["verify", str(junk), "--json"])
    assert result.exit_code == 2, result.output
    report = _json(result)
    assert (report["verdict"], report["reason_code"]) == ("rejected", "bundle_unreadable")
    assert report["config_version"] == CONFIG.config_version
    missing = runner.invoke(app, ["verify", str(tmp_path / "nope.zarr.zip")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output


def test_human_readable_report(runner, samples):
    result = runner.invoke(app, ["verify", str(samples.path(PANDA, "gap"))])
    assert result.exit_code == 1
    for text in ("rejected", "timestamp_gap", "gate_b_timestamps", CONFIG.config_version):
        assert text in result.stdout


def test_config_option_changes_thresholds_and_version(runner, samples, tmp_path):
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["config_version"] = "gates-test-strict"
    raw["gate_b"]["max_gap_ms"] = 10
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["verify", str(samples.path(PANDA)), "--json", "--config", str(path)])
    assert result.exit_code == 1, result.output
    report = _json(result)
    assert (report["config_version"], report["reason_code"]) == ("gates-test-strict", "timestamp_gap")
    assert report["gates"][-1]["thresholds"]["max_gap_ms"] == 10


def test_invalid_config_is_a_domain_error(runner, samples, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("config_version: x\ngate_a: {}\n")
    result = runner.invoke(app, ["verify", str(samples.path(PANDA)), "--config", str(path)])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and "invalid gate config" in result.output


def test_error_line_names_the_reason_code(runner, tmp_path):
    result = runner.invoke(app, ["bundle", "inspect", str(tmp_path / "nope.zarr.zip")])
    assert result.exit_code == 2
    assert "bundle_not_found" in result.output


def test_bundle_inspect_prints_manifest_and_shapes(runner, samples):
    ep = samples.episode(PANDA)
    T, J = ep.joint_pos.shape
    result = runner.invoke(app, ["bundle", "inspect", str(samples.path(PANDA))])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert ep.manifest["submission_id"] in out and "franka_panda" in out
    for stream, shape in (("kinematics/joint_pos", f"({T}, {J})"), ("kinematics/timestamps_ms", f"({T},)"),
                          ("video/primary/encoded", f"({len(ep.video_mp4)},)")):
        line = next(line for line in out.splitlines() if stream in line)
        assert shape in line, line

    as_json = runner.invoke(app, ["bundle", "inspect", "--json", str(samples.path(PANDA))])
    data = _json(as_json)
    assert data["manifest"] == ep.manifest
    arrays = {a["path"]: a for a in data["arrays"]}
    assert arrays["kinematics/joint_pos"]["shape"] == [T, J]
    assert arrays["kinematics/joint_pos"]["dtype"] == "float32"


def test_sample_writes_bundles_that_verify(runner, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["sample", "--out", str(out), "--robot", "ur5", "--variant", "genuine",
                                 "--variant", "gap", "--seed", "3", "--miner", "m-3"])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert files == ["ur5-gap-3.zarr.zip", "ur5-genuine-3.zarr.zip"]
    genuine = runner.invoke(app, ["verify", "--json", str(out / "ur5-genuine-3.zarr.zip")])
    assert genuine.exit_code == 0 and _json(genuine)["miner_id"] == "m-3"
    assert runner.invoke(app, ["verify", str(out / "ur5-gap-3.zarr.zip")]).exit_code == 1


@pytest.mark.parametrize("args, listed", [(["--robot", "atlas"], "franka_panda@fer-v1"),
                                          (["--variant", "wobbly"], "teleport")])
def test_sample_refuses_unknown_names_and_lists_the_known(runner, tmp_path, args, listed):
    result = runner.invoke(app, ["sample", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert listed in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_robots_lists_every_robot(runner):
    result = runner.invoke(app, ["robots"])
    assert result.exit_code == 0
    for model_id, revision in list_robots():
        line = next(line for line in result.stdout.splitlines() if model_id in line)
        assert revision in line and f" {get_robot(model_id, revision).dof} " in line


def test_installed_entry_point(samples):
    """The console script of the package, in a fresh process."""
    exe = Path(sys.executable).with_name("kibotos")
    assert exe.is_file(), exe
    proc = subprocess.run([str(exe), "verify", "--json", str(samples.path(ROBOTS[0], "nan"))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["failed_gate"], report["reason_code"]) == EXPECTED["nan"]
    assert "Traceback" not in proc.stderr
