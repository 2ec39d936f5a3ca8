"""The novelty stage between the evidence jobs and the decision, in-process, on a real
embedded ClickHouse (chdb) index: what a duplicate-farming miner earns against an honest
one, and a ledger that pays each accepted submission its reward exactly once.

No evidence jobs run here (their own tests cover them): the soft components other than
S_novel are missing and scored neutral, so the rewards differ by S_novel alone.
"""

from __future__ import annotations

import json
import uuid

import pytest

from kibotos import perturb
from kibotos.gate_config import load_config
from kibotos.novelty import NoveltyChecker, load_novelty_config
from kibotos.objectstore import LocalObjectStore
from kibotos.robots import get_robot, list_robots
from kibotos.samples import Episode, make_episode
from kibotos.scoring import load_scoring_config, score_submission
from streams.stages import NoveltyStage, Record, build_stages, ledger_entry_id, run_in_process
from topics.catalogue import Catalogue

pytestmark = pytest.mark.integration

CONFIG = load_config()
SCORING = load_scoring_config()
ROBOT = "franka_panda"
HONEST, FARMER = "miner-honest", "miner-farmer"
NEUTRAL_REWARD = score_submission({}, SCORING, passed=True).reward  # S_novel missing too


@pytest.fixture
def pipeline(chdb_client, tmp_path):
    catalogue = Catalogue(prefix=f"t{uuid.uuid4().hex[:12]}.")
    store = LocalObjectStore(tmp_path / "objects")
    checker = NoveltyChecker(chdb_client, load_novelty_config())
    stages = build_stages(catalogue, store, CONFIG, SCORING, novelty=True)
    stages.insert(-1, NoveltyStage(catalogue, store, checker))
    clock = iter(range(1_900_000_000_000, 2_000_000_000_000, 60_000))

    def received(ep: Episode) -> dict:
        sid = ep.manifest["submission_id"]
        path = ep.write(tmp_path / "written" / f"{sid}.zarr.zip")
        stored = store.put_file(path, f"bundles/{sid}.zarr.zip")
        return {"submission_id": sid, "miner_id": ep.manifest["miner_id"], "bundle_uri": stored.uri,
                "bundle_sha256": stored.sha256, "bundle_size_bytes": stored.size_bytes,
                "received_at": next(clock), "robot_model_id": ep.manifest["robot_model_id"]}

    def run(*events: dict) -> dict[str, list[dict]]:
        spec = catalogue.submissions_received
        first = [Record(spec.name, spec.serialize(e), spec.key(e), 0, i) for i, e in enumerate(events)]
        out: dict[str, list[dict]] = {}
        for o in run_in_process(stages, first):
            out.setdefault(o.topic.id, []).append(o.topic.deserialize(o.value()))
        return out

    return received, run


def episode(seed: int, miner: str) -> Episode:
    return make_episode(get_robot(ROBOT, dict(list_robots())[ROBOT]), seed=seed, miner_id=miner)


def novel(verdict: dict) -> dict:
    report = json.loads(verdict["report_json"])
    return next(g for g in report["gates"] if g["gate"] == "novelty")


def test_decision_waits_for_novelty_and_scores_it(pipeline):
    received, run = pipeline
    out = run(received(episode(101, HONEST)))
    [verdict] = out["verdicts"]
    assert verdict["verdict"] == "accepted", verdict["reason_code"]
    report = json.loads(verdict["report_json"])
    assert [g["gate"] for g in report["gates"]][-1] == "novelty"
    comps = {c["name"]: c for c in report["scores"]["components"]}
    assert comps["novel"]["missing"] is False and comps["novel"]["value"] > 0.9
    # a fresh genuine episode: S_novel near 1 lifts S, and the reward, above all-neutral
    assert verdict["points"] == report["scores"]["reward"] > NEUTRAL_REWARD
    [entry] = out["ledger.entries"]
    assert entry["points"] == verdict["points"] and entry["score"] == report["scores"]["score"]


def test_duplicate_farmer_earns_less_than_an_honest_miner(pipeline):
    received, run = pipeline
    honest = [episode(s, HONEST) for s in (111, 112, 113)]
    original = episode(121, FARMER)
    farmed = [original,
              perturb.copy_of(original, FARMER, crf=35),                      # re-encoded
              perturb.copy_of(original, FARMER, video=perturb.mirror),        # mirrored
              perturb.copy_of(original, FARMER, video=perturb.brightness(30))]  # brighter
    out = run(*(received(ep) for ep in honest + farmed))
    by_sid = {v["submission_id"]: v for v in out["verdicts"]}
    honest_pts = [by_sid[e.manifest["submission_id"]]["points"] for e in honest]
    farmed_v = [by_sid[e.manifest["submission_id"]] for e in farmed]
    assert all(v["verdict"] == "accepted" for v in by_sid.values() if v["miner_id"] == HONEST)
    # the first upload is new; each copy is caught: rejected as a duplicate or paid little
    assert farmed_v[0]["verdict"] == "accepted"
    for v in farmed_v[1:]:
        if v["verdict"] == "accepted":
            assert novel(v)["metrics"]["s_novel"] < 0.2
            assert v["points"] < min(honest_pts)
        else:
            assert v["reason_code"] == "duplicate_submission"
    balances: dict[str, float] = {}
    for e in out["ledger.entries"]:
        balances[e["miner_id"]] = balances.get(e["miner_id"], 0.0) + e["points"]
    # four uploads earn the farmer less than three honest ones
    assert balances[FARMER] < balances[HONEST]
    assert balances[HONEST] == pytest.approx(sum(honest_pts))


