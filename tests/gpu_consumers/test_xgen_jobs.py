"""The XGen job stages without a broker: records pushed through every stage in-process
(``streams.stages.run_in_process``), artifacts in a real local object store.

The clip quality judge and the Genesis preview are replaced by recording functions here
(the verifier's chain and the renderer are tested on their own, and the judge in the
integration test); everything else is the real stage logic."""

from __future__ import annotations

import io
import json
import time
import uuid

import numpy as np
import pytest

from gpu_consumers.xgen_jobs import JOB_KINDS, Judgement, XGenStage
from kibotos.objectstore import LocalObjectStore
from kibotos.xgen.config import load_xgen_config
from kibotos.xgen.export import CLIP_KEYS
from kibotos.xgen.skeleton import write_keypoints
from kibotos.xgen.synth import cargo_pickup
from streams.stages import Record, run_in_process
from topics.catalogue import XGEN_STAGES, Catalogue

N_VARIANTS = 4  # base + 2 sizes + mirror: enough to see one record per clip


@pytest.fixture(scope="module")
def small_cfg():
    cfg = load_xgen_config()
    aug = cfg.augment.model_copy(update={"size_scales": (0.85, 1.15), "yaw_offsets_deg": (), "masses_kg": (),
                                         "speeds": (), "mirror": True, "base_offsets_m": (), "min_clips": 3})
    return cfg.model_copy(update={"augment": aug})


@pytest.fixture(scope="module")
def keypoints_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("kp") / "pickup.npz"
    write_keypoints(path, cargo_pickup(duration_s=3.0, fps=30.0).motion)
    return path.read_bytes()


def judged(calls):
    def quality(folder, cfg):
        calls.append(folder.name)
        arrays = np.load(folder / "clip.npz")
        ok = set(arrays.files) == set(CLIP_KEYS)
        return Judgement(passed=ok, verdict="accepted" if ok else "rejected", score=0.9 if ok else None,
                         reason_code=None if ok else "keys", details={"keys": arrays.files})
    return quality


def previewed(folder, source_video):
    """Stands in for the Genesis preview (``kibotos.xgen.preview``, tested on its own)."""
    path = folder / "preview.mp4"
    path.write_bytes(b"preview of " + folder.name.encode())
    return {"preview": path}


def request_record(cat, store, data: bytes, kind: str = "keypoints", annotation=None) -> tuple[str, Record]:
    rid = str(uuid.uuid4())
    stored = store.put_bytes(data, f"xgen/{rid}/source.npz")
    spec = cat.get("xgen.requests")
    rec = {"request_id": rid, "uploader": "miner-x", "task_id": "cargo_pickup", "task_version": "1",
           "source_kind": kind, "source_uri": stored.uri, "source_sha256": stored.sha256,
           "source_size_bytes": stored.size_bytes, "annotation_json": json.dumps(annotation) if annotation else None,
           "requested_at": int(time.time() * 1000)}
    return rid, Record(spec.name, spec.serialize(rec), spec.key(rec))


def stages(cat, store, cfg, calls):
    return [XGenStage(s, cat, store, cfg, quality=judged(calls), preview=previewed) for s in XGEN_STAGES]


def by_topic(outputs):
    out = {}
    for o in outputs:
        out.setdefault(o.topic.id, []).append(o.record)
    return out


def test_every_stage_is_a_job_kind():
    assert JOB_KINDS == tuple(f"xgen_{s}" for s in XGEN_STAGES)
    cat = Catalogue("t.")
    names = [XGenStage(s, cat, None, load_xgen_config()).input.id for s in XGEN_STAGES]
    assert names == ["xgen.requests", "xgen.jobs.retarget", "xgen.jobs.interaction", "xgen.jobs.augment",
                     "xgen.jobs.export"]


@pytest.mark.parametrize("kind", JOB_KINDS)
def test_every_xgen_kind_is_registered_and_builds_its_stage(kind, tmp_path):
    from gpu_consumers.registry import get_job, job_specs
    from kibotos.config.settings import Settings
    from kibotos.objectstore import store_from_settings
    from streams.stage import Stage

    assert [s.kind for s in job_specs("xgen")] == list(JOB_KINDS)
    spec = get_job(kind)
    settings = Settings(home=tmp_path, object_store_url=(tmp_path / "objects").as_uri())
    cat = Catalogue.from_settings(settings)
    stage = spec.build_stage(settings, cat, store_from_settings(settings))
    assert isinstance(stage, Stage) and stage.inputs == (cat.get(spec.input_topic),) and stage.id == f"job_{kind}"
    assert set(Settings().xgen_jobs) == set(JOB_KINDS)


