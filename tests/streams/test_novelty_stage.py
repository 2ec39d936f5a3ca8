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

from kibotos.config.gates import load_config
from kibotos.novelty import NoveltyChecker, load_novelty_config
from kibotos.objectstore import LocalObjectStore
from kibotos.robots import get_robot, list_robots
from kibotos.scoring import load_scoring_config, score_submission
from kibotos.synthetic import perturb
from kibotos.synthetic.samples import Episode, make_episode
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
            # the copy factor on R: at most a tenth of the original's reward
            assert v["points"] <= 0.1 * farmed_v[0]["points"]
            assert json.loads(v["report_json"])["scores"]["copy_factor"] == SCORING.reward.copy_min_factor
        else:
            assert v["reason_code"] == "duplicate_submission"
    balances: dict[str, float] = {}
    for e in out["ledger.entries"]:
        balances[e["miner_id"]] = balances.get(e["miner_id"], 0.0) + e["points"]
    # four uploads earn the farmer less than three honest ones
    assert balances[FARMER] < balances[HONEST]
    assert balances[HONEST] == pytest.approx(sum(honest_pts))


def test_copy_from_another_miner_earns_nothing_or_at_most_a_tenth(pipeline):
    received, run = pipeline
    original = episode(131, HONEST)
    # the measured attack: joint noise, one more H.264 pass, brighter (paid 89 % before)
    noisy = perturb.with_joint_noise(perturb.copy_of(original, FARMER, video=perturb.brightness(12)), 0.002)
    mirrored = perturb.copy_of(original, "miner-mirror", video=perturb.mirror)
    out = run(received(original), received(noisy), received(mirrored))
    by_miner = {v["miner_id"]: v for v in out["verdicts"]}
    paid = by_miner[HONEST]["points"]
    assert by_miner[HONEST]["verdict"] == "accepted" and paid > 0
    assert (by_miner[FARMER]["verdict"], by_miner[FARMER]["reason_code"]) == ("rejected", "copied_submission")
    assert by_miner[FARMER]["points"] == 0.0
    mirror = by_miner["miner-mirror"]
    if mirror["verdict"] == "accepted":
        assert 0 < mirror["points"] <= 0.1 * paid
        assert novel(mirror)["metrics"]["copy"]["submission_id"] == original.manifest["submission_id"]
    else:
        assert mirror["reason_code"] == "copied_submission"
    assert {e["miner_id"] for e in out["ledger.entries"] if e["points"] > 0.1 * paid} == {HONEST}


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


def unique_entries(entries: list[dict]) -> dict[str, dict]:
    """Ledger entries by id, as the warehouse keeps them (ReplacingMergeTree on entry_id)."""
    out: dict[str, dict] = {}
    for e in entries:
        assert out.setdefault(e["entry_id"], e)["points"] == e["points"], "one id, one amount"
    return out


