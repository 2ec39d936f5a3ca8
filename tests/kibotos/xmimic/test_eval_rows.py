"""``kibotos eval`` writes per-clip SR/GSR rows into the warehouse it owns (no stack
running), a rerun replaces them, and a passing policy pays the miners of the dataset
versions it trained on exactly once (evaluated twice: same entry ids, one payment)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from kibotos.cli.main import app
from kibotos.datasets.builder import DatasetBuilder
from kibotos.datasets.spec import parse_spec
from kibotos.datasets.store import DatasetStore
from kibotos.warehouse import open_client
from kibotos.xmimic.evals import Summary, eval_id, judge
from kibotos.xmimic.registry import register
from kibotos.xmimic.train import train
from tests.kibotos.datasets.helpers import T0, verdict

MINERS = [("alice", 0.9), ("bob", 0.6), ("alice", 0.7), ("carol", 0.8)]


def _small_eval_cfg(small_cfg, **pass_rule):
    """Three held-out variants of one clip (instead of 8 per clip) keep the test short."""
    return small_cfg.with_overrides(eval={**small_cfg.eval.model_dump(),
                                          "heldout": {"max_source_clips": 1, "size_scales": [0.7],
                                                      "offsets_m": [[0.06, 0.0]], "yaw_deg": [20.0]},
                                          "pass_rule": {**small_cfg.eval.pass_rule.model_dump(), **pass_rule}})


def _rows(home, sql):
    client = open_client(f"chdb://{(home / 'chdb').resolve()}")
    try:
        return client.query(sql).result_rows
    finally:
        client.close()


def test_judge_names_every_missed_bound(xcfg):
    rule = xcfg.eval.pass_rule
    ok = Summary("e", sr=rule.min_sr, gsr=rule.min_gsr, reference_sr=rule.min_sr, reference_gsr=None)
    assert judge(ok, rule).passed
    bad = Summary("e", sr=rule.min_sr - 0.01, gsr=rule.min_gsr - 0.01, reference_sr=1.0, reference_gsr=None)
    assert judge(bad, rule).reasons == ["sr_below_minimum", "gsr_below_minimum", "sr_not_above_reference"]
    assert judge(Summary("e", sr=1.0, gsr=None, reference_sr=0.5, reference_gsr=None), rule).reasons == [
        "gsr_not_measured"]
    # the id names policy, dataset, config version and seed: any of them changes it
    ids = {eval_id("p", "d", "c", 0), eval_id("q", "d", "c", 0), eval_id("p", "e", "c", 0),
           eval_id("p", "d", "x", 0), eval_id("p", "d", "c", 1)}
    assert len(ids) == 5 and eval_id("p", "d", "c", 0) == eval_id("p", "d", "c", 0)


@pytest.fixture
def trained(clips, small_cfg, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("KIBOTOS_HOME", str(home))
    monkeypatch.delenv("KIBOTOS_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("KIBOTOS_CLICKHOUSE_DSN", raising=False)
    store = DatasetStore(home / "datasets")
    store.create(parse_spec({"name": "g1-cargo"}))
    b = DatasetBuilder(store, "g1-cargo")
    for n, (miner, s) in enumerate(MINERS, 1):
        assert b.offer("verdicts", verdict(n, miner, "unitree_g1", s, f"file:///bundles/{n}.zarr.zip")) == "added"
    b.publish(now_ms=T0)
    r = train(clips[:2], small_cfg, tmp_path / "runE", num_envs=2, iterations=1, run_id="runE")
    pid = register(home, r.checkpoint, extra={"dataset_versions": ["g1-cargo@v1"]})
    return home, pid


def test_eval_rows_replace_on_rerun_and_a_pass_pays_once(trained, clips_dir, small_cfg, tmp_path):
    home, pid = trained
    cfg_file = tmp_path / "lenient.yaml"
    cfg = _small_eval_cfg(small_cfg, min_sr=0.0, min_gsr=0.0, min_sr_over_reference=-1.0)
    cfg_file.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    # two training clips: their folders only
    two = tmp_path / "two"
    two.mkdir()
    for name in sorted(p.name for p in clips_dir.iterdir() if p.is_dir())[:2]:
        (two / name).symlink_to(clips_dir / name)
    cli = CliRunner()
    outs, previews = [], []
    for k in range(2):
        res = cli.invoke(app, ["eval", pid, "--clips", str(two), "--config", str(cfg_file), *(["--preview"] if k else [])])
        assert res.exit_code == 0, res.output
        outs.append(json.loads(res.stdout)["recorded"])
        previews.append(json.loads(res.stdout).get("preview"))
    first, second = outs
    assert first["via"] == "warehouse" and first["passed"] and first["rows"] == 2 + 3
    assert second["eval_id"] == first["eval_id"]
    assert first["attribution"]["status"] == "paid" and first["attribution"]["trained_on"] == ["g1-cargo@v1"]
    assert [e["entry_id"] for e in second["attribution"]["entries"]] == [
        e["entry_id"] for e in first["attribution"]["entries"]]
    rows = _rows(home, "SELECT split, count(), uniqExact(eval_id), sum(success_rate), sum(baseline_success_rate) "
                       f"FROM kibotos.policy_evals FINAL WHERE policy_id = '{pid}' GROUP BY split ORDER BY split")
    assert [(r[0], r[1], r[2]) for r in rows] == [("heldout", 3, 1), ("train", 2, 1)]  # rerun replaced, no duplicates
    assert {r[0]: r[4] for r in rows}["train"] >= 1  # the reference replayed by PD lifts at least one box
    paid = _rows(home, "SELECT miner_id, sum(points), count() FROM kibotos.points_ledger FINAL "
                       f"WHERE kind = 'attribution' AND submission_id = 'policy:{pid}' GROUP BY miner_id ORDER BY miner_id")
    assert [(m, n) for m, _, n in paid] == [("alice", 1), ("bob", 1), ("carol", 1)]
    total_s = sum(s for _, s in MINERS)
    assert {m: round(p, 3) for m, p, _ in paid} == {
        "alice": round(100 * 1.6 / total_s, 3), "bob": round(100 * 0.6 / total_s, 3), "carol": round(100 * 0.8 / total_s, 3)}
    att = json.loads(cli.invoke(app, ["attribution", f"policy:{pid}", "--json"]).stdout)
    assert {r["miner_id"]: round(r["attribution_points"], 3) for r in att["miners"]} == {m: round(p, 3) for m, p, _ in paid}
    assert json.loads(cli.invoke(app, ["attribution", pid, "--json"]).stdout) == att  # the bare policy id too
    # the read side: the warehouse's rows, filled in by the registry (role, dataset versions, curves)
    listed = {r["policy_id"]: r for r in json.loads(cli.invoke(app, ["policies", "list"]).stdout)}
    assert listed[pid]["dataset_versions"] == ["g1-cargo@v1"] and listed[pid]["role"] == "teacher"
    assert listed[pid]["sr"] == first["sr"] and listed[pid]["eval_id"] == first["eval_id"]
    page = tmp_path / "policy.html"
    assert cli.invoke(app, ["policies", "show", pid, "--html", str(page)]).exit_code == 0
    html = page.read_text()
    assert html.count("<tr class='clip") == 5 and "data-points='1'" in html  # one iteration: runE/progress.jsonl
    assert "data:video/mp4;base64," in html and (home / "policies" / pid / "preview.mp4").is_file()  # --preview
    # ... stored next to the policy in the object store (the read API serves it from there)
    stored = home / "objects" / "xmimic" / "policies" / pid / "preview.mp4"
    assert previews[0] is None and previews[1]["uri"] == stored.resolve().as_uri()
    assert stored.read_bytes() == (home / "policies" / pid / "preview.mp4").read_bytes()


def test_an_eval_that_fails_the_rule_pays_nothing(trained, clips_dir, small_cfg, tmp_path):
    home, pid = trained
    two = tmp_path / "one"
    two.mkdir()
    name = sorted(p.name for p in clips_dir.iterdir() if p.is_dir())[0]
    (two / name).symlink_to(clips_dir / name)
    res = CliRunner().invoke(app, ["eval", pid, "--clips", str(two), "--no-heldout"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)["recorded"]
    assert not rec["passed"] and "gsr_not_measured" in rec["reasons"]
    assert rec["attribution"]["status"] == "nothing_owed"
    assert _rows(home, "SELECT count() FROM kibotos.points_ledger FINAL WHERE kind = 'attribution'")[0][0] == 0
    assert _rows(home, "SELECT count() FROM kibotos.policy_evals FINAL")[0][0] == 1
