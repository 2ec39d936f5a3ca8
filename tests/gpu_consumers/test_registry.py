"""The job registry and the stage contract the GPU consumer relies on: every registered
kind builds a stage consuming its declared topic, and a job family the consumer has never
heard of plugs in by registering a ``JobSpec`` (no Ray here: the actor body is a class)."""

from __future__ import annotations

import pytest

from gpu_consumers import registry
from gpu_consumers.consumer import JobActorImpl
from gpu_consumers.registry import JobSpec, get_job, job_specs, register_job
from kibotos.config.settings import Settings
from kibotos.errors import ConfigError
from streams.stage import Output, Record, Stage
from topics.catalogue import Catalogue

EVIDENCE = job_specs("evidence")


def test_every_evidence_kind_of_the_default_plan_is_registered_once_with_its_topic_and_gate():
    kinds = [s.kind for s in EVIDENCE]
    assert len(kinds) == len(set(kinds))
    assert set(Settings().evidence_jobs) <= set(kinds)
    cat = Catalogue()
    for spec in EVIDENCE:
        assert cat.get(spec.input_topic) == cat.job(spec.kind)
        assert spec.gate, spec


def test_an_unknown_or_reserved_kind_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match="available: .*ik"):
        get_job("nope")


def test_registering_another_spec_under_a_known_kind_fails():
    with pytest.raises(ValueError, match="twice"):
        register_job(JobSpec(kind="ik", input_topic="jobs.ik", build_stage=lambda *a: None))


@pytest.mark.parametrize("spec", EVIDENCE, ids=lambda s: s.kind)
def test_every_evidence_kind_builds_a_stage_on_its_input_topic(spec, tmp_path):
    settings = Settings(home=tmp_path, object_store_url=(tmp_path / "objects").as_uri())
    cat = Catalogue.from_settings(settings)
    from kibotos.objectstore import store_from_settings

    stage = spec.build_stage(settings, cat, store_from_settings(settings))
    assert isinstance(stage, Stage)
    assert stage.inputs == (cat.get(spec.input_topic),)
    assert cat.dead_letters in stage.outputs
    # undecodable input is that stage's dead letter, never an exception
    [out] = stage.handle(Record(cat.get(spec.input_topic).name, b"\x00garbage"))
    assert out.topic == cat.dead_letters and out.record["processor_id"] == stage.id


class EchoStage:
    """A job family of its own: consumes ``dead.letters`` and answers on ``verdicts`` —
    topics and events the consumer has no special code for."""

    def __init__(self, catalogue: Catalogue):
        self.id = "echo"
        self.inputs = (catalogue.dead_letters,)
        self.outputs = (catalogue.dead_letters,)
        self.catalogue = catalogue

    def handle(self, record: Record) -> list[Output]:
        letter = self.catalogue.dead_letters.deserialize(record.value)
        return [Output(self.catalogue.dead_letters, dict(letter, error_code="echoed"))]


def test_a_new_job_family_plugs_into_the_actor_without_touching_the_consumer(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_JOBS", dict(registry._JOBS))
    register_job(JobSpec(kind="echo", input_topic="dead.letters", family="test",
                         build_stage=lambda settings, catalogue, store: EchoStage(catalogue)))
    settings = Settings(home=tmp_path, object_store_url=(tmp_path / "objects").as_uri(), topic_prefix="p.")
    actor = JobActorImpl("echo", settings.model_dump_json())
    cat = Catalogue.from_settings(settings)
    letter = {"source_topic": "x", "source_partition": 0, "source_offset": 1, "key": b"k", "payload": b"",
              "error_code": "e", "error_message": "m", "processor_id": "p", "failed_at": 0}
    [(topic, key, value)] = actor.handle("p.dead.letters", cat.dead_letters.serialize(letter), b"k", 0, 1)
    assert topic == "p.dead.letters" and key == b"k"
    assert cat.dead_letters.deserialize(value)["error_code"] == "echoed"


GATES = __import__("processors.base", fromlist=["gates"]).gates()


def test_gate_order_is_the_registered_gates_with_their_letters_and_orders_in_sequence():
    from processors.gates import GATE_ORDER

    assert tuple(g.gate_id for g in GATES) == GATE_ORDER
    assert [g.letter for g in GATES] == list("abcde") and [g.order for g in GATES] == sorted(g.order for g in GATES)


@pytest.mark.parametrize("gate", GATES, ids=lambda g: g.gate_id)
def test_every_registered_gate_passes_a_genuine_bundle_and_dead_letters_garbage(gate, tmp_path):
    from kibotos.bundle import open_bundle
    from kibotos.config.gates import load_config
    from kibotos.objectstore import LocalObjectStore
    from kibotos.robots import get_robot, list_robots
    from kibotos.synthetic.samples import make_episode
    from processors.base import run_gate
    from streams.stages import GateStage

    config = load_config()
    ep = make_episode(get_robot("ur5", dict(list_robots())["ur5"]), "genuine", seed=0)
    with open_bundle(ep.write(tmp_path / "g.zarr.zip")) as view:
        res = run_gate(gate, view, config)
    assert res.gate == gate.gate_id and res.passed, res
    cat = Catalogue(prefix="smoke.")
    stage = GateStage(gate, cat, LocalObjectStore(tmp_path / "o"), config)
    assert isinstance(stage, Stage) and stage.id == gate.gate_id
    [out] = stage.handle(Record(stage.inputs[0].name, b"\x00garbage"))
    assert out.topic == cat.dead_letters and out.record["processor_id"] == gate.gate_id
