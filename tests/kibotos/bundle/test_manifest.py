"""The manifest model (design §2): semver and ISO 8601 fields, camera parameters as an
object or an array, every refusal a ``manifest_invalid``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from kibotos.bundle.manifest import Manifest, parse_manifest_document
from kibotos.errors import BundleError
from kibotos.robots import get_robot
from tests.fixtures.episodes import PANDA, manifest_for

ROBOT = get_robot(*PANDA)


def _doc(manifest: dict) -> bytes:
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": manifest}).encode()


@pytest.mark.parametrize("field", ["schema_version", "bundle_version"])
@pytest.mark.parametrize("value", ["1.0.0", "0.3.12", "2.1.0-rc.1", "1.0.0+build.7", "10.20.30-alpha+sha.5"])
def test_semver_fields_accept_semantic_versions(field, value):
    assert getattr(Manifest.model_validate(manifest_for(ROBOT, **{field: value})), field) == value


@pytest.mark.parametrize("field", ["schema_version", "bundle_version"])
@pytest.mark.parametrize("value", ["1", "1.0", "v1.0.0", "01.0.0", "1.0.0.0", "1.0.0-", "latest", ""])
def test_semver_fields_refuse_other_strings(field, value):
    with pytest.raises(BundleError) as exc:
        parse_manifest_document(_doc(manifest_for(ROBOT, **{field: value})))
    assert exc.value.reason_code == "manifest_invalid" and field in str(exc.value)


@pytest.mark.parametrize("value", ["2026-11-01T00:00:00+00:00", "2026-11-01T00:00:00Z",
                                   "2026-11-01T09:30:15.123+09:00", "20261101T000000Z"])
def test_created_at_accepts_iso8601_instants(value):
    assert Manifest.model_validate(manifest_for(ROBOT, created_at=value)).created_at == value


@pytest.mark.parametrize("value", ["yesterday", "2026-11-01", "2026-11-01T00:00:00", "2026-13-01T00:00:00Z",
                                   "01/11/2026 10:00", "2026-11-01T25:00:00Z", "x" * 200])
def test_created_at_refuses_non_iso_or_zoneless_values(value):
    with pytest.raises(BundleError) as exc:
        parse_manifest_document(_doc(manifest_for(ROBOT, created_at=value)))
    assert exc.value.reason_code == "manifest_invalid" and "created_at" in str(exc.value)


def _with_camera(intrinsics, extrinsics=None) -> dict:
    cam = {"intrinsics": intrinsics, "extrinsics": np.eye(4).tolist() if extrinsics is None else extrinsics}
    return manifest_for(ROBOT, camera={"primary": cam})


def test_intrinsics_as_an_array_equal_the_object_form():
    as_object = Manifest.model_validate(_with_camera(
        {"fx": 10.0, "fy": 11.0, "cx": 4.0, "cy": 3.5, "width": 8, "height": 7, "distortion": [0.1, -0.01]}))
    as_array = Manifest.model_validate(_with_camera([10.0, 11.0, 4.0, 3.5, 8.0, 7.0, 0.1, -0.01]))
    assert as_array.camera["primary"].intrinsics == as_object.camera["primary"].intrinsics
    no_distortion = Manifest.model_validate(_with_camera([10, 11, 4, 3.5, 8, 7])).camera["primary"].intrinsics
    assert (no_distortion.width, no_distortion.height, no_distortion.distortion) == (8, 7, None)


@pytest.mark.parametrize("intrinsics, needle", [
    ([10.0, 10.0, 4.0, 4.0], "fx, fy, cx, cy, width, height"),
    ([[10, 0, 4], [0, 10, 4], [0, 0, 1]], "image size"),
    ([10.0, 10.0, 4.0, 4.0, 8.5, 8.0], "width"),          # a fractional image size
    ([10.0, 10.0, 4.0, 4.0, 8, 8, *([0.0] * 17)], "distortion"),
    ([-1.0, 10.0, 4.0, 4.0, 8, 8], "fx"),
])
def test_bad_intrinsic_arrays_are_manifest_invalid(intrinsics, needle):
    with pytest.raises(BundleError) as exc:
        parse_manifest_document(_doc(_with_camera(intrinsics)))
    assert exc.value.reason_code == "manifest_invalid" and needle in str(exc.value)


def test_extrinsics_forms_agree():
    pose = np.eye(4)
    pose[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    pose[:3, 3] = [0.5, -0.2, 1.5]
    intr = [10, 10, 4, 4, 8, 8]
    nested = Manifest.model_validate(_with_camera(intr, pose.tolist())).camera["primary"].extrinsics
    flat = Manifest.model_validate(_with_camera(intr, pose.ravel().tolist())).camera["primary"].extrinsics
    obj = Manifest.model_validate(_with_camera(intr, {"rotation": pose[:3, :3].tolist(),
                                                      "translation": pose[:3, 3].tolist()})).camera["primary"].extrinsics
    assert np.allclose(nested, pose) and np.allclose(flat, pose) and np.allclose(obj, pose)


@pytest.mark.parametrize("extrinsics", [[0.0] * 12, {"rotation": np.eye(3).tolist()},
                                        {"rotation": np.eye(2).tolist(), "translation": [0, 0, 0]},
                                        {"matrix": np.eye(4).tolist()}])
def test_bad_extrinsics_are_refused(extrinsics):
    with pytest.raises(ValidationError):
        Manifest.model_validate(_with_camera([10, 10, 4, 4, 8, 8], extrinsics))
