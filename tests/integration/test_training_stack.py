"""XMimic training through the embedded stack: ``kibotos train --via-stack`` puts a request on
``training.requests``; the GPU consumer's ``train`` actor trains on an XGen request's clips
from the object store and publishes ``training.progress``, which the CLI follows. The actor
is SIGKILLed mid-training (after its second checkpoint): the consumer retries the job on a
fresh actor, which takes the run over once the dead actor's lease goes stale and resumes
from the last checkpoint in the object store (its first iteration is past 0), and the run finishes with its final checkpoint, policy and warehouse
rows. Asking for the finished run again answers at once with the same policy."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from typer.testing import CliRunner

from benchmarks.faults import kill_busy_ray_actor
from kibotos.cli.main import app
from kibotos.config.settings import Settings
from kibotos.runtime.stack import Stack
from kibotos.xmimic.clipgen import make_clip_set
from tests.fixtures.pipeline import read_topic
from tests.gpu_consumers.test_training_jobs import tiny_config_yaml

pytestmark = pytest.mark.integration
runner = CliRunner()
ITERATIONS = 16


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_training_through_the_stack_resumes_after_its_actor_is_killed(tansu, tmp_path, monkeypatch):
    home = tmp_path / "home"
    settings = Settings(home=home, bootstrap_servers=tansu.bootstrap, topic_prefix=f"tr{uuid.uuid4().hex[:10]}.",
                        evidence_jobs=(), xgen_jobs=(), novelty=False)
    folders = [f for f in sorted(make_clip_set(tmp_path / "xgen", duration_s=3.0).iterdir())
               if f.name.endswith(("base", "mirror"))]
    cfg = tmp_path / "xmimic.yaml"
    cfg.write_text(tiny_config_yaml())
    rid, run_id = str(uuid.uuid4()), f"it-{uuid.uuid4().hex[:8]}"

    with Stack(settings, workers=0, log=lambda m: None, reconcile_every_s=None) as stack:
        for folder in folders:
            for name in ("clip.npz", "metadata.json"):
                stack.store.put_file(folder / name, f"xgen/{rid}/clips/{folder.name}/{name}")
        monkeypatch.setenv("KIBOTOS_HOME", str(home))
        monkeypatch.setenv("KIBOTOS_TOPIC_PREFIX", settings.topic_prefix)
        argv = ["train", "--via-stack", "--dataset", rid, "--config", str(cfg), "--num-envs", "2",
                "--iterations", str(ITERATIONS), "--run-id", run_id, "--timeout", "300"]
        result = {}
        cli = threading.Thread(target=lambda: result.update(out=runner.invoke(app, argv, catch_exceptions=False)))
        cli.start()
        try:
            wait_for(lambda: stack.store.stat(f"xmimic/{run_id}/model_2.pt") is not None, 240, "the 2nd checkpoint")
            killed = kill_busy_ray_actor(stack.gpu_processes[0].pid, timeout_s=30)
        finally:
            cli.join(320)
        out = result["out"]
        assert out.exit_code == 0, out.output
        summary = json.loads(out.stdout[out.stdout.index("{"):])
        policy_id = f"teacher-{run_id}-it{ITERATIONS}"
        assert (summary["state"], summary["policy_id"], summary["iteration"]) == ("done", policy_id, ITERATIONS)
        assert summary["dataset_versions"] == [f"xgen:{rid}"] and summary["resumed_from"] >= 2
        assert stack.store.stat(f"xmimic/{run_id}/model_{ITERATIONS}.pt") is not None  # the final checkpoint
        assert stack.store.local_path(summary["checkpoint_uri"]).is_file()

        progress = [r for r in read_topic(tansu.bootstrap, stack.catalogue.get("training.progress"),
                                          until=lambda rs: any(r["state"] == "done" for r in rs))
                    if r["run_id"] == run_id]
        starts = [r for r in progress if r["state"] == "running" and r["iteration"] == r["resumed_from"]]
        assert [s["resumed_from"] for s in starts][0] == 0 and starts[-1]["resumed_from"] >= 2, starts
        resumed = progress[progress.index(starts[-1]) + 1]
        assert resumed["iteration"] == starts[-1]["resumed_from"] + 1 > 2  # the retry did not start over
        log = (home / "gpu-0.log").read_text("utf-8", "replace")
        assert killed and "failed (attempt 1/3)" in log  # the job died with its actor and ran again
        # each retry took the run over from the dead actor's lease (it went stale: never released):
        # one generation per attempt (a loaded machine's Ray may kill a retry too: out of memory)
        leases = sorted(i.key.rsplit("/", 1)[1] for i in stack.store.list(f"xmimic/{run_id}/lease/"))
        attempts = 1 + len([ln for ln in log.splitlines() if "job train" in ln and "failed (attempt" in ln])
        assert leases == [f"{g:010d}.json" for g in range(1, attempts + 1)] and attempts >= 2, (leases, attempts)

        # the sink's rows: the run done, every iteration once, the policy with its dataset version
        def rows(sql):
            return stack.client.query(sql).result_rows

        wait_for(lambda: rows(f"SELECT state FROM kibotos.training_runs FINAL WHERE run_id = '{run_id}'")
                 == [("done",)], 30, "the run's row")
        assert rows(f"SELECT count(), min(iteration), max(iteration) FROM kibotos.training_progress FINAL "
                    f"WHERE run_id = '{run_id}'") == [(ITERATIONS, 1, ITERATIONS)]
        assert rows(f"SELECT policy_id, dataset_versions, iterations FROM kibotos.policies FINAL "
                    f"WHERE run_id = '{run_id}'") == [(policy_id, [f"xgen:{rid}"], ITERATIONS)]

        # the same run again: answered from its final marker, not trained again
        t0 = time.monotonic()
        again = runner.invoke(app, argv, catch_exceptions=False)
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout[again.stdout.index("{"):])["policy_id"] == policy_id
        assert time.monotonic() - t0 < 60
