"""The stage chain in-process (no broker): exactly the code the faust workers run, fed
real sample bundles from a real object-store directory through ``run_in_process``."""

from __future__ import annotations

import json
import uuid

import pytest

from kibotos.config.gates import load_config
from kibotos.reports.model import VerificationReport
from kibotos.robots import get_robot, list_robots
from kibotos.scoring import load_scoring_config, score_submission
from kibotos.synthetic.samples import EXPECTED, make_episode
from processors.base import gates
from streams.stages import (
    DecisionStage,
    GateStage,
    Output,
    Record,
    build_stages,
    ledger_entry_id,
    run_in_process,
    stage_inputs,
)
from tests.fixtures.stage_bundles import received_event
from topics.catalogue import Catalogue

CONFIG = load_config()
SCORING = load_scoring_config()
# the cheap chain alone: every soft component is missing, scored neutral by the policy
CHEAP_CHAIN_REWARD = score_submission({}, SCORING, passed=True).reward
GATE_IDS = [g.gate_id for g in gates()]
REVISIONS = dict(list_robots())
UR5, G1 = "ur5", "unitree_g1"
# failure classes of the cheap gates A-E; the others are caught by evidence jobs (GPU
# consumers), which these stages run only when configured
FAILURES = [v for v, exp in EXPECTED.items() if exp is not None and exp[0] in GATE_IDS]
EVIDENCE_FAILURES = [v for v, exp in EXPECTED.items() if exp is not None and exp[0] not in GATE_IDS]
# the G1 runs one failure class per gate (plus units)
G1_FAILURES = ["nan", "gap", "sync_lie", "degrees", "limit_violation", "teleport"]


@pytest.fixture
def catalogue() -> Catalogue:
    """No broker here: a fresh prefix only proves nothing depends on one topic name."""
    return Catalogue(prefix=f"t{uuid.uuid4().hex[:12]}.")


@pytest.fixture
def stages(catalogue, stage_bundles):
    return build_stages(catalogue, stage_bundles.store, CONFIG, SCORING)


class Tap:
    """A sink stage on one topic: ``run_in_process`` routes every record of ``input`` to
    each stage consuming it, so a tap sees exactly what a stage would consume there."""

    def __init__(self, spec):
        self.id = f"tap_{spec.id}"
        self.input = spec
        self.inputs = (spec,)
        self.outputs = ()
        self.seen: list[dict] = []

    def handle(self, record: Record) -> list[Output]:
        self.seen.append(self.input.deserialize(record.value))
        return []


def run(stages, catalogue, *events: dict | bytes, taps: dict | None = None) -> dict[str, list[dict]]:
    """Push received events (dicts, or raw bytes) through the chain; terminal outputs by
    topic id, each decoded from the bytes a worker would publish."""
    spec = catalogue.submissions_received
    first = [Record(spec.name, e if isinstance(e, bytes) else spec.serialize(e),
                    None if isinstance(e, bytes) else spec.key(e), partition=0, offset=i)
             for i, e in enumerate(events)]
    outputs = run_in_process(list(stages) + list((taps or {}).values()), first)
    by_topic: dict[str, list[dict]] = {}
    for out in outputs:
        record = out.topic.deserialize(out.value())
        if out.topic.key_field == "submission_id":
            assert out.key() == record["submission_id"].encode()
        by_topic.setdefault(out.topic.id, []).append(record)
    return by_topic


def pass_taps(catalogue) -> dict[str, Tap]:
    taps = {f"gates.{g}.passed": Tap(catalogue.gate_passed(g)) for g in "abcde"}
    taps["verification.rejected"] = Tap(catalogue.verification_rejected)
    return taps


def parsed_report(verdict: dict) -> VerificationReport:
    return VerificationReport.model_validate_json(verdict["report_json"])