def test_copy_from_another_miner_is_downweighted_not_rejected(pipeline):
    received, run = pipeline
    original = episode(131, HONEST)
    copy = perturb.copy_of(original, FARMER, crf=35)
    out = run(received(original), received(copy))
    by_miner = {v["miner_id"]: v for v in out["verdicts"]}
    assert by_miner[FARMER]["verdict"] == "accepted"  # cross-miner: a downweight, not a reject
    s_copy = novel(by_miner[FARMER])["metrics"]["s_novel"]
    assert s_copy < novel(by_miner[HONEST])["metrics"]["s_novel"] - 0.3
    assert by_miner[FARMER]["points"] < by_miner[HONEST]["points"]


def test_ledger_pays_each_accepted_submission_once_after_redelivery(pipeline, chdb_client):
    """Redelivered records (the same received event twice, as after a crash before the
    offset commit) are judged again with the same answer: the same entry ids and points,
    so the warehouse (ReplacingMergeTree on entry_id) holds each reward once."""
    from kibotos import warehouse
    from streams.sink_rows import ledger_row

    received, run = pipeline
    events = [received(episode(s, HONEST)) for s in (141, 142)]
    out = run(*events, *events)
    entries = out["ledger.entries"]
    assert len(entries) == 4
    first = {e["entry_id"]: e["points"] for e in entries[:2]}
    assert first == {e["entry_id"]: e["points"] for e in entries[2:]}
    assert set(first) == {ledger_entry_id(e["submission_id"], "reward") for e in events}
    chdb_client.insert("kibotos.points_ledger", [list(ledger_row(e).values()) for e in entries],
                       column_names=list(ledger_row(entries[0]).keys()))
    [balance] = [b for b in warehouse.balances(chdb_client) if b["miner_id"] == HONEST]
    accepted_rewards = [json.loads(v["report_json"])["scores"]["reward"] for v in out["verdicts"][:2]]
    assert balance == {"miner_id": HONEST, "points": pytest.approx(sum(accepted_rewards)), "entries": 2}


def test_an_earlier_upload_is_not_penalized_for_another_miners_copy_checked_first(pipeline):
    """Between miners the upload order says who is the original: an honest miner whose
    episode is checked after a copy of it (which raced ahead through other partitions)
    keeps its full S_novel; the copy is reported on the original's result."""
    received, run = pipeline
    original = episode(161, HONEST)
    honest = received(original)
    copy = received(perturb.copy_of(original, FARMER, crf=35))
    out = run(copy, honest)  # the copy is checked first
    verdicts = {v["submission_id"]: v for v in out["verdicts"]}
    first = novel(verdicts[honest["submission_id"]])
    assert verdicts[honest["submission_id"]]["verdict"] == "accepted"
    assert first["metrics"]["s_novel"] > 0.9, first["metrics"]
    assert "cross_miner_later_copy" in first["flags"] and first["metrics"]["cross_miner_match"] is None
    assert first["metrics"]["cross_miner_later_match"]["submission_id"] == copy["submission_id"]
    # in upload order the copy is the one downweighted
    original2 = episode(162, HONEST)
    honest2, copy2 = received(original2), received(perturb.copy_of(original2, FARMER, crf=35))
    out = run(honest2, copy2)
    verdicts = {v["submission_id"]: v for v in out["verdicts"]}
    assert novel(verdicts[honest2["submission_id"]])["metrics"]["s_novel"] > 0.9
    later = novel(verdicts[copy2["submission_id"]])
    assert later["metrics"]["s_novel"] < 0.7 and "cross_miner_near_duplicate" in later["flags"]


def test_copies_checked_out_of_upload_order_do_not_both_escape(pipeline):
    """Two uploads of the same episode can reach the novelty stage in either order (other
    partitions, other workers): whichever is checked first is the original, the other is
    judged against it — never both as new."""
    received, run = pipeline
    original = episode(151, FARMER)
    uploaded_first = received(original)
    uploaded_second = received(perturb.copy_of(original, FARMER, crf=35))
    assert uploaded_first["received_at"] < uploaded_second["received_at"]
    out = run(uploaded_second, uploaded_first)  # the later upload is checked first
    verdicts = {v["submission_id"]: v for v in out["verdicts"]}
    second, first = verdicts[uploaded_second["submission_id"]], verdicts[uploaded_first["submission_id"]]
    assert second["verdict"] == "accepted" and novel(second)["metrics"]["s_novel"] > 0.9
    assert first["verdict"] == "rejected" or novel(first)["metrics"]["s_novel"] < 0.2
