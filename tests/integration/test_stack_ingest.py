"""The embedded stack serves the ingest API: ``stack.json`` names it, ``kibotos miner
submit --wait`` goes keygen → sign → submit → verdict through real gate workers, and a
truncated upload is rejected at ingestion with a verdict that ``kibotos report`` shows."""

from __future__ import annotations

import json
import uuid

import pytest
from typer.testing import CliRunner

from kibotos.cli.main import app
from kibotos.config.settings import Settings
from kibotos.identity import sidecar_path, sign_bundle
from kibotos.robots import get_robot
from kibotos.runtime.stack import Stack, state_file
from kibotos.synthetic.samples import make_episode
from tests.fixtures.ingest import keypair

pytestmark = pytest.mark.integration
runner = CliRunner()


def test_signed_uploads_through_the_stack(tansu, tmp_path, monkeypatch):
    home = tmp_path / "home"
    settings = Settings(home=home, bootstrap_servers=tansu.bootstrap, topic_prefix=f"s{uuid.uuid4().hex[:10]}.",
                        evidence_jobs=(), xgen_jobs=(), training_jobs=())
    pair = keypair("stack-miner")
    key = pair.save(tmp_path / "miner.json")
    good = make_episode(get_robot("ur5", "joint-limited-v1"), "genuine", seed=3, miner_id=pair.miner_id)
    good_path = good.write(tmp_path / "good.zarr.zip")
    broken_src = make_episode(get_robot("ur5", "joint-limited-v1"), "genuine", seed=4, miner_id=pair.miner_id)
    broken = broken_src.write(tmp_path / "broken.zarr.zip")
    truncated_sid = str(sign_bundle(broken, pair).submission_id)
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])  # the upload was cut short

    with Stack(settings, workers=1, log=lambda m: None) as stack:
        state = json.loads(state_file(settings).read_text())
        assert state["ingest_url"] == stack.ingest.url
        monkeypatch.setenv("KIBOTOS_HOME", str(home))
        monkeypatch.setenv("KIBOTOS_TOPIC_PREFIX", settings.topic_prefix)
        out = runner.invoke(app, ["miner", "submit", str(good_path), str(broken), "-k", str(key), "--wait",
                                  "--timeout", "120"], catch_exceptions=False)
        assert out.exit_code == 1, out.stdout  # one bundle was rejected
        assert "verdict accepted" in out.stdout and "bundle_unreadable" in out.stdout
        submitted = out.stdout
        assert sidecar_path(good_path).exists() is False  # signed on the fly, nothing written
        out = runner.invoke(app, ["report", truncated_sid, "--json"], catch_exceptions=False)
        rep = json.loads(out.stdout)
        assert (rep["verdict"], rep["reason_code"], rep["failed_gate"]) == (
            "rejected", "bundle_unreadable", "ingest_integrity")
        assert rep["miner_id"] == pair.miner_id
        ledger = runner.invoke(app, ["miner", "ledger", "-k", str(key), "--json"], catch_exceptions=False)
        good_sid = next(line.split()[0] for line in submitted.splitlines() if "verdict accepted" in line)
        good_report = json.loads(runner.invoke(app, ["report", good_sid, "--json"], catch_exceptions=False).stdout)
        assert good_report["scores"]["reward"] > 0
        assert json.loads(ledger.stdout)["balance"] == pytest.approx(good_report["scores"]["reward"])