def test_the_chain_is_one_stage_per_gate_then_dispatch_then_the_decision(stages):
    assert [s.processor_id for s in stages] == [*GATE_IDS, "evidence_dispatch", "decision"]
    gate_stages = stages[: len(GATE_IDS)]
    assert all(isinstance(s, GateStage) for s in gate_stages) and isinstance(stages[-1], DecisionStage)
    # each gate consumes its predecessor's pass topic, the first one the received topic
    assert [s.input.id for s in gate_stages] == ["submissions.received", *(f"gates.{g}.passed" for g in "abcd")]
    assert [s.passed.id for s in gate_stages] == [f"gates.{g}.passed" for g in "abcde"]
    # no evidence jobs configured: gate E's survivors go straight to the decision
    assert [spec.id for spec in stage_inputs(stages[-2])] == ["gates.e.passed"]
    assert [spec.id for spec in stage_inputs(stages[-1])] == ["evidence.completed", "verification.rejected"]


@pytest.mark.parametrize("robot", [UR5, G1])
def test_genuine_bundle_is_accepted_with_one_ledger_entry(stages, catalogue, stage_bundles, robot):
    event = stage_bundles.received(robot, "genuine")
    sid = event["submission_id"]
    taps = pass_taps(catalogue)
    out = run(stages, catalogue, event, taps=taps)

    assert set(out) == {"verdicts", "ledger.entries"}, out.get("dead.letters")
    [verdict] = out["verdicts"]
    assert (verdict["submission_id"], verdict["miner_id"], verdict["bundle_uri"]) == (sid, event["miner_id"],
                                                                                      event["bundle_uri"])
    assert (verdict["verdict"], verdict["reason_code"], verdict["failed_gate"]) == ("accepted", None, None)
    assert verdict["points"] == CHEAP_CHAIN_REWARD and verdict["config_version"] == CONFIG.config_version
    [entry] = out["ledger.entries"]
    assert entry["entry_id"] == ledger_entry_id(sid, "reward")
    assert (entry["submission_id"], entry["miner_id"], entry["kind"], entry["points"]) == (
        sid, event["miner_id"], "reward", CHEAP_CHAIN_REWARD)
    # the ledger records what the reward came from: S, components, weights, scoring config
    assert entry["config_version"] == SCORING.config_version and entry["score"] == 0.5
    assert {c["name"]: c["missing"] for c in json.loads(entry["components_json"])} == {
        n: True for n in ("pose", "retarget", "align", "task", "object", "novel")}
    assert sum(json.loads(entry["weights_json"]).values()) == pytest.approx(1.0)

    report = parsed_report(verdict)
    assert [g.gate for g in report.gates] == GATE_IDS and all(g.passed for g in report.gates)
    assert report.config_version == CONFIG.config_version and report.points == CHEAP_CHAIN_REWARD
    assert report.scores["reward"] == CHEAP_CHAIN_REWARD and report.scores["config_version"] == SCORING.config_version
    assert (report.robot_model_id, report.robot_model_revision) == (robot, REVISIONS[robot])
    assert report.sync.claimed_offset_ms is not None and report.sync.estimated_offset_ms is not None
    assert report.sync.sync_confidence is not None
    # it travelled every pass topic once, and was never rejected
    assert {topic: [e["submission_id"] for e in tap.seen] for topic, tap in taps.items()} == {
        **{f"gates.{g}.passed": [sid] for g in "abcde"}, "verification.rejected": []}
    # the in-flight event carries the results so far, one per gate
    assert [r["gate"] for r in taps["gates.c.passed"].seen[0]["gate_results"]] == GATE_IDS[:3]


@pytest.mark.parametrize("robot, variant",
                         [(UR5, v) for v in FAILURES] + [(G1, v) for v in G1_FAILURES],
                         ids=lambda x: x)
