"""``write_bundle``: the layout of ``kibotos.bundle``'s docstring, as zip and directory stores."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from kibotos.bundle import open_bundle, write_bundle
from kibotos.bundle.reader import JOINT_POS, JOINT_VEL, TIMESTAMPS, VIDEO_ENCODED, VIDEO_FRAMES
from kibotos.robots import get_robot
from tests.fixtures.episodes import PANDA, manifest_for


@pytest.fixture(scope="module")
def episode(samples):
    return samples.episode(PANDA)


def _write(path, ep, **kw):
    args = dict(timestamps_ms=ep.timestamps_ms, joint_pos=ep.joint_pos, joint_vel=ep.joint_vel, video_mp4=ep.video_mp4)
    args.update(kw)
    return write_bundle(path, ep.manifest, **args)


@pytest.mark.parametrize("name", ["episode.zarr.zip", "episode.zarr"])
def test_round_trip(tmp_path, episode, name):
    path = _write(tmp_path / name, episode)
    assert path.is_file() == name.endswith(".zip")
    with open_bundle(path) as view:
        assert view.manifest_raw == episode.manifest
        np.testing.assert_array_equal(view.read(TIMESTAMPS), episode.timestamps_ms)
        np.testing.assert_array_equal(view.read(JOINT_POS), episode.joint_pos)
        np.testing.assert_array_equal(view.read(JOINT_VEL), episode.joint_vel)
        assert view.read(VIDEO_ENCODED).tobytes() == episode.video_mp4
        assert view.info(TIMESTAMPS).dtype == "int64"
        assert view.info(JOINT_POS).dtype == "float32"
        assert view.node_attrs(VIDEO_ENCODED) == {"container": "mp4", "codec": "h264"}


def test_zip_entries_follow_the_documented_layout(tmp_path, episode):
    path = _write(tmp_path / "e.zarr.zip", episode)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest/zarr.json"))
    assert {"zarr.json", "manifest/zarr.json", f"{TIMESTAMPS}/zarr.json", f"{JOINT_POS}/zarr.json",
            f"{JOINT_VEL}/zarr.json", f"{VIDEO_ENCODED}/zarr.json"} <= names
    # the manifest group's attributes ARE the manifest
    assert manifest["node_type"] == "group"
    assert manifest["attributes"] == episode.manifest
    assert all(not n.startswith("/") and ".." not in n for n in names)


def test_optional_streams(tmp_path, episode):
    extra = {"objects/box/timestamps_ms": episode.timestamps_ms,
             "objects/box/pose": np.tile(np.array([0, 0, 0, 1, 0, 0, 0], np.float32), (len(episode.timestamps_ms), 1))}
    frames = np.zeros((3, 4, 4, 3), np.uint8)
    path = _write(tmp_path / "e.zarr.zip", episode, joint_vel=None, video_mp4=None, video_frames=frames,
                  extra_arrays=extra)
    with open_bundle(path) as view:
        assert not view.has(JOINT_VEL)
        assert not view.has(VIDEO_ENCODED)
        assert view.info(VIDEO_FRAMES).shape == (3, 4, 4, 3)
        assert [a.path for a in view.arrays()] == sorted(
            [TIMESTAMPS, JOINT_POS, VIDEO_FRAMES, *extra])
        np.testing.assert_array_equal(view.read("objects/box/pose"), extra["objects/box/pose"])


def test_dtypes_are_written_as_given(tmp_path):
    """Faulty bundles for tests need the writer not to coerce dtypes."""
    robot = get_robot(*PANDA)
    q = np.zeros((20, robot.dof), np.int16)
    path = write_bundle(tmp_path / "e.zarr.zip", manifest_for(robot), timestamps_ms=np.arange(20.0), joint_pos=q)
    with open_bundle(path) as view:
        assert view.info(JOINT_POS).dtype == "int16"
        assert view.info(TIMESTAMPS).dtype == "float64"


@pytest.mark.parametrize("name", ["e.zarr.zip", "e.zarr"])
def test_refuses_to_overwrite(tmp_path, episode, name):
    path = _write(tmp_path / name, episode)
    before = sorted(p.stat().st_mtime_ns for p in [path, *path.rglob("*")])
    with pytest.raises(FileExistsError):
        _write(path, episode)
    assert sorted(p.stat().st_mtime_ns for p in [path, *path.rglob("*")]) == before
