"""``open_bundle`` / ``BundleView``: metadata-only access, bounded reads, reason codes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kibotos.bundle import Limits, open_bundle
from kibotos.bundle.manifest import Manifest, unit_mismatches
from kibotos.bundle.reader import JOINT_POS, JOINT_VEL, TIMESTAMPS, VIDEO_ENCODED, metadata_json
from kibotos.errors import BundleError
from kibotos.robots import get_robot
from tests.fixtures.episodes import PANDA, manifest_for, rewrite_zip, small_bundle


@pytest.fixture(scope="module")
def genuine(samples):
    return samples.path(PANDA)


def test_view_exposes_manifest_and_array_metadata(genuine, samples):
    ep = samples.episode(PANDA)
    T, J = ep.joint_pos.shape
    with open_bundle(genuine) as view:
        assert isinstance(view.manifest, Manifest)
        assert str(view.manifest.submission_id) == ep.manifest["submission_id"]
        assert unit_mismatches(view.manifest) == {}
        assert view.has(JOINT_POS) and view.has(JOINT_VEL) and view.has(VIDEO_ENCODED)
        assert not view.has("kinematics/nope") and not view.has("manifest")  # a group is not an array
        info = view.info(JOINT_POS)
        assert (info.shape, info.dtype, info.nbytes, info.chunks) == ((T, J), "float32", T * J * 4, 1)
        assert [a.path for a in view.arrays()] == sorted([TIMESTAMPS, JOINT_POS, JOINT_VEL, VIDEO_ENCODED, *ep.extra_arrays])
        assert metadata_json(view).startswith("{")


def test_read_caches_arrays(genuine):
    with open_bundle(genuine) as view:
        first = view.read(JOINT_POS)
        assert view.read(JOINT_POS) is first


def test_missing_dataset(genuine):
    with open_bundle(genuine) as view:
        with pytest.raises(BundleError) as info:
            view.read("imu/accel")
    assert info.value.reason_code == "missing_dataset"


def test_missing_path(tmp_path):
    with pytest.raises(BundleError) as info:
        open_bundle(tmp_path / "nope.zarr.zip")
    assert info.value.reason_code == "bundle_not_found"


@pytest.mark.parametrize(
    "limits, reason",
    [
        (Limits(max_array_bytes=1000), "dataset_too_large"),
        (Limits(max_chunks=0), "dataset_too_many_chunks"),
    ],
)
def test_array_limits_apply_before_reading(genuine, limits, reason):
    with open_bundle(genuine, limits) as view:
        with pytest.raises(BundleError) as info:
            view.read(JOINT_POS)
        assert info.value.reason_code == reason
        assert JOINT_POS not in view._cache


@pytest.mark.parametrize(
    "limits, reason",
    [
        (Limits(max_entries=5), "bundle_too_many_entries"),
        (Limits(max_archive_bytes=10_000), "bundle_too_large"),
        (Limits(max_metadata_bytes=1000), "bundle_metadata_too_large"),
    ],
)
def test_archive_limits(genuine, limits, reason):
    with pytest.raises(BundleError) as info:
        open_bundle(genuine, limits)
    assert info.value.reason_code == reason


def test_default_limits_accept_a_genuine_bundle(genuine):
    with open_bundle(genuine, Limits()) as view:
        assert view.read(JOINT_POS).size > 0


def test_directory_store_limits(tmp_path):
    path = small_bundle(tmp_path / "e.zarr", get_robot(*PANDA))
    with pytest.raises(BundleError) as info:
        open_bundle(path, Limits(max_entries=3))
    assert info.value.reason_code == "bundle_too_many_entries"
    with pytest.raises(BundleError) as info:
        open_bundle(path, Limits(max_metadata_bytes=500))
    assert info.value.reason_code == "bundle_metadata_too_large"
    with open_bundle(path) as view:
        assert view.manifest.robot_model_id == PANDA[0]


def test_directory_store_with_a_symlink_is_refused(tmp_path):
    path = small_bundle(tmp_path / "e.zarr", get_robot(*PANDA))
    os.symlink("/etc/passwd", path / "kinematics" / "leak")
    with pytest.raises(BundleError) as info:
        open_bundle(path)
    assert info.value.reason_code == "bundle_unsafe_path"


def test_duplicate_zip_entries_are_refused(genuine, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we add on purpose
        bad = rewrite_zip(genuine, tmp_path / "dup.zarr.zip", add={"manifest/zarr.json": b"{}"})
    with pytest.raises(BundleError) as info:
        open_bundle(bad)
    assert info.value.reason_code == "bundle_duplicate_entries"


def test_manifest_invalid_lists_the_problems(tmp_path):
    robot = get_robot(*PANDA)
    manifest = manifest_for(robot, sampling_rate_hz=-5, camera={"side": {}})
    del manifest["sync"]
    path = small_bundle(tmp_path / "e.zarr.zip", robot, manifest=manifest)
    with open_bundle(path) as view:
        with pytest.raises(BundleError) as info:
            _ = view.manifest
    assert info.value.reason_code == "manifest_invalid"
    for field in ("sampling_rate_hz", "sync", "camera"):
        assert field in str(info.value)


def test_manifest_keeps_extra_keys(tmp_path):
    robot = get_robot(*PANDA)
    path = small_bundle(tmp_path / "e.zarr.zip", robot, manifest=manifest_for(robot, vendor={"rig": "a"}))
    with open_bundle(path) as view:
        assert view.manifest.model_extra == {"vendor": {"rig": "a"}}


def test_float64_joint_pos_reads_back(tmp_path):
    robot = get_robot(*PANDA)
    q = np.tile(robot.home_qpos, (30, 1))
    path = small_bundle(tmp_path / "e.zarr.zip", robot, joint_pos=q, timestamps_ms=np.arange(30) * 20)
    with open_bundle(path) as view:
        np.testing.assert_array_equal(view.read(JOINT_POS), q)
