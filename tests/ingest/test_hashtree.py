"""The bundle hash tree: pinned definitions, and properties (hypothesis) over generated
Zarr stores — the root does not depend on container, entry order or compression; any
change to any byte, key or node changes it and names the node that changed."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kibotos.bundle.hashtree import EntryHash, hash_bundle, merkle_root, node_hash, root_of_leaves
from kibotos.errors import BundleError
from tests.fixtures.ingest import keypair

H = hashlib.sha256


def test_merkle_root_follows_rfc6962():
    a, b, c = b"a", b"b", b"c"
    leaf = lambda d: H(b"\x00" + d).digest()  # noqa: E731
    node = lambda x, y: H(b"\x01" + x + y).digest()  # noqa: E731
    assert merkle_root([]) == H(b"").digest()
    assert merkle_root([a]) == leaf(a)
    assert merkle_root([a, b]) == node(leaf(a), leaf(b))
    # three leaves split at the largest power of two below n: ((a b) c)
    assert merkle_root([a, b, c]) == node(node(leaf(a), leaf(b)), leaf(c))
    # a leaf can never pose as an inner node (domain separation)
    assert merkle_root([node(leaf(a), leaf(b))]) != merkle_root([a, b])


def test_node_hash_definition_is_pinned():
    entries = [EntryHash("c/0", 3, H(b"abc").hexdigest()), EntryHash("zarr.json", 2, H(b"{}").hexdigest())]
    expected = H(b"kibotos.hashtree.node.v1\x00kinematics/joint_pos\x00"
                 + b"zarr.json\x00" + (2).to_bytes(8, "big") + H(b"{}").digest()
                 + b"c/0\x00" + (3).to_bytes(8, "big") + H(b"abc").digest()).hexdigest()
    assert node_hash("kinematics/joint_pos", entries) == expected
    assert node_hash("kinematics/joint_pos", entries[::-1]) == expected  # order-independent input


# --- generated stores ----------------------------------------------------------------------

_name = st.text("abcdefgh_", min_size=1, max_size=6)
_meta_array = json.dumps({"zarr_format": 3, "node_type": "array", "shape": [4], "data_type": "uint8",
                          "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
                          "chunk_key_encoding": {"name": "default"}, "codecs": [{"name": "bytes"}]}).encode()
_meta_group = b'{"zarr_format": 3, "node_type": "group", "attributes": {}}'


@st.composite
def stores(draw) -> dict[str, bytes]:
    """A Zarr-shaped key space: root group, a manifest group, nested groups and arrays
    with chunk keys and arbitrary chunk bytes."""
    keys = {"zarr.json": _meta_group, "manifest/zarr.json": draw(st.binary(min_size=1, max_size=200))}
    for group in draw(st.lists(_name, max_size=3, unique=True)):
        if group == "manifest":
            continue
        keys[f"{group}/zarr.json"] = _meta_group
        for array in draw(st.lists(_name, min_size=1, max_size=3, unique=True)):
            keys[f"{group}/{array}/zarr.json"] = _meta_array
            for i in range(draw(st.integers(0, 3))):
                keys[f"{group}/{array}/c/{i}"] = draw(st.binary(max_size=300))
    return keys


def _write_zip(path: Path, keys: dict[str, bytes], order: list[str], compress: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        for k in order:
            zf.writestr(k, keys[k])
    return path


def _write_dir(path: Path, keys: dict[str, bytes]) -> Path:
    for k, v in keys.items():
        (path / k).parent.mkdir(parents=True, exist_ok=True)
        (path / k).write_bytes(v)
    return path


_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(keys=stores(), seed=st.randoms(use_true_random=False))
def test_root_is_independent_of_container_order_and_compression(tmp_path_factory, keys, seed):
    d = tmp_path_factory.mktemp("ht")
    order = sorted(keys)
    shuffled = order[:]
    seed.shuffle(shuffled)
    a = hash_bundle(_write_zip(d / "a.zip", keys, order, zipfile.ZIP_STORED))
    b = hash_bundle(_write_zip(d / "b.zip", keys, shuffled, zipfile.ZIP_DEFLATED))
    c = hash_bundle(_write_dir(d / "c.zarr", keys))
    assert a.merkle_root == b.merkle_root == c.merkle_root
    assert a.leaves() == c.leaves()
    assert a.manifest_sha256 == H(keys["manifest/zarr.json"]).hexdigest()
    assert root_of_leaves(a.leaves()) == a.merkle_root


@_SETTINGS
@given(keys=stores(), data=st.data())
def test_any_change_changes_the_root_and_names_the_node(tmp_path_factory, keys, data):
    d = tmp_path_factory.mktemp("ht")
    before = hash_bundle(_write_zip(d / "a.zip", keys, sorted(keys), zipfile.ZIP_STORED))
    key = data.draw(st.sampled_from(sorted(keys)))
    change = data.draw(st.sampled_from(["flip", "append", "drop", "rename"]))
    mutated = dict(keys)
    if change == "flip" and keys[key]:
        i = data.draw(st.integers(0, len(keys[key]) - 1))
        mutated[key] = keys[key][:i] + bytes([keys[key][i] ^ 1]) + keys[key][i + 1:]
    elif change in ("append", "flip"):
        mutated[key] = keys[key] + b"\x00"
    elif change == "drop" and key != "zarr.json":
        del mutated[key]
    else:
        new_key = key.replace("zarr.json", "c/9") if key.endswith("zarr.json") and key != "zarr.json" else key + "x"
        if key == "zarr.json" or new_key in mutated:
            mutated[key] = keys[key] + b" "
        else:
            mutated[new_key] = mutated.pop(key)
    after = hash_bundle(_write_zip(d / "b.zip", mutated, sorted(mutated), zipfile.ZIP_STORED))
    assert after.merkle_root != before.merkle_root
    owner = next(n.path for n in before.nodes
                 if any((f"{n.path}/{e.key}" if n.path else e.key) == key for e in n.entries))
    assert owner in after.diff(before.leaves()), (key, change)


def test_a_real_bundle_has_one_node_per_dataset_and_attribute_set(signed):
    path = signed.write(keypair("alice"), sign=False)
    tree = hash_bundle(path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        arrays = {n.removesuffix("/zarr.json") for n in names
                  if n.endswith("/zarr.json") and json.loads(zf.read(n))["node_type"] == "array"}
    assert set(tree.datasets) == arrays and {"kinematics/joint_pos", "kinematics/timestamps_ms"} <= arrays
    assert {"", "manifest", "kinematics"} <= set(tree.attribute_sets)
    assert sum(len(n.entries) for n in tree.nodes) == len(names)  # every entry is covered once
    assert all(len(e.sha256) == 64 for n in tree.nodes for e in n.entries)


@pytest.mark.parametrize("content, reason", [
    (b"", "bundle_unreadable"),
    (b"PK\x05\x06" + bytes(18), "bundle_unreadable"),  # an empty zip: no root zarr.json
])
def test_unreadable_archives_raise_reason_codes(tmp_path, content, reason):
    path = tmp_path / "x.zarr.zip"
    path.write_bytes(content)
    with pytest.raises(BundleError) as exc:
        hash_bundle(path)
    assert exc.value.reason_code == reason