def test_request_becomes_one_clip_per_variant(tmp_path, small_cfg, keypoints_bytes):
    cat, store, calls = Catalogue("t."), LocalObjectStore(tmp_path / "objects"), []
    rid, first = request_record(cat, store, keypoints_bytes)
    out = by_topic(run_in_process(stages(cat, store, small_cfg, calls), [first]))
    assert "xgen.rejected" not in out and "dead.letters" not in out
    clips = out["xgen.clips"]
    assert len(clips) == N_VARIANTS and sorted(c["clip_index"] for c in clips) == list(range(N_VARIANTS))
    assert len({c["clip_id"] for c in clips}) == N_VARIANTS and sorted(calls) == sorted(c["clip_id"] for c in clips)
    assert {c["variant_kind"] for c in clips} == {"base", "size", "mirror"}
    for c in clips:
        assert c["verified"] and c["quality_verdict"] == "accepted" and c["uploader"] == "miner-x"
        arrays = np.load(io.BytesIO(store.read_bytes(c["clip_uri"], 1 << 26)))
        assert set(arrays.files) == set(CLIP_KEYS) and len(arrays["robot_qpos"]) == c["frames"]
        assert store.read_bytes(c["preview_uri"], 1 << 10) == b"preview of " + c["clip_id"].encode()
        meta = json.loads(store.read_bytes(c["metadata_uri"], 1 << 20))
        assert meta["uploader"] == "miner-x" and meta["quality"]["verdict"] == "accepted"
        assert set(meta["stage_metrics"]) == {"pose", "retarget", "interaction", "augment"}
        assert meta["augmentation"]["kind"] == c["variant_kind"]
    progress = out["xgen.progress"]
    # one record per request-level stage, one export record per clip, all passed
    assert sorted(p["stage"] for p in progress if p["clip_index"] == -1) == sorted(XGEN_STAGES[:-1])
    assert sum(p["stage"] == "export" for p in progress) == N_VARIANTS and all(p["passed"] for p in progress)
    augment = next(p for p in progress if p["stage"] == "augment")
    assert augment["clip_count"] == N_VARIANTS and all(p["wall_ms"] > 0 for p in progress)
    # intermediate arrays live in the object store under the request, never in events
    keys = {o.key for o in store.list(f"xgen/{rid}/")}
    assert {f"xgen/{rid}/{n}" for n in ("pose.npz", "retarget.npz", "interaction.npz")} <= keys
    assert sum(k.startswith(f"xgen/{rid}/variants/") for k in keys) == N_VARIANTS


def test_redelivered_request_gives_the_same_clips(tmp_path, small_cfg, keypoints_bytes):
    cat, store = Catalogue("t."), LocalObjectStore(tmp_path / "objects")
    _, first = request_record(cat, store, keypoints_bytes)
    runs = [by_topic(run_in_process(stages(cat, store, small_cfg, []), [first]))["xgen.clips"] for _ in range(2)]
    ids = [sorted((c["clip_id"], c["clip_uri"]) for c in r) for r in runs]
    assert ids[0] == ids[1]


@pytest.mark.parametrize("payload, kind, code", [
    (b"not an npz", "keypoints", "xgen_keypoints_invalid"),
    (b"PK\x03\x04 a damaged zip", "keypoints", "xgen_keypoints_invalid"),
    ("pixels", "keypoints", "xgen_keypoints_units"),
    (b"\x00" * 64, "video", "xgen_video_unreadable"),
    (b"{}", "motion_capture", "xgen_source_kind_invalid"),
])
def test_bad_source_is_refused_with_its_reason(tmp_path, small_cfg, keypoints_bytes, payload, kind, code):
    if payload == "pixels":  # keypoints in pixels, not metres
        buf = io.BytesIO()
        np.savez(buf, keypoints=np.full((30, 33, 3), 320.0), fps=np.float64(30))
        payload = buf.getvalue()
    cat, store = Catalogue("t."), LocalObjectStore(tmp_path / "objects")
    rid, first = request_record(cat, store, payload, kind=kind)
    out = by_topic(run_in_process(stages(cat, store, small_cfg, []), [first]))
    assert set(out) == {"xgen.rejected", "xgen.progress"}
    (rej,), (prog,) = out["xgen.rejected"], out["xgen.progress"]
    assert rej["failed_stage"] == "pose" and rej["reason_code"] == code and rej["request_id"] == rid
    assert prog["passed"] is False and prog["reason_code"] == code and prog["stage"] == "pose"
    assert rej["stage_results"][-1]["reason_code"] == code


def test_undecodable_record_is_a_dead_letter(tmp_path, small_cfg):
    cat = Catalogue("t.")
    stage = XGenStage("retarget", cat, LocalObjectStore(tmp_path), small_cfg)
    (out,) = stage.handle(Record(cat.get("xgen.jobs.retarget").name, b"garbage", b"k"))
    assert out.topic.id == "dead.letters" and out.record["processor_id"] == "job_xgen_retarget"


