"""Versions are immutable, content-hashed, append-only with a changelog and a card;
attribution pays each episode once per dataset and takes back a retracted one."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from kibotos.datasets.attribution import publication_entry_id
from kibotos.datasets.builder import DatasetBuilder
from kibotos.datasets.config import default_config
from kibotos.datasets.spec import SpecError, parse_spec
from kibotos.datasets.store import DatasetError
from tests.kibotos.datasets.helpers import T0, sid, verdict

PER_EPISODE = default_config().attribution.points_per_episode


def build(store, events, name="all", spec=None, now=T0):
    store.create(parse_spec(spec or {"name": name}))
    b = DatasetBuilder(store, name)
    for e in events:
        b.offer("verdicts", e)
    return b, b.publish(now_ms=now)


def test_version_is_hashed_immutable_and_its_card_counts(store):
    events = [verdict(1, "alice", "franka_panda", 0.9, "file:///b1", flags=["sync_low_confidence"]),
              verdict(2, "alice", "ur5", 0.5, "file:///b2"), verdict(3, "bob", "unitree_g1", 0.7, "file:///b3")]
    b, info = build(store, events)
    d = store.version_dir("all", 1)
    assert info["content_hash"] == hashlib.sha256((d / "episodes.jsonl").read_bytes()).hexdigest()
    assert store.verify("all", 1)
    assert all(not os.access(p, os.W_OK) or os.geteuid() == 0 for p in d.iterdir())
    assert all((p.stat().st_mode & 0o222) == 0 for p in d.iterdir())
    card = store.card("all", 1)
    assert card["episodes"] == 3 and card["score"]["histogram"]["counts"][9] == 1  # 0.9 in [0.9, 1.0]
    assert card["coverage"]["miner"]["alice"]["episodes"] == 2
    assert card["coverage"]["task"]["cargo_pickup"]["episodes"] == 1
    assert card["coverage"]["robot"]["ur5"]["mean_score"] == 0.5
    assert card["soft_flags"] == {"joint_vel_computed": 3, "sync_low_confidence": 1}
    md = (d / "card.md").read_text()
    assert info["content_hash"] in md and "| alice | 2 |" in md
    # tampering is detected
    path = d / "episodes.jsonl"
    path.chmod(0o644)
    path.write_text(path.read_text().replace("alice", "mallory"))
    assert not store.verify("all", 1)


def test_appends_make_new_versions_and_never_touch_old_ones(store):
    b, v1 = build(store, [verdict(1, "alice", "ur5", 0.8, "file:///b")])
    before = (store.version_dir("all", 1) / "episodes.jsonl").read_bytes()
    b.offer("verdicts", verdict(2, "bob", "ur5", 0.6, "file:///b"))
    b.offer("verdicts", verdict(1, "alice", "ur5", 0.8, "file:///b"))  # redelivered: already in v1
    v2 = b.publish(now_ms=T0 + 5)
    assert (v2["version"], v2["episodes"], v2["added"], v2["parent_hash"]) == (2, 2, 1, v1["content_hash"])
    assert (store.version_dir("all", 1) / "episodes.jsonl").read_bytes() == before
    assert [op for op, _ in store.changelog("all", 2)] == ["added"]
    assert [e.submission_id for e in store.episodes("all", 2)] == [sid(1), sid(2)]
    # v2's attribution pays bob's new episode only; alice was paid by v1
    assert [(e["miner_id"], e["points"]) for e in store.attribution("all", 2)] == [("bob", PER_EPISODE * 0.6)]
    assert [(e["miner_id"], e["points"]) for e in store.attribution("all", 1)] == [("alice", PER_EPISODE * 0.8)]


def test_a_retracted_episode_leaves_and_gives_its_attribution_back(store):
    b, _ = build(store, [verdict(1, "erin", "ur5", 0.9, "file:///b"), verdict(2, "alice", "ur5", 0.5, "file:///b")])
    revised = verdict(1, "erin", "ur5", 0.9, "file:///b", verdict_kind="rejected", event_type="revised")
    assert b.offer("verdicts", revised) == "removed"
    assert b.offer("verdicts", revised) == "not_an_episode"  # redelivered: already pending removal
    v2 = b.publish(now_ms=T0 + 9)
    assert (v2["episodes"], v2["removed"]) == (1, 1)
    [entry] = store.attribution("all", 2)
    assert entry["miner_id"] == "erin" and entry["points"] == pytest.approx(-PER_EPISODE * 0.9)
    assert entry["entry_id"] == publication_entry_id("all", 2, "erin")
    # ...and it does not come back when its accepted verdict is redelivered
    assert b.offer("verdicts", verdict(1, "erin", "ur5", 0.9, "file:///b")) == "retracted"
    assert DatasetBuilder(store, "all").offer("verdicts", verdict(1, "erin", "ur5", 0.9, "file:///b")) == "retracted"


def test_same_spec_is_idempotent_other_spec_refused(store):
    spec = parse_spec({"name": "x", "min_score": 0.3})
    assert store.create(spec) is True and store.create(spec) is False
    with pytest.raises(SpecError) as info:
        store.create(parse_spec({"name": "x", "min_score": 0.4}))
    assert info.value.reason_code == "dataset_exists"
    with pytest.raises(DatasetError) as info:
        store.resolve("x@v3")
    assert info.value.reason_code == "dataset_version_not_found"


def test_a_crash_after_publishing_replays_harmlessly(store):
    """Pending episodes survive in the spool; a version already renamed into place is not
    published again when the same records come back."""
    b, _ = build(store, [verdict(1, "alice", "ur5", 0.8, "file:///b")])
    b.offer("verdicts", verdict(2, "bob", "ur5", 0.6, "file:///b"))
    # crash: a new builder over the same store, the records redelivered
    b2 = DatasetBuilder(store, "all")
    assert [b2.offer("verdicts", verdict(n, m, "ur5", s, "file:///b")) for n, m, s in
            ((1, "alice", 0.8), (2, "bob", 0.6))] == ["duplicate", "duplicate"]
    v2 = b2.publish(now_ms=T0 + 7)
    assert v2["added"] == 1 and json.loads((store.version_dir("all", 2) / "version.json").read_text())["episodes"] == 2


def revised_verdict(n, miner, score, revision, **kw):
    e = verdict(n, miner, "ur5", score, "file:///b", event_type="revised", **kw)
    e["revision"] = revision
    return e


def test_a_verdict_revised_to_another_score_updates_the_episode_once(store):
    """Accepted -> accepted with another S (e.g. after reconciliation): the next version
    carries the new S and reward (changelog op ``revised``) and pays the difference; v1
    and its attribution stay as published; redelivered verdicts, old or new, change nothing."""
    b, v1 = build(store, [verdict(1, "alice", "ur5", 0.8, "file:///b"), verdict(2, "bob", "ur5", 0.6, "file:///b")])
    v1_bytes = (store.version_dir("all", 1) / "episodes.jsonl").read_bytes()
    v1_attr = store.attribution("all", 1)
    r1 = revised_verdict(1, "alice", 0.5, 1)
    assert b.offer("verdicts", r1) == "revised"
    # redelivery of the revision, and of the original decision, before and after publishing
    assert [b.offer("verdicts", e) for e in (r1, verdict(1, "alice", "ur5", 0.8, "file:///b"))] == \
        ["duplicate", "duplicate"]
    v2 = b.publish(now_ms=T0 + 11)
    assert (v2["episodes"], v2["added"], v2["removed"], v2["revised"]) == (2, 0, 0, 1)
    eps = {e.submission_id: e for e in store.episodes("all", 2)}
    assert [e.submission_id for e in store.episodes("all", 2)] == [sid(1), sid(2)]  # in place, not duplicated
    assert (eps[sid(1)].score, eps[sid(1)].reward, eps[sid(1)].verdict_revision) == (0.5, 5.0, 1)
    assert eps[sid(1)].attribution_points == pytest.approx(PER_EPISODE * 0.5)
    [(op, ep)] = list(store.changelog("all", 2))
    assert (op, ep.submission_id, ep.score) == ("revised", sid(1), 0.5)
    [entry] = store.attribution("all", 2)
    assert (entry["miner_id"], entry["episodes"]) == ("alice", 0)
    assert entry["points"] == pytest.approx(PER_EPISODE * (0.5 - 0.8))
    assert (store.version_dir("all", 1) / "episodes.jsonl").read_bytes() == v1_bytes
    assert store.attribution("all", 1) == v1_attr and store.verify("all", 1)
    assert store.card("all", 2)["changelog"] == {"added": 0, "removed": 0, "revised": 1}
    # after a restart, everything redelivered: nothing to publish
    b2 = DatasetBuilder(store, "all")
    for e in (verdict(1, "alice", "ur5", 0.8, "file:///b"), r1, verdict(2, "bob", "ur5", 0.6, "file:///b")):
        assert b2.offer("verdicts", e) == "duplicate"
    assert b2.publish(now_ms=T0 + 12) is None
    # a later revision wins; an older one redelivered after it does not undo it
    assert b2.offer("verdicts", revised_verdict(1, "alice", 0.9, 2)) == "revised"
    assert b2.offer("verdicts", r1) == "duplicate"
    b2.publish(now_ms=T0 + 13)
    assert next(e for e in store.episodes("all", 3) if e.submission_id == sid(1)).score == 0.9
    total = sum(e["points"] for v in store.versions("all") for e in store.attribution("all", v) if e["miner_id"] == "alice")
    assert total == pytest.approx(PER_EPISODE * 0.9)  # what the current S earns, paid once


def test_a_revision_of_a_pending_episode_is_published_with_its_new_score(store):
    store.create(parse_spec({"name": "all"}))
    b = DatasetBuilder(store, "all")
    assert b.offer("verdicts", verdict(1, "alice", "ur5", 0.8, "file:///b")) == "added"
    assert b.offer("verdicts", revised_verdict(1, "alice", 0.4, 1)) == "revised"
    v1 = b.publish(now_ms=T0)
    [ep] = store.episodes("all", 1)
    assert (v1["added"], v1["revised"], ep.score, ep.attribution_points) == (1, 0, 0.4, PER_EPISODE * 0.4)


def test_a_revision_below_the_spec_minimum_removes_the_episode(store):
    b, _ = build(store, [verdict(1, "alice", "ur5", 0.8, "file:///b")], spec={"name": "all", "min_score": 0.6})
    assert b.offer("verdicts", revised_verdict(1, "alice", 0.3, 1)) == "removed"
    v2 = b.publish(now_ms=T0 + 1)
    assert (v2["episodes"], v2["removed"]) == (0, 1)
    assert b.offer("verdicts", revised_verdict(1, "alice", 0.9, 2)) == "retracted"
