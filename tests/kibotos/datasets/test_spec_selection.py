"""A spec selects episodes by robot, task, minimum S, decision window, miners and source,
and names the rule an episode fails."""

from __future__ import annotations

import datetime as dt

import pytest

from kibotos.datasets.builder import DatasetBuilder
from kibotos.datasets.episode import from_verdict
from kibotos.datasets.spec import SpecError, load_spec, parse_spec
from tests.kibotos.datasets.helpers import T0, verdict


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat()


def test_each_rule_selects_and_names_its_reason():
    spec = parse_spec({"name": "panda-good", "robots": ["franka_panda"], "tasks": ["pick_place"], "min_score": 0.6,
                       "decided_from": iso(T0), "decided_until": iso(T0 + 100_000), "exclude_miners": ["miner-eve"]})
    cases = {
        "ok": (verdict(1, "miner-alice", "franka_panda", 0.8, "file:///b"), None),
        "robot": (verdict(2, "miner-alice", "ur5", 0.8, "file:///b"), "robot_not_selected"),
        "task": (verdict(3, "miner-alice", "unitree_g1", 0.8, "file:///b"), "robot_not_selected"),
        "score": (verdict(4, "miner-alice", "franka_panda", 0.59, "file:///b"), "score_below_minimum"),
        "early": (verdict(5, "miner-alice", "franka_panda", 0.9, "file:///b", decided_at=T0 - 1),
                  "decided_outside_window"),
        "late": (verdict(6, "miner-alice", "franka_panda", 0.9, "file:///b", decided_at=T0 + 100_000),
                 "decided_outside_window"),
        "miner": (verdict(7, "miner-eve", "franka_panda", 0.9, "file:///b"), "miner_not_selected"),
        "unscored": (verdict(8, "miner-alice", "franka_panda", None, "file:///b"), "score_below_minimum"),
    }
    for name, (event, expected) in cases.items():
        assert spec.reject_reason(from_verdict(event)) == expected, name
    # the task rule on its own: a G1 episode (cargo_pickup) against a pick_place-only spec
    tasks_only = parse_spec({"name": "pick", "tasks": ["pick_place"]})
    assert tasks_only.reject_reason(from_verdict(cases["task"][0])) == "task_not_selected"
    assert tasks_only.reject_reason(from_verdict(cases["ok"][0])) is None
    # miners: an allow-list
    assert parse_spec({"name": "bob", "miners": ["miner-bob"]}).reject_reason(
        from_verdict(cases["ok"][0])) == "miner_not_selected"
    # an accepted copy of an earlier upload (its reward cut by novelty) is left out unless asked for
    copied = verdict(9, "miner-erin", "franka_panda", 0.8, "file:///b")
    rep = __import__("json").loads(copied["report_json"])
    rep["scores"]["copy_factor"] = 0.1
    copied["report_json"] = __import__("json").dumps(rep)
    assert spec.reject_reason(from_verdict(copied)) == "copy_of_earlier_upload"
    assert parse_spec({"name": "c", "include_copies": True}).reject_reason(from_verdict(copied)) is None
    # no minimum: unscored accepted episodes belong
    assert parse_spec({"name": "all"}).reject_reason(from_verdict(cases["unscored"][0])) is None


def test_rejections_and_attempts_are_not_episodes():
    assert from_verdict(verdict(1, "m", "ur5", 0.9, "file:///b", verdict_kind="rejected")) is None
    attempt = verdict(2, "m", "ur5", 0.9, "file:///b") | {"upload_id": "u1"}
    assert from_verdict(attempt) is None


def test_episode_carries_its_quality_summary():
    ep = from_verdict(verdict(1, "miner-alice", "franka_panda", 0.8, "file:///b", flags=["sync_low_confidence"]))
    assert ep.score == 0.8 and ep.components == {"retarget": 0.8, "task": 1.0}
    assert ep.soft_flags == ("joint_vel_computed", "sync_low_confidence")
    assert ep.evidence_uris == (f"file:///kf/{ep.submission_id}-sim.png",)
    assert (ep.task_id, ep.robot_model_id, ep.reward, ep.miner_id) == ("pick_place", "franka_panda", 8.0, "miner-alice")


@pytest.mark.parametrize("raw, fragment", [
    ({"name": "Bad Name"}, "must match"),
    ({"name": "x", "min_score": 1.5}, "min_score"),
    ({"name": "x", "sources": ["twitter"]}, "unknown source"),
    ({"name": "x", "decided_from": "2026-12-02T00:00:00Z", "decided_until": "2026-12-01T00:00:00Z"}, "after"),
    ({"name": "x", "colour": "red"}, "colour"),
])
def test_bad_specs_get_a_reason_code(raw, fragment):
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert info.value.reason_code == "dataset_spec_invalid" and fragment in str(info.value)


def test_spec_file_yaml(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: g1-cargo\nrobots: [unitree_g1]\nmin_score: 0.5\n")
    spec = load_spec(path)
    assert spec.robots == ("unitree_g1",) and spec.min_score == 0.5
    path.write_text("- not a mapping\n")
    with pytest.raises(SpecError):
        load_spec(path)


def test_builder_selects_by_spec_and_skips_redelivery(store):
    store.create(parse_spec({"name": "panda", "robots": ["franka_panda"], "min_score": 0.5}))
    b = DatasetBuilder(store, "panda")
    events = [verdict(1, "a", "franka_panda", 0.9, "file:///b"), verdict(2, "a", "ur5", 0.9, "file:///b"),
              verdict(3, "b", "franka_panda", 0.4, "file:///b"), verdict(4, "b", "franka_panda", 0.7, "file:///b")]
    assert [b.offer("verdicts", e) for e in events] == ["added", "robot_not_selected", "score_below_minimum", "added"]
    assert [b.offer("verdicts", e) for e in events[:1]] == ["duplicate"]
    assert b.offer("xgen.clips", {"verified": True}) == "source_not_selected"
    info = b.publish(now_ms=T0)
    assert info["episodes"] == 2 and info["added"] == 2
    # a restarted builder (same store) still knows what is in the dataset
    again = DatasetBuilder(store, "panda")
    assert again.offer("verdicts", events[3]) == "duplicate"
    assert again.publish(now_ms=T0 + 1) is None  # nothing new: no version