def test_failure_variant_is_rejected_at_its_gate(stages, catalogue, stage_bundles, robot, variant):
    gate, reason = EXPECTED[variant]
    failed_at = GATE_IDS.index(gate)
    event = stage_bundles.received(robot, variant)
    sid = event["submission_id"]
    taps = pass_taps(catalogue)
    out = run(stages, catalogue, event, taps=taps)

    assert set(out) == {"verdicts"}, out  # no ledger entry, no dead letter
    [verdict] = out["verdicts"]
    assert (verdict["verdict"], verdict["failed_gate"], verdict["reason_code"]) == ("rejected", gate, reason)
    assert verdict["points"] == 0.0 and verdict["submission_id"] == sid

    report = parsed_report(verdict)
    assert [g.gate for g in report.gates] == GATE_IDS[: failed_at + 1], "later gates must not run"
    assert [g.passed for g in report.gates] == [True] * failed_at + [False]
    assert report.gates[-1].reason_code == reason and report.gates[-1].thresholds
    assert (report.failed_gate, report.reason_code) == (gate, reason)
    assert report.config_version == CONFIG.config_version
    # gate C refuses a video too short to ever overlap enough before it estimates an offset
    if failed_at > GATE_IDS.index("gate_c_sync") or (failed_at == GATE_IDS.index("gate_c_sync")
                                                      and variant != "short_video"):
        assert report.sync.claimed_offset_ms is not None and report.sync.estimated_offset_ms is not None
    elif failed_at == GATE_IDS.index("gate_c_sync"):
        assert report.sync.claimed_offset_ms is not None
    else:
        assert report.sync.claimed_offset_ms is None
    seen = {topic: [e["submission_id"] for e in tap.seen] for topic, tap in taps.items()}
    assert seen == {**{f"gates.{g}.passed": [sid] if i < failed_at else [] for i, g in enumerate("abcde")},
                    "verification.rejected": [sid]}
    [rejected] = taps["verification.rejected"].seen
    assert (rejected["failed_gate"], rejected["reason_code"]) == (gate, reason)


@pytest.mark.parametrize("variant", EVIDENCE_FAILURES)
def test_evidence_stage_failures_pass_the_cheap_chain_when_no_evidence_job_is_configured(
        stages, catalogue, stage_bundles, variant):
    out = run(stages, catalogue, stage_bundles.received(UR5, variant))
    [verdict] = out["verdicts"]
    report = parsed_report(verdict)
    assert [(g.gate, g.passed) for g in report.gates] == [(g, True) for g in GATE_IDS]
    assert verdict["verdict"] == "accepted" and len(out["ledger.entries"]) == 1


@pytest.mark.parametrize("payload", [
    b"",
    b"\x00\xff garbage",
    b'{"submission_id": "s-1"}',
    b"K\x01\x02",  # right magic and version, truncated body
    None,  # a tombstone
], ids=["empty", "binary", "json", "truncated-avro", "tombstone"])
def test_undecodable_received_record_becomes_a_dead_letter(stages, catalogue, payload):
    spec = catalogue.submissions_received
    outputs = run_in_process(stages, [Record(spec.name, payload, b"k-1", partition=2, offset=7)])

    assert [o.topic.id for o in outputs] == ["dead.letters"]
    letter = catalogue.dead_letters.deserialize(outputs[0].value())
    assert letter["error_code"] == "undecodable_record" and letter["processor_id"] == "gate_a_integrity"
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (spec.name, 2, 7)
    assert (letter["key"], letter["payload"]) == (b"k-1", payload or b"")
    assert letter["error_message"]
    assert outputs[0].key() == b"k-1"  # dead letters keep the failed record's key


def test_garbage_on_every_stage_input_becomes_that_stages_dead_letter(stages, catalogue):
    dead = {}
    for stage in stages:
        for spec in stage_inputs(stage):
            outputs = run_in_process(stages, [Record(spec.name, b"\x13garbage", b"k")])
            assert [o.topic.id for o in outputs] == ["dead.letters"], spec.id
            letter = catalogue.dead_letters.deserialize(outputs[0].value())
            dead[spec.id] = (letter["processor_id"], letter["error_code"], letter["source_topic"])
    assert dead == {spec.id: (stage.processor_id, "undecodable_record", spec.name)
                    for stage in stages for spec in stage_inputs(stage)}
    assert len(dead) == len(GATE_IDS) + 3  # every gate, the dispatch, the decision's two inputs


