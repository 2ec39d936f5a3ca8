"""The ``eval`` job kind (gpu_consumers/policy_eval_jobs.py) without a broker: a request
naming a checkpoint and clips in the object store is answered with the policy.evals
records and, for a passing policy, the attribution records; the same request again gives
identical records (same eval id, same entry ids, same created_at); bad requests are dead
letters with a reason code."""

from __future__ import annotations

import json

import yaml

from gpu_consumers.policy_eval_jobs import PolicyEvalStage
from gpu_consumers.registry import get_job, load_jobs
from kibotos.config.settings import Settings
from kibotos.datasets.builder import DatasetBuilder
from kibotos.datasets.spec import parse_spec
from kibotos.datasets.store import DatasetStore
from kibotos.media.video import probe_video
from kibotos.objectstore import store_from_settings
from kibotos.xmimic.train import train
from streams.stage import Record
from tests.kibotos.datasets.helpers import T0, verdict
from topics.catalogue import Catalogue


def test_eval_job_answers_with_rows_and_attribution(clips, clips_dir, small_cfg, tmp_path):
    settings = Settings(home=tmp_path / "home", object_store_url=(tmp_path / "objects").as_uri())
    objects = store_from_settings(settings)
    cat = Catalogue.from_settings(settings)
    load_jobs()
    assert get_job("eval").input_topic == "eval.requests"
    ds = DatasetStore(settings.home / "datasets", objects=objects)
    ds.create(parse_spec({"name": "g1-cargo"}))
    b = DatasetBuilder(ds, "g1-cargo")
    for n, (miner, s) in enumerate([("alice", 0.8), ("bob", 0.4)], 1):
        b.offer("verdicts", verdict(n, miner, "unitree_g1", s, f"file:///b/{n}.zarr.zip"))
    b.publish(now_ms=T0)
    r = train(clips[:1], small_cfg, tmp_path / "runJ", num_envs=2, iterations=1, run_id="runJ")
    ckpt_uri = objects.put_file(r.checkpoint, "xmimic/policies/teacher-runJ-it1/model.pt").uri
    folder = clips_dir / clips[0].clip_id
    refs = [{"clip_id": clips[0].clip_id,
             "clip_uri": objects.put_file(folder / "clip.npz", f"xgen/r/clips/{clips[0].clip_id}/clip.npz").uri,
             "metadata_uri": objects.put_file(folder / "metadata.json", f"xgen/r/clips/{clips[0].clip_id}/metadata.json").uri}]
    cfg = small_cfg.with_overrides(eval={**small_cfg.eval.model_dump(),
                                         "heldout": {"max_source_clips": 1, "size_scales": [0.7], "offsets_m": [],
                                                     "yaw_deg": []},
                                         "pass_rule": {"min_sr": 0.0, "min_gsr": 0.0, "min_sr_over_reference": -1.0}})
    req = {"policy_id": "teacher-runJ-it1", "checkpoint_uri": ckpt_uri, "dataset": "xgen-r", "clips": refs,
           "trained_on": ["g1-cargo@v1"], "config_yaml": yaml.safe_dump(json.loads(cfg.model_dump_json())),
           "task": None, "heldout": True, "seed": 0, "requested_by": "test", "requested_at": T0 + 5, "preview": True}
    spec = cat.get("eval.requests")
    stage = PolicyEvalStage(settings, cat, objects, work_dir=tmp_path / "work")
    outs = stage.handle(Record(spec.name, spec.serialize(req)))
    by = {}
    for o in outs:
        by.setdefault(o.topic.id, []).append(o.record)
    assert [(e["split"], e["clip_id"]) for e in by["policy.evals"]] == [("train", clips[0].clip_id),
                                                                          ("heldout", f"{clips[0].clip_id}@size_scale=0.7")]
    assert {e["created_at"] for e in by["policy.evals"]} == {T0 + 5} and stage.last["passed"]
    # asked for a preview: rendered and stored next to the policy, where the read API finds it
    assert stage.last["preview_uri"] == objects.uri_for("xmimic/policies/teacher-runJ-it1/preview.mp4")
    probe = probe_video(objects.read_bytes(stage.last["preview_uri"], 1 << 26))
    assert (probe.width, probe.height) == (320, 240) and probe.frames >= 10
    assert sorted(e["miner_id"] for e in by["ledger.entries"]) == ["alice", "bob"]
    assert sum(e["points"] for e in by["ledger.entries"]) == ds.cfg.attribution.policy_pass_pool
    for o in outs:
        o.value()  # every record encodes with its topic's schema
    again = stage.handle(Record(spec.name, spec.serialize(req)))
    assert [o.record for o in again] == [o.record for o in outs]  # a redelivery writes the same rows and ids
    # refusals are dead letters with a reason code
    for bad, code in (({**req, "policy_id": "bad id"}, "xmimic_request_invalid"),
                      ({**req, "checkpoint_uri": (tmp_path / "nope.pt").as_uri()}, "xmimic_policy_unknown")):
        [dl] = stage.handle(Record(spec.name, spec.serialize(bad)))
        assert dl.topic == cat.dead_letters and dl.record["error_code"] == code, dl.record
    [dl] = stage.handle(Record(spec.name, b"\x00garbage"))
    assert dl.topic == cat.dead_letters
