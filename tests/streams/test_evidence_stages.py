"""The evidence plan in-process: gate E → jobs.<kind> … → evidence.completed → decision,
with the real job handlers (IK here: the cheapest real one) and real sample stage_bundles."""

from __future__ import annotations

import uuid

import pytest

from gpu_consumers.jobs import make_handler
from kibotos.config.settings import Settings
from kibotos.errors import ConfigError, ServiceError
from kibotos.reports.model import GateResult
from streams.stages import JobStage, Record, build_stages, evidence_route, run_in_process
from tests.streams.test_stages import CONFIG, GATE_IDS, SCORING, UR5, parsed_report, run
from topics.catalogue import Catalogue


@pytest.fixture
def catalogue() -> Catalogue:
    return Catalogue(prefix=f"t{uuid.uuid4().hex[:12]}.")


def test_evidence_route_chains_the_jobs_in_order_then_completes(catalogue):
    route = evidence_route(catalogue, ("pose", "ik", "playback"))
    assert route == {"dispatch": catalogue.job("pose"), "pose": catalogue.job("ik"),
                     "ik": catalogue.job("playback"), "playback": catalogue.evidence_completed}
    assert evidence_route(catalogue, ()) == {"dispatch": catalogue.evidence_completed}


def test_an_unknown_or_reserved_job_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="no evidence job handler 'train'"):
        make_handler("train", CONFIG, None, Settings())  # a job kind, but no evidence kind
    with pytest.raises(ConfigError, match="available: align, ik, playback, pose"):
        make_handler("nope", CONFIG, None, Settings())


@pytest.fixture
def ik_chain(catalogue, stage_bundles):
    plan = ("ik",)
    stages = build_stages(catalogue, stage_bundles.store, CONFIG, SCORING, plan)
    stages.append(JobStage("ik", make_handler("ik", CONFIG, stage_bundles.store, Settings()), catalogue, stage_bundles.store, plan))
    return stages


def test_genuine_bundle_is_accepted_after_the_ik_job_with_its_evidence(ik_chain, catalogue, stage_bundles):
    out = run(ik_chain, catalogue, stage_bundles.received(UR5, "genuine"))
    [verdict] = out["verdicts"]
    report = parsed_report(verdict)
    assert verdict["verdict"] == "accepted", report
    assert [g.gate for g in report.gates] == GATE_IDS + ["ik_residual"]
    ik = report.gates[-1].metrics
    assert ik["rms_pos_error_m"] < 0.08 and ik["wall_ms"] > 0
    assert len(out["ledger.entries"]) == 1


def test_target_shift_is_rejected_by_the_ik_job_after_passing_the_cheap_gates(ik_chain, catalogue, stage_bundles):
    out = run(ik_chain, catalogue, stage_bundles.received(UR5, "ik_target_shift"))
    [verdict] = out["verdicts"]
    report = parsed_report(verdict)
    assert (verdict["verdict"], verdict["failed_gate"]) == ("rejected", "ik_residual")
    assert [g.passed for g in report.gates] == [True] * len(GATE_IDS) + [False]
    assert "ledger.entries" not in out


def test_a_service_fault_in_a_job_is_raised_for_a_retry_not_turned_into_a_verdict(catalogue, stage_bundles):
    def broken(view, event) -> GateResult:
        raise ServiceError("renderer cannot start")

    stage = JobStage("playback", broken, catalogue, stage_bundles.store, ("playback",))
    event = dict(stage_bundles.received(UR5, "genuine"), gate_results=[], sync=None, config_version=None,
                 robot_model_revision=None)
    record = Record(catalogue.job("playback").name, catalogue.job("playback").serialize(event))
    with pytest.raises(ServiceError):
        stage.handle(record)


def test_a_crashing_model_never_rejects_the_miner_and_the_stage_survives(catalogue, stage_bundles):
    """The validator's own failure is retried, then parked for operators (verdict pending:
    tests/streams/test_validator_faults.py); the next record is handled as usual."""
    from streams.stage import FaultPolicy

    calls = []

    def crashing(view, event) -> GateResult:
        calls.append(event["submission_id"])
        raise RuntimeError("model blew up")

    stage = JobStage("pose", crashing, catalogue, stage_bundles.store, ("pose",))
    event = dict(stage_bundles.received(UR5, "genuine"), gate_results=[], sync=None, config_version=None,
                 robot_model_revision=None)
    spec = catalogue.job("pose")
    policy = FaultPolicy(config_version="t", max_attempts=2, backoff_s=0.0)
    outs = run_in_process([stage], [Record(spec.name, spec.serialize(event)), Record(spec.name, b"garbage")],
                          policy=policy)
    assert [o.topic.id for o in outs] == ["dead.letters", "dead.letters"]
    assert [o.record["error_code"] for o in outs] == ["job_internal_error", "undecodable_record"]
    assert len(calls) == policy.max_attempts
