"""Verified XGen clips (topic xgen.clips) join datasets whose spec names that source; their
HumanX export is the clip itself with the kibotos block added to its metadata."""

from __future__ import annotations

import json

import numpy as np

from kibotos.datasets.builder import DatasetBuilder, available_sources
from kibotos.datasets.spec import parse_spec
from kibotos.export.humanx import write_npz
from kibotos.export.runner import export_version
from kibotos.xgen.export import CLIP_KEYS, FORMAT_VERSION
from tests.fixtures.events import xgen_clip
from tests.kibotos.datasets.helpers import T0, copy_bundle, verdict


def clip_files(objects, tmp_path, clip_id: str) -> tuple[str, str]:
    t = 30
    arrays = {"robot_qpos": np.random.default_rng(1).normal(size=(t, 36)).astype(np.float32),
              "robot_qvel": np.zeros((t, 35), np.float32), "root_pose": np.zeros((t, 7), np.float32),
              "object_pose": np.zeros((t, 7), np.float32), "contact_graph": np.zeros((t, 5), np.uint8),
              "phase": np.zeros(t, np.int8)}
    src = tmp_path / f"{clip_id}.npz"
    write_npz(src, arrays)
    meta = tmp_path / f"{clip_id}.json"
    meta.write_text(json.dumps({"format_version": FORMAT_VERSION, "clip_id": clip_id, "frames": t}))
    return (objects.put_file(src, f"xgen/{clip_id}/clip.npz").uri,
            objects.put_file(meta, f"xgen/{clip_id}/metadata.json").uri)


def test_verified_clips_join_and_export_as_clips(store, objects, sample_bundles, tmp_path):
    assert set(available_sources(["verdicts", "xgen.clips"])) == {"verdicts", "xgen.clips"}
    assert set(available_sources(["verdicts"])) == {"verdicts"}
    store.create(parse_spec({"name": "g1", "robots": ["unitree_g1"], "sources": ["verdicts", "xgen.clips"]}))
    b = DatasetBuilder(store, "g1")
    clip_uri, meta_uri = clip_files(objects, tmp_path, "clip-a")
    good = xgen_clip(clip_id="clip-a", uploader="miner-xg", clip_uri=clip_uri, metadata_uri=meta_uri,
                     quality_score=0.77, created_at=T0)
    assert b.offer("xgen.clips", good) == "added"
    assert b.offer("xgen.clips", xgen_clip(clip_id="clip-b", verified=False, quality_verdict="rejected",
                                           created_at=T0)) == "not_an_episode"
    assert b.offer("verdicts", verdict(1, "miner-g", "unitree_g1", 0.8,
                                       copy_bundle(objects, sample_bundles["unitree_g1"], 1))) == "added"
    info = b.publish(now_ms=T0 + 1)
    eps = {e.submission_id: e for e in store.episodes("g1", 1)}
    assert info["episodes"] == 2 and eps["clip-a"].source == "xgen.clips" and eps["clip-a"].score == 0.77
    assert eps["clip-a"].robot_model_id == "unitree_g1" and eps["clip-a"].task_id == "cargo_pickup"
    assert store.card("g1", 1)["sources"] == {"verdicts": 1, "xgen.clips": 1}

    res = export_version(store, "g1", 1, tmp_path / "out", objects)
    assert res["exported"] == 2 and res["skipped"] == []
    folder = tmp_path / "out/g1/v000001/humanx/clip-a"
    assert (folder / "clip.npz").read_bytes() == objects.local_path(clip_uri).read_bytes()
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["clip_id"] == "clip-a" and meta["kibotos"]["miner_id"] == "miner-xg"
    assert sorted(np.load(folder / "clip.npz").files) == sorted(CLIP_KEYS)
    # LeRobot holds the submission (it has a video); the clip is HumanX-only
    [group] = res["lerobot"].values()
    assert group["episodes"] == 1
