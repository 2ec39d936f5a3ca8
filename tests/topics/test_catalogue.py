"""The catalogue declares every topic once, with prefix, partitions, key and serializer."""

from __future__ import annotations

import pytest

from kibotos.config.settings import Settings
from kibotos.errors import KibotosError
from schemas_avro import SCHEMA_VERSIONS
from tests.fixtures.events import EVENT_FACTORIES
from topics.catalogue import Catalogue

EXPECTED = {
    "submissions.received": "submission_received",
    "gates.a.passed": "submission_in_flight",
    "gates.b.passed": "submission_in_flight",
    "gates.c.passed": "submission_in_flight",
    "gates.d.passed": "submission_in_flight",
    "gates.e.passed": "submission_in_flight",
    "jobs.pose": "submission_in_flight",
    "jobs.ik": "submission_in_flight",
    "jobs.playback": "submission_in_flight",
    "jobs.align": "submission_in_flight",
    "jobs.task": "submission_in_flight",
    "evidence.completed": "submission_in_flight",
    "novelty.completed": "submission_in_flight",
    "verification.rejected": "verification_rejected",
    "verdicts": "verdict",
    "ledger.entries": "ledger_entry",
    "dead.letters": "dead_letter",
    "xgen.requests": "xgen_request",
    "xgen.jobs.retarget": "xgen_in_flight",
    "xgen.jobs.interaction": "xgen_in_flight",
    "xgen.jobs.augment": "xgen_in_flight",
    "xgen.jobs.export": "xgen_in_flight",
    "xgen.progress": "xgen_progress",
    "xgen.clips": "xgen_clip",
    "xgen.rejected": "xgen_in_flight",
    "datasets.versions": "dataset_version",
    "datasets.episodes": "dataset_episode",
    "datasets.attributions": "attribution",
    "policy.evals": "policy_eval",
    "training.requests": "training_request",
    "training.progress": "training_progress",
    "eval.requests": "eval_request",
}


def test_every_topic_in_pipeline_order():
    cat = Catalogue()
    assert [(s.id, s.event) for s in cat.all()] == list(EXPECTED.items())
    assert all(s.name == s.id and s.partitions == 4 for s in cat.all())


def test_prefix_and_partitions_apply_to_every_topic():
    cat = Catalogue(prefix="staging.", partitions=7)
    assert {s.name for s in cat.all()} == {f"staging.{i}" for i in EXPECTED}
    assert {s.partitions for s in cat.all()} == {7}


def test_attribute_access():
    cat = Catalogue(prefix="p-")
    assert cat.submissions_received.name == "p-submissions.received"
    assert cat.gate_passed("a").name == "p-gates.a.passed"
    assert cat.gate_passed("E").id == "gates.e.passed"
    assert cat.verification_rejected.id == "verification.rejected"
    assert cat.verdicts.id == "verdicts"
    assert cat.ledger_entries.id == "ledger.entries"
    assert cat.dead_letters.id == "dead.letters"
    assert cat.by_name("p-verdicts") is cat.verdicts
    assert cat.get("ledger.entries") is cat.ledger_entries


@pytest.mark.parametrize("call", [
    lambda c: c.gate_passed("f"), lambda c: c.get("nope"), lambda c: c.by_name("verdicts"),
])
def test_unknown_topics_are_errors_naming_what_exists(call):
    with pytest.raises(KibotosError) as info:
        call(Catalogue(prefix="x."))
    assert info.value.reason_code == "unknown_topic"


def test_partitions_must_be_positive():
    with pytest.raises(KibotosError):
        Catalogue(partitions=0)


def test_from_settings():
    cat = Catalogue.from_settings(Settings(topic_prefix="env1.", topic_partitions=2))
    assert cat.verdicts.name == "env1.verdicts" and cat.verdicts.partitions == 2


@pytest.mark.parametrize("spec", Catalogue().all(), ids=lambda s: s.id)
def test_every_topic_serializes_its_event_and_has_a_key(spec):
    record = EVENT_FACTORIES[spec.event]()
    assert spec.serializer.event == spec.event
    assert spec.deserialize(spec.serialize(record))["schema_version"] == SCHEMA_VERSIONS[spec.event]
    assert isinstance(spec.key(record), bytes)


def test_keys():
    cat = Catalogue()
    assert cat.verdicts.key({"submission_id": "sub-9"}) == b"sub-9"
    # dead letters keep the failed record's original key, bytes or none
    assert cat.dead_letters.key({"key": b"\x01orig"}) == b"\x01orig"
    assert cat.dead_letters.key({"key": None}) is None
