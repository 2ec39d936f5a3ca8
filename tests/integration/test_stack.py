"""The embedded stack as a user runs it: ``Stack`` started in this process (Tansu, topics,
chdb, sink, read API, one gate worker process), bundles submitted, results read back
through ``kibotos.reports.reads`` and the ``kibotos`` CLI in another process; then stopped, and
the warehouse still answers from disk.

The stack opens its chdb directory in this process, so this module holds no other chdb
client while it runs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from kibotos.config.settings import Settings
from kibotos.datasets.requests import request_publish
from kibotos.datasets.store import DatasetStore
from kibotos.reports import reads
from kibotos.robots import get_robot, list_robots
from kibotos.runtime.stack import Stack, running_stack, state_file
from kibotos.runtime.submit import submit_paths
from kibotos.synthetic.samples import make_episode
from streams.stages import ledger_entry_id

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MINER = "miner-stack"


def kibotos_exe() -> str:
    exe = Path(sys.executable).parent / "kibotos"
    return str(exe if exe.exists() else REPO_ROOT / ".venv" / "bin" / "kibotos")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIBOTOS_")}
    env.update(extra)
    return env


def port_open(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text exposition -> {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def worker_logs(home: Path) -> str:
    return "\n".join(f"--- {p.name}:\n{p.read_text('utf-8', 'replace')[-3000:]}"
                     for p in sorted(home.glob("worker-*.log")))


@pytest.fixture(scope="module")
def bundle_paths(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stack-bundles")
    robot = get_robot("ur5", dict(list_robots())["ur5"])
    return {variant: make_episode(robot, variant, seed=3, miner_id=MINER, duration_ms=4000)
            .write(root / f"{variant}.zarr.zip") for variant in ("genuine", "nan")}


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    for name in [k for k in os.environ if k.startswith("KIBOTOS_")]:
        monkeypatch.delenv(name)  # a developer's or CI's stack must not leak in
    # the cheap chain only: the evidence jobs through the stack are tested in test_demo.py
    return Settings(home=tmp_path / "home", topic_prefix=f"t{uuid.uuid4().hex[:12]}.", evidence_jobs=(), xgen_jobs=(), training_jobs=(),
                    log_level="INFO")


def test_stack_serves_reports_ledger_and_verdicts_and_persists_after_stop(settings, bundle_paths):
    stack = Stack(settings, workers=1, log=lambda message: None, ephemeral=True)  # durability: test_faults.py
    stack.start()
    try:
        bootstrap = stack.bootstrap
        assert port_open(bootstrap) and state_file(settings).is_file()
        # a dataset created while the stack runs is built by the stack's builder process:
        # nothing accepted yet, so `create` publishes nothing ...
        spec = settings.home / "stack-ds.yaml"
        spec.write_text("name: stack-ds\nmin_score: 0.0\n")
        env = clean_env(KIBOTOS_HOME=str(settings.home), KIBOTOS_TOPIC_PREFIX=settings.topic_prefix)
        out = subprocess.run([kibotos_exe(), "datasets", "create", "--spec", str(spec)], env=env, capture_output=True,
                             text=True, timeout=180)
        assert out.returncode == 0 and "created: stack-ds" in out.stdout and "published" not in out.stdout, out
        genuine, nan = submit_paths([bundle_paths["genuine"], bundle_paths["nan"]], bootstrap=stack.bootstrap,
                                    store=stack.store, catalogue=stack.catalogue)
        sids = {genuine.submission_id: ("accepted", None), nan.submission_id: ("rejected", "non_finite_values")}

        # through the running stack's read API (found via <home>/stack.json)
        deadline = time.monotonic() + 120
        while True:
            stack.check_workers()
            reports = {sid: reads.get_report(settings, sid) for sid in sids}
            balances = reads.balances(settings)
            if all(reports.values()) and balances:
                break
            assert time.monotonic() < deadline, f"no reports after 120s: {reports}\n{worker_logs(settings.home)}"
            time.sleep(0.3)
        assert {sid: (r["verdict"], r["reason_code"]) for sid, r in reports.items()} == sids
        # paid the scored reward of its report (novelty ran in the stack: S_novel scored)
        reward = reports[genuine.submission_id]["scores"]["reward"]
        novel = {c["name"]: c for c in reports[genuine.submission_id]["scores"]["components"]}["novel"]
        assert novel["value"] is not None and reward == reports[genuine.submission_id]["points"] > 0
        assert balances == [{"miner_id": MINER, "points": pytest.approx(reward), "entries": 1}]
        # ... and the accepted verdict is appended by the running builder (asked to publish now
        # rather than after its cadence); a SIGKILLed builder is restarted and resumes
        datasets = DatasetStore(settings.home / "datasets")
        answer = request_publish(datasets, "stack-ds", timeout_s=120)
        assert (answer["published"], answer["outcomes"]) == (1, {"added": 1, "not_an_episode": 1}), answer
        assert [e.submission_id for e in datasets.episodes("stack-ds", 1)] == [genuine.submission_id]
        [builder] = [slot for slot in stack.slots if slot.kind == "datasets"]
        builder.handle.kill()
        builder.handle.wait(10)
        deadline = time.monotonic() + 30
        while "dataset-builder" not in stack.supervise():
            assert time.monotonic() < deadline, "the dataset builder was not restarted"
            time.sleep(0.2)
        answer = request_publish(datasets, "stack-ds", timeout_s=120)  # resumes from its committed offsets
        assert (answer["version"], answer["published"]) == (1, None), answer
        # the version's attribution reaches the ledger through the sink: the miner's balance
        # is its reward plus the attribution points (paid once, whatever was re-sent)
        [attribution] = datasets.attribution("stack-ds", 1)
        paid = reward + attribution["points"]
        deadline = time.monotonic() + 60
        while reads.balances(settings) != [{"miner_id": MINER, "points": pytest.approx(paid), "entries": 2}]:
            assert time.monotonic() < deadline, reads.balances(settings)
            time.sleep(0.3)

        # Prometheus: the worker processes' metrics, summed on the stack's read API
        metrics = metric_samples(urllib.request.urlopen(f"{stack.query.url}/metrics", timeout=10).read().decode())
        assert metrics[("kibotos_records_in_total", (("processor", "gate_a_integrity"),
                                                     ("topic", "submissions.received")))] == 2
        assert metrics[("kibotos_rejections_total", (("processor", "gate_a_integrity"),
                                                     ("reason_code", "non_finite_values")))] == 1
        assert metrics[("kibotos_records_out_total", (("processor", "decision"), ("topic", "ledger.entries")))] == 1
        assert metrics[("kibotos_processing_seconds_count", (("processor", "gate_c_sync"),))] == 1
        assert metrics[("kibotos_dataset_records_total", (("dataset", "stack-ds"), ("outcome", "added")))] == 1
        assert metrics[("kibotos_dataset_versions_published_total", (("dataset", "stack-ds"),))] == 1
        assert metrics[("kibotos_process_restarts_total", (("kind", "datasets"),))] >= 1
        # structured logs: JSON lines, each about one submission
        handled = [json.loads(line) for p in settings.home.glob("worker-*.log")
                   for line in p.read_text().splitlines() if line.startswith("{") and '"handled"' in line]
        assert {h["submission_id"] for h in handled} == set(sids)
        assert all(h["processor"] and h["ms"] >= 0 for h in handled)

        # the CLI in another process, against the running stack
        env = clean_env(KIBOTOS_HOME=str(settings.home), KIBOTOS_TOPIC_PREFIX=settings.topic_prefix)
        cli = [kibotos_exe()]
        # `verdicts` without --follow waits for 10 s of silence: run it alongside the others
        verdicts_proc = subprocess.Popen([*cli, "verdicts", "--json"], env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
        try:
            for sid, (verdict, reason) in sids.items():
                out = subprocess.run([*cli, "report", sid, "--json"], env=env, capture_output=True, text=True,
                                     timeout=60)
                assert out.returncode == 0, out.stderr
                report = json.loads(out.stdout)
                assert (report["submission_id"], report["verdict"], report["reason_code"]) == (sid, verdict, reason)
                assert report["bundle_uri"] and report["decided_at"]

            out = subprocess.run([*cli, "ledger", "--json"], env=env, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout) == [{"miner_id": MINER, "points": pytest.approx(paid), "entries": 2}]
            out = subprocess.run([*cli, "ledger", "--miner", MINER, "--json"], env=env, capture_output=True,
                                 text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            entries = {e["kind"]: e for e in json.loads(out.stdout)}
            assert entries["reward"]["entry_id"] == ledger_entry_id(genuine.submission_id, "reward")
            assert entries["attribution"]["entry_id"] == attribution["entry_id"]

            out = subprocess.run([*cli, "report", str(uuid.uuid4()), "--json"], env=env, capture_output=True,
                                 text=True, timeout=60)
            assert out.returncode == 1 and not out.stdout.strip()

            stdout, stderr = verdicts_proc.communicate(timeout=90)
        finally:
            if verdicts_proc.poll() is None:
                verdicts_proc.kill()
                verdicts_proc.wait()
        assert verdicts_proc.returncode == 0, stderr
        lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
        assert {v["submission_id"]: (v["verdict"], v["reason_code"]) for v in lines} == sids
        assert len(lines) == 2 and all("report_json" not in v for v in lines)
    except BaseException:
        print(worker_logs(settings.home))
        raise
    finally:
        stack.stop()

    # stopped: the broker is gone, and so is the state file other shells look for
    assert not port_open(bootstrap)
    assert not state_file(settings).exists()
    assert running_stack(settings) is None

    # the warehouse persists: read straight from the chdb directory, here and in a new process
    for sid, (verdict, reason) in sids.items():
        report = reads.get_report(settings, sid)
        assert (report["verdict"], report["reason_code"]) == (verdict, reason)
    assert reads.balances(settings) == [{"miner_id": MINER, "points": pytest.approx(paid), "entries": 2}]
    out = subprocess.run([kibotos_exe(), "report", genuine.submission_id, "--json"], capture_output=True, text=True,
                         env=clean_env(KIBOTOS_HOME=str(settings.home), KIBOTOS_TOPIC_PREFIX=settings.topic_prefix),
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["verdict"] == "accepted"
