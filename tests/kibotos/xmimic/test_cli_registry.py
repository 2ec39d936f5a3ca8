"""kibotos policies list|show|download over the local registry, and clear refusals."""

import json

from typer.testing import CliRunner

from kibotos.cli.main import app
from kibotos.xmimic.registry import register
from kibotos.xmimic.train import train


def test_policies_registry_through_the_cli(clips, small_cfg, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("KIBOTOS_HOME", str(home))
    r = train(clips[:2], small_cfg, tmp_path / "runA", num_envs=2, iterations=1, run_id="runA")
    pid = register(home, r.checkpoint)
    assert pid == "teacher-runA-it1"
    assert register(home, r.checkpoint) == pid  # idempotent
    cli = CliRunner()
    res = cli.invoke(app, ["policies", "list"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [row["policy_id"] for row in rows] == [pid] and rows[0]["role"] == "teacher"
    res = cli.invoke(app, ["policies", "show", pid])
    assert json.loads(res.stdout)["config_version"] == small_cfg.config_version
    res = cli.invoke(app, ["policies", "download", pid, "--out", str(tmp_path)])
    assert res.exit_code == 0 and (tmp_path / f"{pid}.pt").read_bytes() == r.checkpoint.read_bytes()
    res = cli.invoke(app, ["policies", "show", "nope"])
    assert res.exit_code == 1 and "xmimic_policy_unknown" in res.output


def test_train_and_eval_refuse_bad_input(clips_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KIBOTOS_HOME", str(tmp_path / "home"))
    cli = CliRunner()
    res = cli.invoke(app, ["train", "--clips", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "xmimic_clips_missing" in res.output
    res = cli.invoke(app, ["train"])
    assert res.exit_code == 2 and "xmimic_arguments_invalid" in res.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    (tmp_path / "clips").mkdir()
    res = cli.invoke(app, ["eval", "nope-policy", "--clips", str(tmp_path / "clips")])
    assert res.exit_code == 1 and "xmimic_clips_missing" in res.output
    res = cli.invoke(app, ["eval", str(bad), "--clips", str(clips_dir), "--no-heldout"])
    assert res.exit_code == 1 and "xmimic_checkpoint_invalid" in res.output
