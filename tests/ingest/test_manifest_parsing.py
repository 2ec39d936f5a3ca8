"""Manifest parsing (hypothesis): any bytes give a ``Manifest`` or a ``BundleError`` with a
manifest reason code — never another exception; valid manifests survive any key order
and whitespace; damaging a required field is always ``manifest_invalid``."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kibotos.bundle.manifest import SCHEMA_VERSION, Manifest, parse_manifest_document
from kibotos.errors import BundleError

REASONS = {"manifest_invalid", "manifest_missing", "bundle_metadata_too_large"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)

VALID = {
    "schema_version": SCHEMA_VERSION, "bundle_version": "1.0.0",
    "submission_id": "7f0c1b9e-6a53-4f4e-9d1b-3c2a1e0f9a11", "episode_id": "0b8f2f7e-1c9d-4a5b-8e6f-7a8b9c0d1e2f",
    "miner_id": "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T", "created_at": "2026-11-01T00:00:00+00:00",
    "robot_model_id": "ur5", "robot_model_revision": "joint-limited-v1", "joint_names": ["a", "b"],
    "sampling_rate_hz": 50.0, "time_base": "relative", "time_units": "ms",
    "units": {"joint_pos": "rad", "joint_vel": "rad/s"},
    "camera": {"primary": {"intrinsics": {"fx": 1, "fy": 1, "cx": 0, "cy": 0, "width": 2, "height": 2},
                           "extrinsics": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}},
    "video": {"primary": {"fps": 30.0, "frame_count": 10}}, "sync": {"sync_offset_ms_claimed": 0},
}
REQUIRED = [k for k in VALID]


def doc(attrs) -> bytes:
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attrs}).encode()


def _outcome(raw: bytes):
    try:
        attrs, manifest = parse_manifest_document(raw)
    except BundleError as exc:
        assert exc.reason_code in REASONS, exc.reason_code
        return exc.reason_code
    assert isinstance(manifest, Manifest) and isinstance(attrs, dict)
    return manifest


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_other_errors(raw):
    _outcome(raw)


@settings(max_examples=120, deadline=None)
@given(json_values)
def test_arbitrary_json_documents_and_attributes(value):
    _outcome(json.dumps(value).encode())
    _outcome(doc(value))


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from([None, 2, 4]), st.sampled_from([(",", ":"), (", ", ": ")]))
def test_valid_manifest_parses_whatever_key_order_and_whitespace(rng, indent, separators):
    keys = list(VALID)
    rng.shuffle(keys)
    attrs = {k: VALID[k] for k in keys}
    raw = json.dumps({"attributes": attrs, "node_type": "group", "zarr_format": 3}, indent=indent,
                     separators=separators).encode()
    parsed_attrs, manifest = parse_manifest_document(raw)
    assert parsed_attrs == VALID and str(manifest.submission_id) == VALID["submission_id"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(REQUIRED), st.one_of(st.just("__drop__"), json_values))
def test_damaging_a_required_field_is_manifest_invalid(field, value):
    attrs = dict(VALID)
    if value == "__drop__":
        del attrs[field]
    else:
        attrs[field] = value
    outcome = _outcome(doc(attrs))
    if isinstance(outcome, Manifest):  # the new value happens to be valid for that field
        assert value != "__drop__"
        Manifest.model_validate(attrs)
    else:
        assert outcome == "manifest_invalid"


@pytest.mark.parametrize("raw, reason", [
    (b'{"zarr_format":3,"node_type":"group","attributes":{"a":1,"a":2}}', "manifest_invalid"),  # ambiguous
    (b'{"zarr_format":3,"node_type":"group","attributes":{"x":NaN}}', "manifest_invalid"),
    (b'{"zarr_format":3,"node_type":"group","attributes":{"x":Infinity}}', "manifest_invalid"),
    (b'{"zarr_format":3,"node_type":"group","attributes":{"x":1' + b"0" * 5000 + b"}}", "manifest_invalid"),
    (b"[" * 200_000 + b"]" * 200_000, "manifest_invalid"),
    (b'{"zarr_format":3,"node_type":"array","attributes":{}}', "manifest_missing"),
    (b'{"zarr_format":2,"node_type":"group"}', "manifest_missing"),
    (b'{"zarr_format":3,"node_type":"group","attributes":[1]}', "manifest_invalid"),
    (b"\xff\xfe", "manifest_invalid"),
    (b" " * ((1 << 20) + 1), "bundle_metadata_too_large"),
])
def test_hostile_manifest_documents(raw, reason):
    assert _outcome(raw) == reason