def test_a_later_record_is_still_judged_after_a_dead_letter(stages, catalogue, stage_bundles):
    good = stage_bundles.received(UR5, "genuine")
    out = run(stages, catalogue, b"\x00poison", good)
    assert [d["error_code"] for d in out["dead.letters"]] == ["undecodable_record"]
    assert [v["verdict"] for v in out["verdicts"]] == ["accepted"]


@pytest.mark.parametrize("uri, reason", [
    ("file:///etc/passwd", "object_uri_invalid"),
    ("{root}/../outside.zarr.zip", "object_uri_invalid"),
    ("{root}/bundles/%2e%2e/%2e%2e/escape.zarr.zip", "object_uri_invalid"),
    ("s3://bucket/bundles/x.zarr.zip", "object_uri_invalid"),
    ("file://evil.example.com{path}/bundles/x.zarr.zip", "object_uri_invalid"),
    ("{root}/bundles/never-uploaded.zarr.zip", "bundle_not_found"),
    ("{root}/bundles", "bundle_not_found"),  # a directory is not an object
], ids=["etc-passwd", "dotdot", "encoded-dotdot", "s3-scheme", "remote-host", "missing", "directory"])
def test_bad_bundle_uri_is_rejected_with_a_reason_not_an_exception(stages, catalogue, stage_bundles, uri, reason):
    genuine = stage_bundles.received(UR5, "genuine")
    root = stage_bundles.store.root
    # a real bundle right next to the store: still refused
    (root.parent / "outside.zarr.zip").write_bytes(stage_bundles.store.local_path(genuine["bundle_uri"]).read_bytes())
    sid = str(uuid.uuid4())
    event = received_event(sid, uri.format(root=root.as_uri(), path=root))
    out = run(stages, catalogue, event)

    assert set(out) == {"verdicts"}, out
    [verdict] = out["verdicts"]
    assert (verdict["verdict"], verdict["failed_gate"], verdict["reason_code"]) == (
        "rejected", "gate_a_integrity", reason)
    report = parsed_report(verdict)
    assert [g.gate for g in report.gates] == ["gate_a_integrity"] and report.gates[0].metrics["error"]


def test_same_received_event_twice_gives_identical_ids(stages, catalogue, stage_bundles):
    """Stages are not idempotent themselves (the warehouse is): a redelivered event is
    judged again, with the same submission id, verdict and ledger entry id."""
    event = stage_bundles.received(UR5, "genuine")
    out = run(stages, catalogue, event, event)

    first, second = out["verdicts"]
    assert first["submission_id"] == second["submission_id"] == event["submission_id"]
    same = ("verdict", "reason_code", "failed_gate", "points", "config_version", "bundle_uri", "miner_id")
    assert {k: first[k] for k in same} == {k: second[k] for k in same}
    drop_wall = [[{k: v for k, v in g.items() if k != "metrics"} for g in json.loads(v["report_json"])["gates"]]
                 for v in (first, second)]
    assert drop_wall[0] == drop_wall[1]
    entries = out["ledger.entries"]
    assert len(entries) == 2
    assert {e["entry_id"] for e in entries} == {ledger_entry_id(event["submission_id"], "reward")}


def test_replayed_in_flight_record_keeps_one_result_per_gate(stages, catalogue, stage_bundles):
    """A record a gate already judged (redelivered after a crash) is judged again, and the
    event still holds one result per gate."""
    taps = pass_taps(catalogue)
    run(stages, catalogue, stage_bundles.received(UR5, "genuine"), taps=taps)
    judged_by_c = taps["gates.c.passed"].seen[0]
    # gate C's own output fed back into gate C (as if its input offset was never committed)
    gate_c = next(s for s in stages if s.processor_id == "gate_c_sync")
    replay = Record(gate_c.input.name, gate_c.input.serialize(judged_by_c))
    [again] = gate_c.handle(replay)
    assert again.topic.id == "gates.c.passed"
    assert [r["gate"] for r in again.record["gate_results"]] == GATE_IDS[:3]


