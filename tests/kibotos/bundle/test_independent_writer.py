"""The bundle layout is a public contract: a bundle written with plain ``zarr`` from the
docstring of ``kibotos.bundle`` alone — not with ``write_bundle`` — must verify.

The writer below deliberately makes choices of its own (chunking, codecs, creation order)
that differ from the project's writer, so that the reader cannot depend on them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
import zarr.codecs
import zarr.storage
from typer.testing import CliRunner

from kibotos.cli.main import app
from kibotos.cli.verify import verify_path
from kibotos.synthetic.samples import Episode
from tests.fixtures.episodes import PANDA, ROBOT_IDS, ROBOTS


def write_with_plain_zarr(store: zarr.abc.store.Store, ep: Episode) -> None:
    try:
        root = zarr.open_group(store=store, mode="w", zarr_format=3)
        kin = root.create_group("kinematics")
        pos = kin.create_array("joint_pos", shape=ep.joint_pos.shape, dtype="float32",
                               chunks=(64, ep.joint_pos.shape[1]), compressors=zarr.codecs.GzipCodec(level=5))
        pos[...] = ep.joint_pos
        ts = kin.create_array("timestamps_ms", shape=ep.timestamps_ms.shape, dtype="int64", chunks=(100,),
                              compressors=None)
        ts[...] = ep.timestamps_ms
        if ep.joint_vel is not None:
            kin.create_array("joint_vel", data=ep.joint_vel.astype(np.float32), chunks=(50, ep.joint_vel.shape[1]))
        video = np.frombuffer(ep.video_mp4, dtype=np.uint8)
        enc = root.create_group("video").create_group("primary").create_array(
            "encoded", shape=video.shape, dtype="uint8", chunks=(16_384,),
            attributes={"container": "mp4", "codec": "h264"})
        enc[...] = video
        # the manifest last: nothing in the contract orders the nodes
        root.create_group("manifest", attributes=json.loads(json.dumps(ep.manifest)))
    finally:
        store.close()


@pytest.mark.parametrize("key", ROBOTS, ids=ROBOT_IDS)
def test_zip_store_written_by_plain_zarr_is_accepted(samples, tmp_path, key):
    ep = samples.episode(key)
    path = tmp_path / "independent.zarr.zip"
    write_with_plain_zarr(zarr.storage.ZipStore(path, mode="w"), ep)
    outcome = verify_path(path)
    assert outcome.report.verdict == "accepted", outcome.report.model_dump_json(indent=1)
    assert outcome.exit_code == 0
    # the very same verdict and sync estimate as the project's own writer gives
    own = samples.outcome(key).report
    assert outcome.report.sync == own.sync
    assert [g.gate for g in outcome.report.gates] == [g.gate for g in own.gates]


def test_directory_store_written_by_plain_zarr_is_accepted_by_the_cli(samples, tmp_path):
    ep = samples.episode(PANDA)
    path = tmp_path / "independent.zarr"
    write_with_plain_zarr(zarr.storage.LocalStore(path), ep)
    assert (path / "manifest" / "zarr.json").is_file()
    result = CliRunner().invoke(app, ["verify", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verdict"] == "accepted"
    assert report["submission_id"] == ep.manifest["submission_id"]


def test_plain_zarr_bundle_without_joint_vel_is_accepted_and_flagged(samples, tmp_path):
    from dataclasses import replace

    ep = replace(samples.episode(PANDA), joint_vel=None)
    path = tmp_path / "novel.zarr.zip"
    write_with_plain_zarr(zarr.storage.ZipStore(path, mode="w"), ep)
    report = verify_path(path).report
    assert report.verdict == "accepted"
    assert "joint_vel_computed" in report.gates[0].flags
