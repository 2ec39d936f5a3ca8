"""XGen end to end through the embedded stack: ``kibotos xgen submit --wait`` uploads a
keypoints file through the ingest API (signed, presigned), the GPU consumer group (Ray
actors, one kind per stage) runs pose -> retarget -> interaction -> augment -> export +
quality over a real Tansu broker, and the sink writes the stage results and clips to
chdb, which ``kibotos xgen status`` reads back. A second, malformed source is refused at
the pose stage with its reason code. Few augment variants (a test config) keep it short."""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from kibotos.cli.main import app
from kibotos.config.settings import Settings
from kibotos.runtime.stack import Stack
from kibotos.xgen.config import DEFAULT_PATH
from kibotos.xgen.skeleton import write_keypoints
from kibotos.xgen.synth import cargo_pickup
from tests.fixtures.ingest import keypair

pytestmark = pytest.mark.integration
runner = CliRunner()


def small_config(path):
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["config_version"] += "-test-2clips"
    raw["augment"].update(size_scales=[], yaw_offsets_deg=[], masses_kg=[], speeds=[], mirror=True,
                          base_offsets_m=[], min_clips=2)
    raw["export"]["preview"] = False  # Genesis previews cost ~30 s to start; unit-tested with the export job
    path.write_text(yaml.safe_dump(raw))
    return path


def test_xgen_request_through_the_stack(tansu, tmp_path, monkeypatch):
    home = tmp_path / "home"
    settings = Settings(home=home, bootstrap_servers=tansu.bootstrap, topic_prefix=f"x{uuid.uuid4().hex[:10]}.",
                        evidence_jobs=(), novelty=False, xgen_config_path=small_config(tmp_path / "xgen.yaml"))
    pair = keypair("xgen-uploader")
    key = pair.save(tmp_path / "uploader.json")
    source = write_keypoints(tmp_path / "pickup.npz", cargo_pickup(duration_s=3.0, fps=30.0).motion)
    bad = tmp_path / "bad.npz"
    np.savez(bad, keypoints=np.zeros((5, 12, 3)), fps=np.float64(30.0))  # 12 landmarks, not 33

    with Stack(settings, workers=0, log=lambda m: None, reconcile_every_s=None) as stack:
        monkeypatch.setenv("KIBOTOS_HOME", str(home))
        monkeypatch.setenv("KIBOTOS_TOPIC_PREFIX", settings.topic_prefix)
        out = runner.invoke(app, ["xgen", "submit", str(bad), "--keypoints", "-k", str(key)], catch_exceptions=False)
        assert out.exit_code == 0, out.output  # accepted by the ingest API; the pose job will refuse it
        bad_id = out.stdout.strip().splitlines()[-1]

        out = runner.invoke(app, ["xgen", "submit", str(source), "--keypoints", "-k", str(key), "--wait",
                                  "--timeout", "300"], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        done = json.loads(out.stdout[out.stdout.index("{"):])
        rid = done["request_id"]
        assert (done["state"], done["clip_count"], done["clips_exported"]) == ("done", 2, 2)
        assert [s["stage"] for s in done["stages"]] == ["pose", "retarget", "interaction", "augment"]
        assert all(s["passed"] for s in done["stages"]) and done["uploader"] == pair.miner_id

        # the status command reads the same rows; every clip carries the verifier's judgement
        status = json.loads(runner.invoke(app, ["xgen", "status", rid], catch_exceptions=False).stdout)
        assert status["clips_exported"] == 2 and {c["variant_kind"] for c in status["clips"]} == {"base", "mirror"}
        assert status["clips_verified"] == 2  # the keypoints path's clips pass the verifier's chain
        for clip in status["clips"]:
            assert clip["verified"] and clip["quality_verdict"] == "accepted" and clip["quality_score"] > 0
            assert clip["quality_reason_code"] is None
            meta = json.loads(stack.store.read_bytes(_metadata_uri(stack, clip["clip_id"]), 1 << 22))
            assert meta["uploader"] == pair.miner_id and meta["config_version"].endswith("-test-2clips")
            assert meta["quality"]["verified"] == clip["verified"]
            arrays = np.load(io.BytesIO(stack.store.read_bytes(clip["clip_uri"], 1 << 26)))
            assert arrays["robot_qpos"].shape[1] == 36 and len(arrays["phase"]) == meta["frames"]
        out = runner.invoke(app, ["xgen", "status", bad_id], catch_exceptions=False)
        refused = json.loads(out.stdout)
        assert (refused["state"], refused["failed_stage"], refused["reason_code"]) == (
            "rejected", "pose", "xgen_keypoints_invalid")
        rows = stack.client.query("SELECT stage, count() FROM kibotos.xgen_stage_results FINAL "
                                  "WHERE request_id = {r:String} GROUP BY stage ORDER BY stage",
                                  parameters={"r": rid}).result_rows
        assert dict(rows) == {"augment": 1, "export": 2, "interaction": 1, "pose": 1, "retarget": 1}


def _metadata_uri(stack, clip_id: str) -> str:
    [(uri,)] = stack.client.query("SELECT metadata_uri FROM kibotos.xgen_clips FINAL WHERE clip_id = {c:String}",
                                  parameters={"c": clip_id}).result_rows
    return uri
