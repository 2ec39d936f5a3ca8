"""The datasets CLI (create, list, show, export, attribution for datasets and policies)
and the dataset page, checked as text and as a headless Chromium draws it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from kibotos.datasets.builder import DatasetBuilder
from kibotos.datasets.cli import attribution_cmd, datasets_app
from kibotos.datasets.html import BAR_COLOUR, HEADER_COLOUR, render_version_page
from kibotos.datasets.policy import record_policy_evaluation
from kibotos.datasets.store import DatasetStore
from kibotos.objectstore import LocalObjectStore
from tests.fixtures.browser import needs_chromium, rgb, screenshot
from tests.kibotos.datasets.helpers import T0, copy_bundle, sid, verdict

# the commands as `kibotos` mounts them (kibotos/cli/main.py: datasets group, attribution command)
app = typer.Typer()
app.add_typer(datasets_app, name="datasets")
app.command("attribution")(attribution_cmd)
# S per episode: bins [0.5,0.6) x1, [0.7,0.8) x3, [0.9,1.0] x2
SCORES = [("alice", 0.55), ("alice", 0.72), ("bob", 0.75), ("bob", 0.78), ("carol", 0.91), ("alice", 0.95)]


@pytest.fixture
def home(tmp_path, monkeypatch, sample_bundles):
    monkeypatch.setenv("KIBOTOS_HOME", str(tmp_path / "home"))
    objects = LocalObjectStore(tmp_path / "home" / "objects")
    store = DatasetStore(tmp_path / "home" / "datasets")
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: ur5-pick\ndescription: UR5 pick-and-place, S >= 0.5\nrobots: [ur5]\nmin_score: 0.5\n")
    events = [verdict(n, m, "ur5", s, copy_bundle(objects, sample_bundles["ur5"], n)) for n, (m, s) in enumerate(SCORES, 1)]
    return store, spec, events


def run(*args):
    res = CliRunner().invoke(app, list(args))
    return res


def test_create_list_show_export_and_attribution(home, tmp_path):
    store, spec, events = home
    res = run("datasets", "create", "--spec", str(spec), "--no-build")
    assert res.exit_code == 0 and "created: ur5-pick" in res.output
    assert "exists (same spec)" in run("datasets", "create", "--spec", str(spec), "--no-build").output
    b = DatasetBuilder(store, "ur5-pick")
    for e in events:
        assert b.offer("verdicts", e) == "added"
    b.publish(now_ms=T0)
    rows = json.loads(run("datasets", "list", "--json").output)
    assert [(r["dataset"], r["latest_version"], r["episodes"]) for r in rows] == [("ur5-pick", 1, 6)]
    shown = json.loads(run("datasets", "show", "ur5-pick@v1", "--json").output)
    assert shown["hash_ok"] and shown["card"]["score"]["histogram"]["counts"] == [0, 0, 0, 0, 0, 1, 0, 3, 0, 2]
    out = run("datasets", "export", "ur5-pick", "--out", str(tmp_path / "exports"))
    assert out.exit_code == 0 and "exported ur5-pick@v1" in out.output and "6/6 episodes" in out.output
    assert "reused" in run("datasets", "export", "ur5-pick", "--out", str(tmp_path / "exports")).output
    att = json.loads(run("attribution", "ur5-pick", "--json").output)
    by = {r["miner_id"]: r for r in att["miners"]}
    assert by["alice"]["episodes"] == 3 and by["alice"]["share"] == pytest.approx((0.55 + 0.72 + 0.95) / 4.66, abs=1e-6)
    assert sum(r["share"] for r in att["miners"]) == pytest.approx(1.0)
    # a policy trained on v1 passes evaluation: the pool is shared the same way, once
    rec = record_policy_evaluation(store, "cargo-ppo-7", ["ur5-pick@v1"], True, metrics={"SR": 0.8}, now_ms=T0)
    again = record_policy_evaluation(store, "cargo-ppo-7", ["ur5-pick@v1"], True, metrics={"SR": 0.8}, now_ms=T0 + 99)
    assert [e["entry_id"] for e in again["attribution"]] == [e["entry_id"] for e in rec["attribution"]]
    assert again["attribution"] == rec["attribution"]
    assert sum(e["points"] for e in rec["attribution"]) == pytest.approx(store.cfg.attribution.policy_pass_pool)
    pol = json.loads(run("attribution", "policy:cargo-ppo-7", "--json").output)
    assert {r["miner_id"]: r["attribution_points"] for r in pol["miners"]} == {
        e["miner_id"]: e["points"] for e in rec["attribution"]}
    assert record_policy_evaluation(store, "failed-1", ["ur5-pick@v1"], False)["attribution"] == []
    # bad references get a reason code, not a traceback
    bad = run("datasets", "show", "ur5-pick@v7")
    assert bad.exit_code == 2 and "dataset_version_not_found" in bad.output
    assert "dataset_not_found" in run("attribution", "nope").output


def test_show_fails_when_the_version_was_tampered(home):
    store, spec, events = home
    run("datasets", "create", "--spec", str(spec), "--no-build")
    b = DatasetBuilder(store, "ur5-pick")
    b.offer("verdicts", events[0])
    b.publish(now_ms=T0)
    path = store.version_dir("ur5-pick", 1) / "episodes.jsonl"
    path.chmod(0o644)
    path.write_text(path.read_text().replace('"reward":', '"reward":1'))
    res = run("datasets", "show", "ur5-pick")
    assert res.exit_code == 1 and "NOT MATCHING" in res.output


def published_page(home, tmp_path) -> Path:
    store, spec, events = home
    run("datasets", "create", "--spec", str(spec), "--no-build")
    b = DatasetBuilder(store, "ur5-pick")
    for e in events:
        b.offer("verdicts", e)
    b.publish(now_ms=T0)
    page = tmp_path / "page.html"
    res = run("datasets", "show", "ur5-pick", "--html", str(page))
    assert res.exit_code == 0
    return page


def test_page_content(home, tmp_path):
    html = published_page(home, tmp_path).read_text()
    assert html.count("<tr class='episode'>") == 6 and f"/reports/{sid(1)}.html" in html
    assert "card.md" in html and "episodes.jsonl" in html and "<svg" in html
    assert [int(x) for x in __import__("re").findall(r"data-count='(\d+)'", html)] == [0, 0, 0, 0, 0, 1, 0, 3, 0, 2]
    store = home[0]
    evil = render_version_page(store, "ur5-pick", 1, report_href=lambda s: "javascript:alert(1)'><script>x</script>")
    assert "<script>x" not in evil



@needs_chromium
def test_browser_draws_header_and_the_s_distribution(home, tmp_path):
    image = screenshot(published_page(home, tmp_path).as_uri(), tmp_path / "page.png", height=1800)
    header = image[5:60].reshape(-1, 3)
    assert (np.abs(header - rgb(HEADER_COLOUR)).max(1) <= 3).mean() > 0.8
    bars = np.abs(image.astype(int) - rgb(BAR_COLOUR)).max(2) <= 6
    cols = np.flatnonzero(bars.sum(0) > 0)
    assert len(cols), "no histogram bars drawn"
    runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)  # one run of columns per drawn bar
    heights = [int(bars[:, r].sum(0).max()) for r in runs]
    assert len(heights) == 3, heights  # three non-empty bins
    # bar heights in proportion to the counts 1 : 3 : 2
    assert heights[1] > heights[2] > heights[0]
    assert heights[1] / heights[0] == pytest.approx(3, rel=0.1) and heights[2] / heights[0] == pytest.approx(2, rel=0.1)
