"""With a broker (a running stack or a deployment), an evaluation's rows and the
attribution it pays travel as records (policy.evals, datasets.attributions,
ledger.entries) that the real ClickHouse sink stores; evaluated twice, the rows are
replaced and the miners paid once. The policy document then reads them back."""

from __future__ import annotations

import time

import pytest

from kibotos.config.settings import Settings
from kibotos.datasets.builder import DatasetBuilder
from kibotos.datasets.spec import parse_spec
from kibotos.datasets.store import DatasetStore
from kibotos.xmimic.config import PassRule
from kibotos.xmimic.evals import record_eval
from kibotos.xmimic.evaluate import ClipResult, EvalReport, SetResult
from kibotos.xmimic.policy_reads import warehouse_policy
from streams.sink import ClickHouseSink
from tests.kibotos.datasets.helpers import T0, verdict

pytestmark = pytest.mark.integration
PID = "mocap-runS-it4"


def clip(name: str, ok: bool, err: float = 0.02) -> ClipResult:
    return ClipResult(clip=name, success=ok, final_height_error_m=0.01 if ok else 0.3, final_xy_error_m=0.01,
                      mean_hand_box_error_m=err)


def report() -> EvalReport:
    train = [clip("c0", True), clip("c1", True), clip("c2", True), clip("c3", False)]
    held = [clip("c0-size0.7", True), clip("c0-yaw20", False)]
    return EvalReport(policy=PID, config_version="xmimic-test", sr=SetResult(0.75, train), gsr=SetResult(0.5, held),
                      baselines={"reference_pd": {"sr": 0.5, "gsr": 0.0}},
                      baseline_clips={"reference_pd": {"sr": [clip(c.clip, i < 2) for i, c in enumerate(train)],
                                                       "gsr": [clip(c.clip, False) for c in held]}})


def scalar(client, sql):
    return client.query(sql).result_rows[0][0]


def test_eval_rows_and_attribution_through_the_sink(tansu, catalogue, chdb_client, tmp_path):
    settings = Settings(home=tmp_path / "home", bootstrap_servers=tansu.bootstrap, topic_prefix=catalogue.prefix)
    store = DatasetStore(settings.home / "datasets")
    store.create(parse_spec({"name": "g1-cargo"}))
    b = DatasetBuilder(store, "g1-cargo")
    for n, (miner, s) in enumerate([("alice", 0.9), ("bob", 0.5), ("alice", 0.6)], 1):
        b.offer("verdicts", verdict(n, miner, "unitree_g1", s, f"file:///b/{n}.zarr.zip"))
    b.publish(now_ms=T0)
    rule = PassRule(min_sr=0.7, min_gsr=0.5, min_sr_over_reference=0.2)
    outs = [record_eval(settings, report(), policy_id=PID, dataset="g1-cargo@v1", rule=rule,
                        trained_on=["g1-cargo@v1"], now_ms=T0 + k) for k in range(2)]
    assert [o["via"] for o in outs] == ["topic", "topic"] and outs[0]["passed"], outs[0]
    assert outs[0]["attribution"]["via"] == "topic" and outs[0]["eval_id"] == outs[1]["eval_id"]
    sink = ClickHouseSink(chdb_client, catalogue, tansu.bootstrap, f"{catalogue.prefix}sink", flush_interval_s=0.2)
    try:
        deadline = time.monotonic() + 40
        # 2 x 6 eval rows and 2 x 2 ledger entries, each delivered as records
        while sink.rows_written["policy_evals"] < 12 or sink.rows_written["points_ledger"] < 4:
            assert time.monotonic() < deadline, dict(sink.rows_written)
            sink.poll_once()
    finally:
        sink.close()
    assert scalar(chdb_client, "SELECT count() FROM kibotos.policy_evals FINAL") == 6
    paid = chdb_client.query("SELECT miner_id, points FROM kibotos.points_ledger FINAL WHERE kind = 'attribution' "
                             "ORDER BY miner_id").result_rows
    assert [m for m, _ in paid] == ["alice", "bob"]
    assert sum(p for _, p in paid) == pytest.approx(store.cfg.attribution.policy_pass_pool)
    assert dict(paid)["alice"] == pytest.approx(store.cfg.attribution.policy_pass_pool * 1.5 / 2.0)
    doc = warehouse_policy(chdb_client, PID)
    assert (doc["sr"], doc["gsr"], doc["eval"]["reference_sr"], doc["eval"]["reference_gsr"]) == (0.75, 0.5, 0.5, 0.0)
    assert [r["clip_id"] for r in doc["eval"]["rows"]] == ["c0", "c1", "c2", "c3", "c0-size0.7", "c0-yaw20"]


def test_a_policy_below_the_reference_fails_the_rule(tmp_path):
    from kibotos.xmimic.evals import judge, summarize

    rows = [{"eval_id": "e", "split": "train", "success_rate": 1.0, "baseline_success_rate": 1.0},
            {"eval_id": "e", "split": "heldout", "success_rate": 1.0, "baseline_success_rate": float("nan")}]
    s = summarize(rows)
    assert (s.sr, s.gsr, s.reference_sr, s.reference_gsr) == (1.0, 1.0, 1.0, None)  # NaN: no baseline for the clip
    assert judge(s, PassRule(min_sr=0.5, min_gsr=0.5, min_sr_over_reference=0.1)).reasons == ["sr_not_above_reference"]
    assert judge(s, PassRule(min_sr=0.5, min_gsr=0.5, min_sr_over_reference=0.0)).passed
