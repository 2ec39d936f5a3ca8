"""The align job: sim-vs-real keyframe similarity against a shuffled baseline, video motion
vs joint speed, the VLM as an optional calibrated instrument, combined into ``s_align``.

Real components throughout: sample bundles (``kibotos.synthetic.samples``), the Genesis playback job
storing real/sim PNG pairs in a real object-store directory, EfficientNet-Lite0 embeddings,
PyAV decoding; the only stand-in is the VLM endpoint (``tests.fixtures.vlm_stub``). The
Panda scene is built once per session (``panda_renderer``, shared with the playback
tests), each variant is replayed once (``played``), and scored without a VLM once
(``results``).

Misaligned variants of one genuine episode (same kinematics or same video, so only their
pairing is wrong): its video swapped with another episode's, its kinematics
time-reversed, and its kinematics delayed by ``SHIFT_MS``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from gpu_consumers.alignment import (
    GATE_ID,
    MISMATCH_CODE,
    REJECT_CODE,
    Pair,
    check_alignment,
    misaligned,
    pair_auc,
    vlm_evidence,
)
from gpu_consumers.jobs import make_handler
from gpu_consumers.playback import run_playback
from kibotos.bundle import open_bundle
from kibotos.config.alignment import DEFAULT_PATH, load_alignment_config, parse_alignment_config
from kibotos.config.gates import load_config
from kibotos.config.settings import Settings
from kibotos.objectstore import LocalObjectStore
from kibotos.reports.model import GateResult
from kibotos.robots import get_robot
from kibotos.synthetic.samples import Episode
from kibotos.vlm import PROMPT_VERSION
from kibotos.vlm.openai_compat import OpenAICompatProvider
from streams.in_flight import InFlight
from streams.stages import JobStage, Record, advance
from tests.fixtures.episodes import PANDA, small_bundle
from tests.fixtures.vlm_stub import keyframe_pairs
from topics.catalogue import Catalogue

CONFIG = load_alignment_config()
SHIFT_MS = 1500.0
MISALIGNED = ("swapped_video", "reversed", "shifted")
MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


# --- pure pieces ---------------------------------------------------------------------------

def test_pair_auc_against_the_shuffled_baseline():
    sim = np.array([[0.9, 0.2, 0.1],
                    [0.3, 0.8, 0.8],
                    [0.1, 0.5, 0.4]])
    auc, baseline, n = pair_auc(sim, np.ones((3, 3), bool))
    # pair 0 beats all 4 mismatches; pair 1 beats 0.3, 0.2, 0.5, ties 0.8; pair 2 beats 0.1, 0.1, loses to 0.8, 0.5
    assert auc.tolist() == pytest.approx([1.0, 0.875, 0.5])
    assert baseline.tolist() == pytest.approx([(0.2 + 0.1 + 0.3 + 0.1) / 4, (0.3 + 0.8 + 0.2 + 0.5) / 4,
                                               (0.1 + 0.5 + 0.1 + 0.8) / 4])
    assert n.tolist() == [4, 4, 4]
    # pairs 0 and 1 share a pose: neither is the other's mismatch
    comparable = np.ones((3, 3), bool)
    comparable[0, 1] = comparable[1, 0] = False
    auc, _, n = pair_auc(sim, comparable)
    assert n.tolist() == [2, 2, 4] and auc[0] == 1.0 and auc[1] == pytest.approx(0.75)
    auc, baseline, n = pair_auc(sim, np.zeros((3, 3), bool))
    assert np.isnan(auc).all() and np.isnan(baseline).all() and n.tolist() == [0, 0, 0]


def test_the_reject_rule_needs_every_measure_against_alignment():
    rej = CONFIG.reject
    image = {"pairs": 10, "embedding_auc": 0.3, "silhouette_auc": 0.4}
    motion = {"corr": -0.6}
    assert misaligned(image, motion, rej)
    assert not misaligned(image, {"corr": -0.2}, rej)  # motion not strongly negative
    assert not misaligned(image | {"silhouette_auc": 0.7}, motion, rej)  # one image measure sees alignment
    assert not misaligned(image | {"pairs": rej.min_pairs - 1}, motion, rej)  # too few pairs
    assert not misaligned({"pairs": 0}, motion, rej)  # missing evidence never rejects
    assert not misaligned(image, {"corr": None}, rej)


def test_packaged_config_is_versioned_and_uncalibrated():
    assert CONFIG.config_version.startswith("alignment-")
    assert CONFIG.vlm.calibration_for(MODEL, PROMPT_VERSION).status == "uncalibrated"
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["images"]["auc_hi"] = raw["images"]["auc_lo"]
    with pytest.raises(Exception, match="auc_hi"):
        parse_alignment_config(raw)


def test_an_uncalibrated_vlm_answer_gets_the_smaller_weight(vlm_stub, tmp_path):
    path = small_bundle(tmp_path / "b.zarr.zip", get_robot(*PANDA))  # declares no task
    pngs = keyframe_pairs(10)
    pairs = [Pair(p.frame, p.kin_time_ms, "uniform", np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1, 3), np.uint8),
                  p.real_png, p.sim_png, None) for p in pngs]
    provider = OpenAICompatProvider(vlm_stub.url, MODEL, config=CONFIG.vlm, timeout_s=5.0, max_retries=0)
    with open_bundle(path) as view:
        out = vlm_evidence(provider, pairs, view, CONFIG)
    assert out["status"] == "ok" and out["calibration"]["status"] == "uncalibrated"
    assert out["calibrated_confidence"] is None and out["confidence_used"] == 0.8
    assert out["weight"] == CONFIG.vlm.uncalibrated_weight < CONFIG.vlm.weight
    assert out["term"] == pytest.approx(0.5 + 0.4 * 0.8)
    [req] = vlm_stub.requests
    sent = req.images()
    assert len(sent) == 2 * CONFIG.vlm.max_pairs  # evenly spread, both ends kept
    assert "Pair 1 (video frame 0," in req.text() and "(video frame 90," in req.text()
    assert "No task schema is declared" in req.text()


# --- the job on real playback pairs ----------------------------------------------------------

def variants(genuine: Episode, other: Episode) -> dict[str, Episode]:
    n = len(genuine.joint_pos)
    rate = genuine.manifest["sampling_rate_hz"]
    delayed = np.clip(np.arange(n) - int(round(SHIFT_MS * rate / 1000.0)), 0, n - 1)  # hold the first pose
    return {
        "genuine": genuine,
        "swapped_video": replace(genuine, video_mp4=other.video_mp4,
                                 manifest={**genuine.manifest, "video": other.manifest["video"]}),
        "reversed": replace(genuine, joint_pos=genuine.joint_pos[::-1].copy(), joint_vel=-genuine.joint_vel[::-1]),
        "shifted": replace(genuine, joint_pos=genuine.joint_pos[delayed], joint_vel=genuine.joint_vel[delayed]),
    }


def in_flight(name: str, uri: str, offset_ms: float) -> dict:
    """A ``submission_in_flight`` event as the evidence jobs receive it (no gate results yet)."""
    return {"submission_id": f"sub-{name}", "miner_id": "miner-sample", "bundle_uri": uri, "bundle_sha256": "0" * 64,
            "bundle_size_bytes": 1, "received_at": int(time.time() * 1000), "robot_model_id": PANDA[0],
            "robot_model_revision": PANDA[1], "task_id": None, "config_version": "gates-test", "gate_results": [],
            "sync": {"claimed_offset_ms": offset_ms, "estimated_offset_ms": None, "sync_confidence": None}}


@dataclass
class Played:
    path: Path
    event: dict  # with the playback result appended, as the playback job forwards it
    playback: GateResult


@pytest.fixture(scope="module")
def played(panda_renderer, samples, tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    store = LocalObjectStore(root / "store")
    cat = Catalogue()
    genuine = samples.episode(PANDA)
    out = {}
    for name, ep in variants(genuine, samples.episode(PANDA, seed=1)).items():
        stored = store.put_file(ep.write(root / f"{name}.zarr.zip"), f"bundles/{name}.zarr.zip")
        path = store.local_path(stored.uri)
        with open_bundle(path) as view:
            pb = run_playback(view, genuine.true_offset_ms, panda_renderer, store, f"keyframes/{name}")
        assert pb.passed, (name, pb.metrics)
        [fwd] = advance(cat, in_flight(name, stored.uri, genuine.true_offset_ms), pb, cat.job("align"))
        out[name] = Played(path, fwd.record, pb)
    return store, out


@pytest.fixture(scope="module")
def results(played) -> dict[str, GateResult]:
    store, bundles = played
    out = {}
    for name, p in bundles.items():
        with open_bundle(p.path) as view:
            out[name] = check_alignment(view, p.event, store, CONFIG, None)
    return out


def test_genuine_scores_higher_than_every_misaligned_pairing(results):
    s = {name: res.metrics["s_align"] for name, res in results.items()}
    assert all(res.gate == GATE_ID for res in results.values()) and results["genuine"].passed
    # the misaligned pairings are confidently not this trajectory: rejected, their score still reported
    for name in MISALIGNED:
        assert (results[name].passed, results[name].reason_code) == (False, MISMATCH_CODE), results[name].metrics
        assert results[name].metrics["mismatch"]["findings"], name
    assert s["genuine"] >= 0.75, results["genuine"].metrics
    for name in MISALIGNED:
        assert s[name] <= 0.6 and s["genuine"] - s[name] >= 0.3, (name, s)


def test_image_pairs_beat_the_shuffled_baseline_only_when_aligned(played, results):
    img = {name: res.metrics["image"] for name, res in results.items()}
    g = img["genuine"]
    assert g["pairs"] >= 10 and g["comparisons"] > 100
    assert g["silhouette_auc"] >= 0.8 and g["embedding_auc"] >= 0.6
    assert g["silhouette_margin"] > 0.05 and g["embedding_margin"] > 0
    for name in MISALIGNED:
        assert img[name]["silhouette_auc"] <= 0.7 and img[name]["silhouette_auc"] < g["silhouette_auc"] - 0.2, name
        assert img[name]["term"] < g["term"] - 0.4, name
    # per keyframe, in the playback job's order
    keyframes = results["genuine"].metrics["keyframes"]
    stored = played[1]["genuine"].playback.metrics["keyframes"]
    assert [k["frame"] for k in keyframes] == [e["frame"] for e in stored if e["real_uri"]]
    assert [k["playback_silhouette_iou"] for k in keyframes] == [e["silhouette_iou"] for e in stored if e["real_uri"]]
    assert np.mean([k["silhouette_iou"] > k["silhouette_iou_shuffled"] for k in keyframes]) >= 0.9


def test_motion_follows_the_kinematics_at_the_sync_offset(results, samples):
    offset = samples.episode(PANDA).true_offset_ms
    m = {name: res.metrics["motion"] for name, res in results.items()}
    g = m["genuine"]
    assert g["corr"] >= 0.6 and abs(g["best_lag_ms"]) <= 60 and g["overlap_ms"] > 7000
    assert g["sync_offset_ms"] == pytest.approx(offset, abs=1e-3)
    # the delayed kinematics: best matched SHIFT_MS earlier on the video clock
    assert m["shifted"]["corr"] < g["corr"] - 0.3
    assert m["shifted"]["best_offset_ms"] == pytest.approx(offset - SHIFT_MS, abs=60)
    assert m["shifted"]["best_corr"] >= 0.6
    assert m["reversed"]["corr"] < g["corr"] - 0.2


def test_without_a_vlm_the_report_says_not_configured(results):
    res = results["genuine"]
    m = res.metrics
    assert m["vlm"] == {"status": "not_configured"} and "vlm_not_configured" in res.flags
    assert m["vlm_task_success"] is None and m["vlm_task_confidence"] is None
    assert m["basis"] == ["image", "motion"] and m["terms"]["vlm"] is None and m["applicable"] is True
    assert m["config_version"] == CONFIG.config_version and res.thresholds["images"]["auc_lo"] == CONFIG.images.auc_lo
    w = CONFIG.combine.weights
    expected = (w.image * m["terms"]["image"] + w.motion * m["terms"]["motion"]) / (w.image + w.motion)
    assert m["s_align"] == pytest.approx(expected, abs=1e-4) and m["s_evidence"] == m["s_align"]


def test_without_playback_pairs_motion_alone_decides(played, results):
    store, bundles = played
    g = bundles["genuine"]
    no_playback = dict(g.event, gate_results=[r for r in g.event["gate_results"] if r["gate"] != "playback"])
    # every keyframe past the end of the video: playback stored sim frames only
    sim_only = g.playback.model_copy(update={"metrics": dict(
        g.playback.metrics, keyframes=[dict(e, real_uri=None) for e in g.playback.metrics["keyframes"]])})
    cat = Catalogue()
    [fwd] = advance(cat, dict(no_playback), sim_only, cat.job("align"))
    with open_bundle(g.path) as view:
        for event, why in ((no_playback, "no playback result"), (fwd.record, "no keyframe pair with a real frame")):
            res = check_alignment(view, event, store, CONFIG, None)
            m = res.metrics
            assert res.passed and m["applicable"] and m["basis"] == ["motion"]
            assert m["s_align"] == results["genuine"].metrics["terms"]["motion"]
            assert why in m["reasons"]["image"] and "image_evidence_missing" in res.flags


def test_no_evidence_at_all_is_not_applicable(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    path = small_bundle(tmp_path / "still.zarr.zip", get_robot(*PANDA))  # 4 video frames, a still arm
    with open_bundle(path) as view:
        res = check_alignment(view, in_flight("still", path.as_uri(), 0.0), store, CONFIG, None)
    m = res.metrics
    assert res.passed and m["applicable"] is False and m["s_align"] is None
    assert "no alignment evidence" in m["reason"] and set(m["reasons"]) == {"image", "motion"}
    assert m["vlm"] == {"status": "not_configured"}


def test_the_extreme_case_rejects_and_genuine_does_not(played, results):
    store, bundles = played
    sh = results["shifted"].metrics
    # a stricter rule than the packaged one (which keeps every variant here a soft score):
    # weak motion correlation and image pairs near the shuffled baseline
    assert sh["motion"]["corr"] < 0.5 and max(sh["image"]["embedding_auc"], sh["image"]["silhouette_auc"]) < 0.65
    strict = CONFIG.model_copy(update={"reject": CONFIG.reject.model_copy(
        update={"max_motion_corr": 0.5, "max_image_auc": 0.65})})
    assert not misaligned(results["genuine"].metrics["image"], results["genuine"].metrics["motion"], strict.reject)
    with open_bundle(bundles["shifted"].path) as view:
        res = check_alignment(view, bundles["shifted"].event, store, strict, None)
    assert not res.passed and res.reason_code == REJECT_CODE
    assert res.metrics["s_align"] == sh["s_align"]  # the score is still reported
    # under the packaged thresholds: not anti-correlated, but confidently not this video
    assert results["shifted"].reason_code == MISMATCH_CODE


# --- through the job handler, with the VLM stand-in ----------------------------------------

@pytest.fixture
def vlm_env(monkeypatch, vlm_stub, tmp_path):
    """KIBOTOS_VLM_* pointing at the stub; an alignment config whose table calibrates
    (MODEL, PROMPT_VERSION)."""
    raw = yaml.safe_load(DEFAULT_PATH.read_text())
    raw["config_version"] = "alignment-test.1"
    raw["vlm"]["calibration"] = [{"model": MODEL, "prompt_version": PROMPT_VERSION, "samples": 400,
                                  "accuracy": 0.86, "ece": 0.07, "platt_a": 0.6, "platt_b": -0.3,
                                  "measured_on": "test table"}]
    path = tmp_path / "alignment.yaml"
    path.write_text(yaml.safe_dump(raw))
    for key, value in {"VLM_PROVIDER": "openai", "VLM_BASE_URL": vlm_stub.url, "VLM_MODEL": MODEL,
                       "VLM_TIMEOUT_S": "10", "VLM_MAX_RETRIES": "0", "ALIGNMENT_CONFIG_PATH": str(path)}.items():
        monkeypatch.setenv(f"KIBOTOS_{key}", value)
    return vlm_stub


def _through_the_job(store, event) -> GateResult:
    cat = Catalogue()
    plan = ("playback", "align")
    # the settings read KIBOTOS_VLM_* (vlm_env); the handler only gets them
    stage = JobStage("align", make_handler("align", load_config(), store, Settings()), cat, store, plan)
    [out] = stage.handle(Record(cat.job("align").name, cat.job("align").serialize(event)))
    assert out.topic == cat.evidence_completed
    decoded = cat.evidence_completed.deserialize(out.value())
    return InFlight.from_record(decoded).result(GATE_ID)


def test_vlm_answer_is_blended_through_the_job_handler(played, results, vlm_env):
    store, bundles = played
    res = _through_the_job(store, bundles["genuine"].event)
    m = res.metrics
    vlm = m["vlm"]
    assert res.passed and vlm["status"] == "ok" and "vlm_not_configured" not in res.flags
    assert vlm["provider"] == "openai" and vlm["model"] == MODEL and vlm["prompt_version"] == PROMPT_VERSION
    assert vlm["calibration"]["status"] == "calibrated" and vlm["calibration"]["samples"] == 400
    assert vlm["usage"]["total_tokens"] == 2406 and vlm["latency_ms"] > 0
    assert m["config_version"] == "alignment-test.1" and m["basis"] == ["image", "motion", "vlm"]
    c = vlm["calibrated_confidence"]
    assert c == pytest.approx(1 / (1 + np.exp(-(0.6 * np.log(0.8 / 0.2) - 0.3))))
    assert vlm["term"] == pytest.approx(0.5 + (0.9 - 0.5) * c, abs=1e-4) and vlm["weight"] == CONFIG.vlm.weight
    assert m["s_evidence"] == pytest.approx(results["genuine"].metrics["s_align"], abs=1e-3)
    assert m["s_align"] == pytest.approx((1 - 0.3) * m["s_evidence"] + 0.3 * vlm["term"], abs=1e-3)
    assert m["vlm_task_success"] is True and m["vlm_task_confidence"] == pytest.approx(c, abs=1e-4)
    assert m["vlm_phases_observed"] == ["grasp", "lift", "transport", "place", "release"]
    # what the endpoint got: max_pairs evenly spread pairs (real, sim), the prompt version, the task
    [req] = vlm_env.requests
    assert len(req.images()) == 2 * CONFIG.vlm.max_pairs == vlm["images_sent"]
    assert req.headers["X-Kibotos-Prompt-Version"] == PROMPT_VERSION
    assert '"task_id": "pick_place"' in req.text() and "franka_panda@fer-v1" in req.text()
    # the scorer reads this very result: S_task blends the VLM's task verdict in
    from kibotos.scoring import load_scoring_config, s_task

    cfg = load_scoring_config()
    task = GateResult(gate="task_completion", passed=True, metrics={"applicable": True, "checklist_fraction": 0.5,
                                                                     "phase_order_ok": True, "s_task_evidence": 1.0})
    comp = s_task({"task_completion": task, GATE_ID: res}, cfg)
    assert comp.inputs["basis"] == ["kinematic", "vlm"] and comp.inputs["vlm_calibrated"] is True
    assert comp.value == pytest.approx(0.5 + cfg.components.task.vlm_weight * c * 0.5, abs=1e-4)


def test_a_failed_vlm_call_is_recorded_never_invented(played, results, vlm_env):
    store, bundles = played
    vlm_env.mode = "malformed"
    res = _through_the_job(store, bundles["genuine"].event)
    m = res.metrics
    assert res.passed and m["vlm"]["status"] == "malformed" and m["vlm"]["answer"] is None
    assert "vlm_malformed" in res.flags and "not JSON" in m["reasons"]["vlm"]
    assert m["vlm_task_success"] is None and m["terms"]["vlm"] is None and m["basis"] == ["image", "motion"]
    assert m["s_align"] == pytest.approx(results["genuine"].metrics["s_align"], abs=1e-3)
