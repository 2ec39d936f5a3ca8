"""``kibotos eval --via-stack``: the embedded stack's ``eval`` job (a Ray actor of the GPU
consumer group) evaluates a registered policy on an XGen request's clips from the object
store, its policy.evals records reach the warehouse through the sink, and the CLI, which
waited for them on the read API, prints the evaluation; the policy page shows it and the
rollout preview the job stored beside the policy in the object store, which the read API
serves."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest
from typer.testing import CliRunner

from kibotos.cli.main import app
from kibotos.config.settings import Settings
from kibotos.media.video import probe_video
from kibotos.runtime.stack import Stack
from kibotos.xmimic.clipgen import make_clip_set
from kibotos.xmimic.clips import load_clips
from kibotos.xmimic.config import load_xmimic_config
from kibotos.xmimic.registry import register
from kibotos.xmimic.train import train

pytestmark = pytest.mark.integration


def test_eval_job_through_the_stack(tansu, tmp_path, monkeypatch):
    home = tmp_path / "home"
    settings = Settings(home=home, bootstrap_servers=tansu.bootstrap, topic_prefix=f"ev{uuid.uuid4().hex[:10]}.",
                        evidence_jobs=(), xgen_jobs=(), training_jobs=("eval",), novelty=False)
    clips_dir = make_clip_set(tmp_path / "xgen", duration_s=3.0)
    folders = [f for f in sorted(clips_dir.iterdir()) if f.name.endswith("base")]
    cfg = load_xmimic_config().with_overrides(teacher={"num_steps_per_env": 8})
    base = [c for c in load_clips(clips_dir) if c.clip_id.endswith("base")]
    r = train(base, cfg, tmp_path / "runV", num_envs=2, iterations=1, run_id="runV")
    pid = register(home, r.checkpoint)
    rid = str(uuid.uuid4())
    with Stack(settings, workers=0, log=lambda m: None, reconcile_every_s=None) as stack:
        for folder in folders:
            for name in ("clip.npz", "metadata.json"):
                stack.store.put_file(folder / name, f"xgen/{rid}/clips/{folder.name}/{name}")
        monkeypatch.setenv("KIBOTOS_HOME", str(home))
        monkeypatch.setenv("KIBOTOS_TOPIC_PREFIX", settings.topic_prefix)
        out = CliRunner().invoke(app, ["eval", pid, "--dataset", rid, "--via-stack", "--no-heldout", "--preview",
                                       "--timeout", "400"], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        rec = json.loads(out.stdout)["recorded"]
        assert json.loads(out.stdout)["preview"]["uri"] == stack.store.uri_for(f"xmimic/policies/{pid}/preview.mp4")
        assert rec["via"] == "stack" and rec["clips"] == {"train": len(folders), "heldout": 0}
        assert rec["sr"] is not None and not rec["passed"] and "gsr_not_measured" in rec["reasons"]
        with urllib.request.urlopen(f"{stack.query.url}/policies/{pid}.html", timeout=30) as resp:
            page = resp.read().decode()
        assert rec["eval_id"][:8] in page and page.count("<tr class='clip") == len(folders)
        assert f"src='/policies/{pid}/preview.mp4'" in page
        assert not (home / "policies" / pid / "preview.mp4").exists()  # the job's preview is in the store only
        with urllib.request.urlopen(f"{stack.query.url}/policies/{pid}/preview.mp4", timeout=30) as resp:
            assert resp.headers["Content-Type"] == "video/mp4"
            probe = probe_video(resp.read())
        assert (probe.width, probe.height) == (320, 240) and probe.frames >= 10