def test_missing_artifact_is_refused(tmp_path, small_cfg, keypoints_bytes):
    cat, store = Catalogue("t."), LocalObjectStore(tmp_path / "objects")
    _, first = request_record(cat, store, keypoints_bytes)
    (to_retarget, _) = XGenStage("pose", cat, store, small_cfg).handle(first)
    store.delete(to_retarget.record["artifacts"]["pose"].split("/objects/", 1)[1])
    rec = Record(to_retarget.topic.name, to_retarget.value(), to_retarget.key())
    outs = by_topic(XGenStage("retarget", cat, store, small_cfg).handle(rec))
    assert outs["xgen.rejected"][0]["reason_code"] == "xgen_artifact_missing"


def test_bad_annotation_is_refused_by_interaction(tmp_path, small_cfg, keypoints_bytes):
    cat, store = Catalogue("t."), LocalObjectStore(tmp_path / "objects")
    _, first = request_record(cat, store, keypoints_bytes, annotation=["not", "an", "object"])
    out = by_topic(run_in_process(stages(cat, store, small_cfg, []), [first]))
    assert out["xgen.rejected"][0]["failed_stage"] == "interaction"
    assert out["xgen.rejected"][0]["reason_code"] == "xgen_annotation_invalid"


def _through(cat, store, cfg, first, upto: str):
    """Run the stages before ``upto`` and return the records ``upto`` would consume."""
    records = [first]
    for name in XGEN_STAGES[:XGEN_STAGES.index(upto)]:
        stage = XGenStage(name, cat, store, cfg, quality=judged([]), preview=previewed)
        records = [Record(o.topic.name, o.value(), o.key()) for r in records for o in stage.handle(r)
                   if o.topic.id.startswith("xgen.jobs.")]
    return records


def test_augment_refuses_too_few_clips(tmp_path, small_cfg, keypoints_bytes):
    cat, store = Catalogue("t."), LocalObjectStore(tmp_path / "objects")
    _, first = request_record(cat, store, keypoints_bytes)
    (rec,) = _through(cat, store, small_cfg, first, "augment")
    strict = small_cfg.model_copy(update={"augment": small_cfg.augment.model_copy(update={"min_clips": 50})})
    out = by_topic(XGenStage("augment", cat, store, strict).handle(rec))
    assert "xgen.jobs.export" not in out
    (rej,) = out["xgen.rejected"]
    assert (rej["failed_stage"], rej["reason_code"]) == ("augment", "xgen_too_few_clips")
    assert json.loads(rej["stage_results"][-1]["metrics_json"])["variants"] == N_VARIANTS


def test_export_refuses_a_damaged_variant_and_the_request_still_finishes(tmp_path, small_cfg, keypoints_bytes):
    cat, store = Catalogue("t."), LocalObjectStore(tmp_path / "objects")
    _, first = request_record(cat, store, keypoints_bytes)
    records = _through(cat, store, small_cfg, first, "export")
    assert len(records) == N_VARIANTS
    damaged = XGenStage("export", cat, store, small_cfg).input.deserialize(records[1].value)
    store.put_bytes(b"PK\x03\x04 not a clip", damaged["artifacts"]["variant"].split("/objects/", 1)[1])
    export = XGenStage("export", cat, store, small_cfg, quality=judged([]), preview=previewed)
    outs = [by_topic(export.handle(r)) for r in records]
    assert outs[1]["xgen.rejected"][0]["reason_code"] == "xgen_artifact_invalid"
    assert outs[1]["xgen.progress"][0]["clip_index"] == 1 and not outs[1]["xgen.progress"][0]["passed"]
    assert [len(o.get("xgen.clips", [])) for o in outs] == [1, 0, 1, 1]


def test_a_failing_preview_leaves_the_clip_standing(tmp_path, small_cfg, keypoints_bytes):
    cat, store = Catalogue("t."), LocalObjectStore(tmp_path / "objects")
    _, first = request_record(cat, store, keypoints_bytes)
    rec = _through(cat, store, small_cfg, first, "export")[0]

    def broken(folder, source):
        raise RuntimeError("no OpenGL context")

    (clip,) = by_topic(XGenStage("export", cat, store, small_cfg, quality=judged([]), preview=broken)
                       .handle(rec))["xgen.clips"]
    assert clip["verified"] and clip["preview_uri"] is None
    meta = json.loads(store.read_bytes(clip["metadata_uri"], 1 << 20))
    assert "no OpenGL context" in meta["quality"]["details"]["preview_error"]
