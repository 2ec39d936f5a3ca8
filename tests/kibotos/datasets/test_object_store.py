"""Dataset versions and exports live in the object store (a local directory or a real S3
server, SeaweedFS): written once as content-addressed blobs plus a manifest, never
overwritten, and read back from there by a dataset store whose local cache is empty."""

from __future__ import annotations

import hashlib
import json

import pytest

from kibotos.datasets import objects as ds_objects
from kibotos.datasets.builder import DatasetBuilder
from kibotos.datasets.http import dataset_route
from kibotos.datasets.policy import resolve_versions
from kibotos.datasets.spec import parse_spec
from kibotos.datasets.store import DatasetStore
from kibotos.export.runner import export_version
from kibotos.objectstore import LocalObjectStore
from tests.kibotos.datasets.helpers import T0, copy_bundle, sid, verdict


def publish_two(store, bucket, sample_bundles):
    store.create(parse_spec({"name": "ds"}))
    b = DatasetBuilder(store, "ds")
    for n, (miner, robot) in enumerate([("alice", "ur5"), ("bob", "franka_panda")], 1):
        b.offer("verdicts", verdict(n, miner, robot, 0.5 + n / 10, copy_bundle(bucket, sample_bundles[robot], n)))
    b.publish(now_ms=T0)
    b.offer("verdicts", verdict(3, "carol", "ur5", 0.8, copy_bundle(bucket, sample_bundles["ur5"], 3)))
    b.publish(now_ms=T0 + 1)


def test_versions_are_published_to_and_read_back_from_the_object_store(tmp_path, object_store, sample_bundles):
    writer = DatasetStore(tmp_path / "cache-a", objects=object_store)
    publish_two(writer, object_store, sample_bundles)
    # in the object store: the spec, each version's manifest, its files as blobs keyed by SHA-256
    assert ds_objects.dataset_names(object_store) == {"ds"} and ds_objects.versions(object_store, "ds") == {1, 2}
    manifest = json.loads(ds_objects.read_small(object_store, ds_objects.version_key("ds", 2)))
    assert set(manifest["files"]) == {"episodes.jsonl", "changelog.jsonl", "attribution.json", "version.json",
                                      "card.json", "card.md"}
    for fname, f in manifest["files"].items():
        local = (writer.version_dir("ds", 2) / fname).read_bytes()
        assert f["sha256"] == hashlib.sha256(local).hexdigest()
        assert object_store.stat(ds_objects.blob_key("ds", f["sha256"])).size_bytes == len(local)
    assert manifest["content_hash"] == writer.info("ds", 2)["content_hash"]

    # a reader with an empty cache (another machine): everything comes from the object store
    reader = DatasetStore(tmp_path / "cache-b", objects=object_store)
    assert reader.names() == ["ds"] and reader.versions("ds") == [1, 2] and reader.resolve("ds") == ("ds", 2)
    assert [e.to_line() for e in reader.episodes("ds", 2)] == [e.to_line() for e in writer.episodes("ds", 2)]
    assert reader.verify("ds", 1) and reader.card("ds", 2) == writer.card("ds", 2)
    assert reader.attribution("ds", 1) == writer.attribution("ds", 1)
    assert all((p.stat().st_mode & 0o222) == 0 for p in reader.version_dir("ds", 1).iterdir())
    assert resolve_versions(DatasetStore(tmp_path / "cache-c", objects=object_store), ["ds@v1"]) == [("ds", 1)]
    status, body, _ = dataset_route(tmp_path / "cache-d", ["datasets", "ds@v2"], objects=object_store)
    assert status == 200 and body["hash_ok"] and body["card"]["episodes"] == 3

    # an export is published too, and a reader without it fetches it instead of converting
    first = export_version(writer, "ds", 2, tmp_path / "out-a", object_store)
    assert not first["reused"] and first["exported"] == 3
    fetched = export_version(DatasetStore(tmp_path / "cache-e", objects=object_store), "ds", 2, tmp_path / "out-b", object_store)
    assert fetched["reused"] and fetched["files"] == first["files"]
    for rel, sha in first["files"].items():
        assert hashlib.sha256((tmp_path / "out-b/ds/v000002" / rel).read_bytes()).hexdigest() == sha
    # a forced re-export gives the same bytes, so storing it again is a no-op, not a conflict
    forced = export_version(writer, "ds", 2, tmp_path / "out-c", object_store, force=True)
    assert not forced["reused"] and forced["files"] == first["files"]


def test_published_objects_are_never_overwritten(tmp_path, monkeypatch):
    bucket = LocalObjectStore(tmp_path / "bucket")
    store = DatasetStore(tmp_path / "cache", objects=bucket)
    store.create(parse_spec({"name": "ds"}))
    b = DatasetBuilder(store, "ds")
    b.offer("verdicts", verdict(1, "alice", "ur5", 0.9, "file:///b"))
    b.publish(now_ms=T0)
    v1_manifest = ds_objects.read_small(bucket, ds_objects.version_key("ds", 1))
    with pytest.raises(ds_objects.DatasetObjectError) as info:
        ds_objects.put_immutable(bucket, ds_objects.version_key("ds", 1), b'{"other": "bytes"}')
    assert info.value.reason_code == "dataset_object_conflict"
    assert ds_objects.read_small(bucket, ds_objects.version_key("ds", 1)) == v1_manifest
    # another writer's version 2 appears after this one listed the versions (a race):
    # refused, nothing published here, the pending episode kept for the next try
    bucket.put_bytes(b'{"other": "writer"}', ds_objects.version_key("ds", 2))
    monkeypatch.setattr(ds_objects, "versions", lambda objects, name: {1})
    b.offer("verdicts", verdict(2, "bob", "ur5", 0.7, "file:///b"))
    with pytest.raises(ds_objects.DatasetObjectError) as info:
        b.publish(now_ms=T0 + 1)
    assert info.value.reason_code == "dataset_object_conflict"
    assert store.local_versions("ds") == [1] and [e.submission_id for e in store.pending("ds")] == [sid(2)]
    monkeypatch.undo()
    # listed, that foreign version 2 is no valid version: a reason code, not a traceback
    with pytest.raises(ds_objects.DatasetObjectError) as info:
        DatasetStore(tmp_path / "cache-1", objects=bucket).resolve("ds")
    assert info.value.reason_code == "dataset_object_corrupt"
    bucket.delete(ds_objects.version_key("ds", 2))
    # a spec of the same name with another selection, published elsewhere: dataset_exists
    with pytest.raises(Exception) as info:
        DatasetStore(tmp_path / "cache-2", objects=bucket).create(parse_spec({"name": "ds", "min_score": 0.5}))
    assert info.value.reason_code == "dataset_exists"
    # the version re-uploaded (a retry after a crash) is a no-op; a tampered blob is caught on read
    assert store.upload_missing("ds") == []
    ds_objects.upload_version(bucket, "ds", 1, store.version_dir("ds", 1))
    sha = json.loads(ds_objects.read_small(bucket, ds_objects.version_key("ds", 1)))["files"]["episodes.jsonl"]["sha256"]
    path = bucket.root / ds_objects.blob_key("ds", sha)
    path.write_bytes(path.read_bytes().replace(b"alice", b"malle"))
    with pytest.raises(ds_objects.DatasetObjectError) as info:
        DatasetStore(tmp_path / "cache-3", objects=bucket).episodes("ds", 1).__next__()
    assert info.value.reason_code == "dataset_object_corrupt"
