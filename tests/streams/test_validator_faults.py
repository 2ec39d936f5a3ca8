"""Validator faults never judge the miner (issue 18): a gate or job that fails itself, or a
playback that crashes, is retried ``FaultPolicy.max_attempts`` times and then parked in
``dead.letters`` with the verdict left pending; a damaged video tail is flagged, not
silently dropped. Real sample bundles, real stages; the failing gate/model/renderer is a
function that raises (a crash cannot be produced on demand otherwise)."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from kibotos.errors import ServiceError, collect_degraded, note_degraded
from kibotos.objectstore import S3ObjectStore
from kibotos.reports.model import GateResult
from processors.base import Gate, gates, run_gate
from streams.stage import FaultPolicy, ValidatorFault, contained, handle_with_retries, load_fault_policy
from streams.stages import GateStage, JobStage, Record, build_stages, run_in_process
from tests.streams.test_stages import CONFIG, SCORING, UR5
from topics.catalogue import Catalogue

POLICY = FaultPolicy(config_version="test", max_attempts=3, backoff_s=0.0)


@pytest.fixture
def catalogue() -> Catalogue:
    return Catalogue(prefix="faults.")


def in_flight(stage_bundles, catalogue, kind: str) -> Record:
    event = dict(stage_bundles.received(UR5, "genuine"), gate_results=[], sync=None, config_version=None,
                 robot_model_revision=None)
    spec = catalogue.job(kind)
    return Record(spec.name, spec.serialize(event), spec.key(event), partition=2, offset=41)


def test_the_packaged_policy_is_versioned_and_retries_at_least_once():
    policy = load_fault_policy()
    assert policy.config_version.startswith("faults-") and policy.max_attempts >= 2


def test_a_crashing_job_is_retried_then_dead_lettered_never_rejected(catalogue, stage_bundles):
    calls = []

    def crashing(view, event) -> GateResult:
        calls.append(event.submission_id)
        raise RuntimeError("model blew up")

    stage = JobStage("pose", crashing, catalogue, stage_bundles.store, ("pose",))
    record = in_flight(stage_bundles, catalogue, "pose")
    with pytest.raises(ValidatorFault) as raised:
        stage.handle(record)
    assert raised.value.reason_code == "job_internal_error"
    calls.clear()
    [letter] = handle_with_retries(stage, record, catalogue, POLICY, sleep=lambda s: None)
    assert len(calls) == POLICY.max_attempts
    assert letter.topic == catalogue.dead_letters
    assert (letter.record["error_code"], letter.record["processor_id"]) == ("job_internal_error", "job_pose")
    assert letter.record["payload"] == record.value and letter.record["source_offset"] == 41  # replayable
    assert "verdict pending" in letter.record["error_message"]


def test_a_job_that_recovers_on_a_retry_is_judged_once(catalogue, stage_bundles):
    calls = []

    def flaky(view, event) -> GateResult:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("transient")
        return GateResult(gate="gate_f_pose", passed=True)

    stage = JobStage("pose", flaky, catalogue, stage_bundles.store, ("pose",))
    [out] = handle_with_retries(stage, in_flight(stage_bundles, catalogue, "pose"), catalogue, POLICY, sleep=lambda s: None)
    assert out.topic == catalogue.evidence_completed and len(calls) == 2


def test_through_the_chain_a_job_fault_leaves_the_verdict_pending(catalogue, stage_bundles):
    """Gates A-E, the crashing job and the decision in-process: no verdict, no ledger
    entry, one dead letter; the same bundle with a working job is accepted."""
    plan = ("pose",)
    calls = []

    def crashing(view, event) -> GateResult:
        calls.append(1)
        raise ZeroDivisionError("bug")

    stages = build_stages(catalogue, stage_bundles.store, CONFIG, SCORING, plan)
    stages.append(JobStage("pose", crashing, catalogue, stage_bundles.store, plan))
    spec = catalogue.submissions_received
    event = stage_bundles.received(UR5, "genuine")
    outs = run_in_process(stages, [Record(spec.name, spec.serialize(event), spec.key(event))], policy=POLICY)
    assert [o.topic.id for o in outs] == ["dead.letters"] and len(calls) == POLICY.max_attempts
    assert outs[0].record["error_code"] == "job_internal_error"

    stages[-1] = JobStage("pose", lambda view, e: GateResult(gate="gate_f_pose", passed=True), catalogue,
                          stage_bundles.store, plan)
    outs = run_in_process(stages, [Record(spec.name, spec.serialize(event), spec.key(event))], policy=POLICY)
    assert [o.topic.id for o in outs] == ["verdicts", "ledger.entries"]
    assert outs[0].record["verdict"] == "accepted"


def test_a_gate_that_fails_itself_is_a_fault_in_the_stream_and_a_result_in_verify(catalogue, stage_bundles):
    real = gates()[1]
    broken = Gate(real.gate_id, real.letter, real.order, real.title,
                  lambda view, config: (_ for _ in ()).throw(KeyError("bug")))
    stage = GateStage(broken, catalogue, stage_bundles.store, CONFIG)
    spec = stage.input
    event = dict(stage_bundles.received(UR5, "genuine"), gate_results=[], sync=None, config_version=None,
                 robot_model_revision=None)
    record = Record(spec.name, spec.serialize(event), spec.key(event))
    [letter] = handle_with_retries(stage, record, catalogue, POLICY, sleep=lambda s: None)
    assert letter.topic == catalogue.dead_letters and letter.record["error_code"] == "gate_internal_error"
    # kibotos verify shows what happened instead (no stream, no retry)
    from kibotos.bundle import open_bundle

    with open_bundle(stage_bundles.store.local_path(event["bundle_uri"])) as view:
        res = run_gate(broken, view, CONFIG)
    assert (res.passed, res.reason_code) == (False, "gate_internal_error")


def test_a_service_error_is_not_swallowed_by_the_retries(catalogue, stage_bundles):
    def down(view, event) -> GateResult:
        raise ServiceError("store down")

    stage = JobStage("pose", down, catalogue, stage_bundles.store, ("pose",))
    with pytest.raises(ServiceError):  # the runner retries it (the broker or store comes back)
        handle_with_retries(stage, in_flight(stage_bundles, catalogue, "pose"), catalogue, POLICY, sleep=lambda s: None)



def test_an_unreachable_object_store_is_the_validators_fault_not_a_rejection(catalogue, stage_bundles, tmp_path):
    """An S3 outage while gate A fetches the bundle must reach the runner (retried until the
    store is back), never ``verification.rejected`` (found by the SIGTERM drill: a hung store
    used to reject the miner's bundle with ``service_unavailable``)."""
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = S3ObjectStore("bundles", "env1", endpoint=f"http://127.0.0.1:{port}", access_key="k", secret_key="s",
                          cache_dir=tmp_path)
    stage = GateStage(gates()[0], catalogue, store, CONFIG)
    event = dict(stage_bundles.received(UR5, "genuine"), bundle_uri=store.uri_for("bundles/s1/u1.zarr.zip"))
    spec = stage.input
    with pytest.raises(ServiceError) as raised:
        handle_with_retries(stage, Record(spec.name, spec.serialize(event), spec.key(event)), catalogue, POLICY,
                            sleep=lambda s: None)
    assert raised.value.reason_code == "service_unavailable"

def test_a_playback_crash_is_a_validator_fault_not_playback_failed(catalogue, stage_bundles):
    """The renderer raising inside Genesis (here: a renderer whose scene build raises) used
    to reject the miner with playback_failed."""
    from gpu_consumers.playback import run_playback
    from kibotos.bundle import open_bundle

    class CrashingRenderer:
        width, height = 64, 48

        def warm_up(self, robot):
            raise RuntimeError("EGL context lost")

    def handler(view, event):
        return run_playback(view, event.sync_offset(), CrashingRenderer(), stage_bundles.store, "kf/x")

    ep = stage_bundles.received(UR5, "genuine")
    with open_bundle(stage_bundles.store.local_path(ep["bundle_uri"])) as view:
        with pytest.raises(RuntimeError):
            run_playback(view, 0.0, CrashingRenderer(), stage_bundles.store, "kf/x")
    stage = JobStage("playback", handler, catalogue, stage_bundles.store, ("playback",))
    [letter] = handle_with_retries(stage, in_flight(stage_bundles, catalogue, "playback"), catalogue, POLICY,
                                   sleep=lambda s: None)
    assert letter.topic == catalogue.dead_letters and letter.record["error_code"] == "job_internal_error"


def test_a_degradation_noted_while_judging_is_flagged_on_the_result():
    def judged_on_a_damaged_tail() -> GateResult:
        note_degraded("video_decode_truncated", "decode stopped after 12 frames: Invalid data")
        return GateResult(gate="g", passed=True, flags=["other"])

    res = contained("g", judged_on_a_damaged_tail)
    assert res.passed and res.flags == ["other", "video_decode_truncated"]
    assert res.metrics["degraded"][0]["flag"] == "video_decode_truncated"
    assert contained("g", lambda: GateResult(gate="g", passed=True)).flags == []


def test_a_decode_error_after_the_first_frame_is_noted(monkeypatch):
    """A stream whose decoder fails after two frames (the failure injected into the frame
    iterator over a real encoded video): the frames decoded so far are kept and the error
    is noted, not dropped."""
    from kibotos.media import video

    frames = np.random.default_rng(0).integers(0, 255, (10, 48, 64, 3), dtype=np.uint8)
    data = video.encode_mp4(frames, 10.0)
    real = video.decode_frames

    def failing_after_two(container, stream, budget):
        for i, frame in enumerate(real(container, stream, budget)):
            if i == 2:
                raise ValueError("Invalid data found when processing input")
            yield frame

    monkeypatch.setattr(video, "decode_frames", failing_after_two)
    with collect_degraded() as notes:
        [luma] = video.decode_luma_widths(data, (32,))
    assert luma.frames.shape[0] == 2
    assert [flag for flag, _ in notes] == [video.DECODE_TRUNCATED] and "after 2 frames" in notes[0][1]


def test_a_policy_file_sets_the_tries_and_a_bad_one_is_a_config_error(tmp_path, catalogue, stage_bundles):
    from kibotos.errors import ConfigError

    path = tmp_path / "faults.yaml"
    path.write_text('config_version: "faults-test.1"\nmax_attempts: 5\nbackoff_s: 0\n')
    policy = load_fault_policy(path)
    calls = []

    def crashing(view, event) -> GateResult:
        calls.append(1)
        raise RuntimeError("again")

    stage = JobStage("pose", crashing, catalogue, stage_bundles.store, ("pose",))
    handle_with_retries(stage, in_flight(stage_bundles, catalogue, "pose"), catalogue, policy, sleep=lambda s: None)
    assert len(calls) == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text('config_version: "x"\nmax_attempts: 0\n')
    with pytest.raises(ConfigError):
        load_fault_policy(bad)


def test_a_novelty_checker_that_fails_itself_is_retried_then_parked(catalogue, stage_bundles):
    from streams.stages import NoveltyStage

    class BrokenChecker:  # the index query raising (a bug in the checker), not the miner's bundle
        calls = 0

        def check(self, view, *args, **kwargs):
            BrokenChecker.calls += 1
            raise IndexError("fingerprint table out of range")

    stage = NoveltyStage(catalogue, stage_bundles.store, BrokenChecker())
    event = dict(stage_bundles.received(UR5, "genuine"), gate_results=[], sync=None, config_version=None,
                 robot_model_revision=None)
    record = Record(stage.input.name, stage.input.serialize(event), stage.input.key(event))
    [letter] = handle_with_retries(stage, record, catalogue, POLICY, sleep=lambda s: None)
    assert BrokenChecker.calls == POLICY.max_attempts
    assert (letter.topic, letter.record["error_code"]) == (catalogue.dead_letters, "novelty_internal_error")


def test_a_fault_crosses_a_process_with_its_reason_code_and_names_the_dead_letter():
    """Ray returns an actor's exception pickled: the fault must rebuild with its code (it
    came back as an UnserializableException before), and the GPU consumer parks the job
    under that code; anything else it parks as job_service_unavailable."""
    import pickle

    from gpu_consumers.consumer import fault_code

    fault = pickle.loads(pickle.dumps(ValidatorFault("job_pose", "job_internal_error", "RuntimeError: boom")))
    assert (fault.reason_code, fault.stage_id, str(fault)) == ("job_internal_error", "job_pose",
                                                               "job_pose: RuntimeError: boom")
    assert fault_code(fault) == "job_internal_error"
    assert fault_code(ServiceError("renderer cannot start")) == "job_service_unavailable"
    assert fault_code(RuntimeError("actor died")) == "job_service_unavailable"