def test_ledger_entry_id_is_deterministic_per_submission_and_kind():
    assert ledger_entry_id("s-1", "reward") == ledger_entry_id("s-1", "reward")
    assert len({ledger_entry_id("s-1", "reward"), ledger_entry_id("s-2", "reward"),
                ledger_entry_id("s-1", "bonus")}) == 3
    uuid.UUID(ledger_entry_id("s-1", "reward"))


def test_a_measured_secondary_camera_multiplies_the_reward(stages, catalogue, stage_bundles):
    """The align job's secondary camera quality q reaches the decision: a Panda episode
    filmed from a second side, through gates A-E, then the real align job on the bundle;
    the decision pays ``reward(S) * (1 + k q)``, and the same evidence without the camera
    pays ``reward(S)``."""
    from gpu_consumers.alignment import check_alignment
    from kibotos.bundle import open_bundle
    from kibotos.config.alignment import load_alignment_config
    from kibotos.scoring import reward
    from streams.in_flight import parse_result
    from streams.stages import advance

    ep = make_episode(get_robot("franka_panda", REVISIONS["franka_panda"]), seed=0, miner_id="miner-multi",
                      secondary_cameras=("side",))
    sid = ep.manifest["submission_id"]
    stored = stage_bundles.store.put_file(ep.write(stage_bundles.root / "written" / "multi.zarr.zip"), f"bundles/{sid}.zarr.zip")
    completed = Tap(catalogue.evidence_completed)
    run(stages, catalogue, received_event(sid, stored.uri, miner_id="miner-multi", robot="franka_panda"),
        taps={"completed": completed})
    [event] = completed.seen
    with open_bundle(stage_bundles.store.local_path(stored.uri)) as view:
        align = check_alignment(view, event, stage_bundles.store, load_alignment_config(), None)
    q = align.metrics["angle_quality_sum"]
    assert align.passed and q == align.metrics["secondary_cameras"]["side"]["quality"] > 0.5
    mono_align = align.model_copy(update={"metrics": {**align.metrics, "secondary_cameras": {},
                                                      "angle_quality_sum": 0.0}})

    decision = stages[-1]
    paid = {}
    for name, res in (("multi", align), ("mono", mono_align)):
        [out] = advance(catalogue, dict(event), res, catalogue.evidence_completed)
        outputs = decision.handle(Record(out.topic.name, out.value(), out.key()))
        verdict = next(o.record for o in outputs if o.topic.id == "verdicts")
        [entry] = [o.record for o in outputs if o.topic.id == "ledger.entries"]
        assert verdict["verdict"] == "accepted" and entry["points"] == verdict["points"]
        results = [parse_result(r) for r in out.record["gate_results"]]
        assert [r.gate for r in results] == [*GATE_IDS, "alignment"]
        paid[name] = (verdict["points"], parsed_report(verdict).scores, results)

    points, scores, results = paid["multi"]
    k = SCORING.reward.multi_angle_k
    assert scores["angle_quality_sum"] == q and scores["angle_multiplier"] == pytest.approx(1 + k * q, abs=1e-6)
    assert points == score_submission({r.gate: r for r in results}, SCORING, passed=True, angle_quality_sum=q).reward
    assert points == pytest.approx(reward(True, scores["score"], SCORING) * (1 + k * q), abs=1e-5)
    mono_points, mono_scores, _ = paid["mono"]
    assert mono_scores["score"] == scores["score"] and mono_scores["angle_multiplier"] == 1.0
    assert mono_points == pytest.approx(reward(True, scores["score"], SCORING), abs=1e-5)
    assert points == pytest.approx(mono_points * (1 + k * q), abs=1e-4) and points > mono_points
