"""``kibotos train --mlflow DIR`` logs the run's params and every iteration's metrics to
a local MLflow file store (mlflow-skinny's tracking client); without the flag nothing is
logged there."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from kibotos.cli.main import app

mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny is not installed")


def test_train_logs_params_and_metrics_per_iteration(clips_dir, small_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("KIBOTOS_HOME", str(tmp_path / "home"))
    cfg_file = tmp_path / "small.yaml"
    cfg_file.write_text(yaml.safe_dump(json.loads(small_cfg.model_dump_json())))
    two = tmp_path / "two"
    two.mkdir()
    for name in sorted(p.name for p in clips_dir.iterdir() if p.is_dir())[:2]:
        (two / name).symlink_to(clips_dir / name)
    store = tmp_path / "mlruns"
    run_dir = tmp_path / "runM"
    res = CliRunner().invoke(app, ["train", "--clips", str(two), "--config", str(cfg_file), "--num-envs", "2",
                                   "--iterations", "2", "--out", str(run_dir), "--no-register", "--mlflow", str(store)])
    assert res.exit_code == 0, res.output
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    exp = client.get_experiment_by_name("kibotos-xmimic")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "runM"
    assert run.data.params["role"] == "teacher" and run.data.params["config_version"] == small_cfg.config_version
    progress = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    for key, read in (("reward/total", lambda e: e["reward_terms"]["total"]), ("loss/value", lambda e: e["losses"]["value"]),
                      ("env_steps", lambda e: e["env_steps"])):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == [1, 2], key
        assert [m.value for m in history] == pytest.approx([read(e) for e in progress]), key
    # off by default: a second run without the flag adds no MLflow run
    res = CliRunner().invoke(app, ["train", "--clips", str(two), "--config", str(cfg_file), "--num-envs", "2",
                                   "--iterations", "1", "--out", str(tmp_path / "runN"), "--no-register"])
    assert res.exit_code == 0, res.output
    assert len(client.search_runs([exp.experiment_id])) == 1