@pytest.mark.parametrize("near_exact", [True, False], ids=["reencoded_copy", "mirrored_copy"])
def test_a_copy_paid_before_its_original_is_revised_and_clawed_back(pipeline, chdb_client, near_exact):
    """Between miners the upload order says who is the original. A copy that raced ahead
    (checked first, judged new, paid) is revised when its original is checked: a
    ``revised`` verdict and a compensating ledger entry, with ids that replays never
    double; the original keeps its full S_novel and reward."""
    from kibotos import warehouse
    from streams.sink_rows import ledger_row
    from streams.stages import verdict_event_id

    received, run = pipeline
    owner = f"{HONEST}-{'exact' if near_exact else 'mirror'}"  # balances of their own in the shared store
    original = episode(161 if near_exact else 163, owner)
    honest = received(original)
    copier = f"{FARMER}-{'exact' if near_exact else 'mirror'}"
    copy = received(perturb.copy_of(original, copier, crf=35) if near_exact
                    else perturb.copy_of(original, copier, video=perturb.mirror))
    out = run(copy, honest)  # the copy is checked (and paid) first
    decided = [v for v in out["verdicts"] if v["event_type"] == "decision"]
    revised = [v for v in out["verdicts"] if v["event_type"] == "revised"]
    verdicts = {v["submission_id"]: v for v in decided}
    first = novel(verdicts[honest["submission_id"]])
    assert verdicts[honest["submission_id"]]["verdict"] == "accepted"
    assert first["metrics"]["s_novel"] > 0.9, first["metrics"]
    assert "cross_miner_later_copy" in first["flags"] and first["metrics"]["cross_miner_match"] is None
    assert first["metrics"]["cross_miner_later_match"]["submission_id"] == copy["submission_id"]

    # the copy was decided as new and paid ...
    paid_first = verdicts[copy["submission_id"]]
    assert paid_first["verdict"] == "accepted" and paid_first["points"] > 0.5 * verdicts[honest["submission_id"]]["points"]
    # ... then revised once the original was checked
    [rev] = revised
    assert rev["submission_id"] == copy["submission_id"] and rev["revision"] == 1
    assert rev["event_id"] == verdict_event_id(copy["submission_id"], "revised", 1) != paid_first["event_id"]
    rev_novelty = novel(rev)
    assert rev_novelty["metrics"]["revision"]["original_submission_id"] == honest["submission_id"]
    assert rev_novelty["metrics"]["copy"]["submission_id"] == honest["submission_id"]
    assert "revised_after_original" in rev_novelty["flags"]
    original_points = verdicts[honest["submission_id"]]["points"]
    if near_exact:
        assert (rev["verdict"], rev["reason_code"], rev["points"]) == ("rejected", "copied_submission", 0.0)
    else:
        assert rev["verdict"] == "accepted" and 0 < rev["points"] <= 0.1 * original_points

    entries = unique_entries(out["ledger.entries"])
    copy_entries = {e["kind"]: e for e in entries.values() if e["submission_id"] == copy["submission_id"]}
    assert set(copy_entries) == {"reward", "clawback"}
    assert copy_entries["reward"]["entry_id"] == ledger_entry_id(copy["submission_id"], "reward")
    assert copy_entries["reward"]["points"] == paid_first["points"]
    assert copy_entries["clawback"]["entry_id"] == ledger_entry_id(copy["submission_id"], "clawback:1")
    assert copy_entries["clawback"]["points"] == pytest.approx(rev["points"] - paid_first["points"], abs=1e-6)

    # a replay of everything (redelivery after a crash) publishes the same ids and amounts
    again = run(copy, honest)
    assert {v["event_id"] for v in again["verdicts"]} <= {v["event_id"] for v in out["verdicts"]} | {
        verdict_event_id(honest["submission_id"])}
    replayed = unique_entries(out["ledger.entries"] + again["ledger.entries"])
    assert replayed.keys() == entries.keys()

    # the warehouse's balances are the sum of the (deduplicated) entries, replays included
    rows = [ledger_row(e) for e in out["ledger.entries"] + again["ledger.entries"]]
    chdb_client.insert("kibotos.points_ledger", [list(r.values()) for r in rows], column_names=list(rows[0].keys()))
    balances = {b["miner_id"]: b for b in warehouse.balances(chdb_client)}
    for miner in (owner, copier):
        expected = sum(e["points"] for e in entries.values() if e["miner_id"] == miner)
        assert balances[miner]["points"] == pytest.approx(expected, abs=1e-6)
    assert balances[copier]["points"] == pytest.approx(rev["points"], abs=1e-6) and rev["points"] <= 0.1 * original_points


def test_verdict_event_ids_are_stable_per_decision(pipeline):
    from streams.stages import verdict_event_id

    received, run = pipeline
    events = [received(episode(s, HONEST)) for s in (171, 172)]
    first, again = run(*events), run(*events)
    ids = [v["event_id"] for v in first["verdicts"]]
    assert ids == [v["event_id"] for v in again["verdicts"]]  # validators dedupe by it
    assert ids == [verdict_event_id(e["submission_id"]) for e in events] and len(set(ids)) == 2
    assert all(v["event_type"] == "decision" and v["revision"] == 0 for v in first["verdicts"])


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
