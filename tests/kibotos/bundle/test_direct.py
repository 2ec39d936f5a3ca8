"""``kibotos.bundle.direct``: the synchronous reader gives what zarr gives, node for node and
array for array, and leaves to zarr every document or bundle it does not read itself."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import zarr
import zarr.storage
from zarr.codecs import BytesCodec, Crc32cCodec, GzipCodec, TransposeCodec, ZstdCodec
from zarr.core.group import _build_metadata_v3

from kibotos.bundle import Limits, open_bundle
from kibotos.bundle.direct import LightArray, LightGroup, light_node
from kibotos.bundle.reader import BundleView, _check_dir, _check_zip

RNG = np.random.default_rng(7)

# name -> (data, create_array keyword arguments): dtypes, byte orders, grids, codecs
ARRAYS = {
    "plain/f32": (RNG.normal(size=(37, 5)).astype(np.float32), {}),
    "plain/f64_chunked": (RNG.normal(size=(101, 3)), {"chunks": (16, 2)}),
    "plain/i64_big": (np.arange(50, dtype=np.int64) * 3, {"serializer": BytesCodec(endian="big")}),
    "plain/u8": (RNG.integers(0, 255, size=300, dtype=np.uint8), {"chunks": (64,)}),
    "plain/bool": (RNG.random(40) > 0.5, {}),
    "plain/i16_gzip": (RNG.integers(-999, 999, size=(9, 9), dtype=np.int16), {"compressors": GzipCodec(level=5)}),
    "plain/none": (RNG.normal(size=20).astype(np.float32), {"compressors": None}),
    "plain/fill": (np.full((10, 4), 2.5, dtype=np.float32), {"chunks": (5, 4), "fill_value": 2.5}),
    "plain/scalar": (np.array(3.25), {}),
    "plain/empty": (np.zeros((0, 3), dtype=np.float32), {"chunks": (4, 3)}),
    "zarr/crc": (RNG.normal(size=12), {"compressors": [ZstdCodec(), Crc32cCodec()]}),
    "zarr/transposed": (RNG.normal(size=(6, 4)).astype(np.float32), {"filters": TransposeCodec(order=(1, 0))}),
    "zarr/nan_fill": (np.arange(8, dtype=np.float64), {"chunks": (4,), "fill_value": np.nan}),
}


def _write(store) -> None:
    root = zarr.open_group(store=store, mode="w")
    root.create_group("manifest", attributes={"a": [1, 2, {"b": None}]})
    for name, (data, kwargs) in ARRAYS.items():
        kwargs = {"chunks": data.shape or "auto"} | kwargs
        arr = root.create_array(name, shape=data.shape, dtype=data.dtype, attributes={"name": name}, **kwargs)
        arr[...] = data


@pytest.fixture(params=["zip", "dir"])
def bundle(request, tmp_path):
    path = tmp_path / ("b.zarr.zip" if request.param == "zip" else "b.zarr")
    store = zarr.storage.ZipStore(path, mode="w") if request.param == "zip" else zarr.storage.LocalStore(path)
    _write(store)
    store.close()
    return path


def _zarr_view(path):
    """The same bundle read through zarr alone (the reader before the direct tree)."""
    from kibotos.bundle.reader import BoundedZipStore

    if path.is_dir():
        entries, store = _check_dir(path, Limits()), zarr.storage.LocalStore(path, read_only=True)
    else:
        entries, store = _check_zip(path, Limits()), BoundedZipStore(path, mode="r")
    return BundleView(path, zarr.open_group(store=store, mode="r"), store, Limits(), entries)


def test_direct_reads_equal_zarr_reads(bundle):
    # the missing chunk of plain/fill: its fill value, as zarr gives it (zarr skips
    # writing chunks equal to the fill value, so half of it is absent)
    with open_bundle(bundle) as view, _zarr_view(bundle) as ref:
        assert view._tree is not None and ref._tree is None
        assert view.arrays() == ref.arrays()
        assert view.manifest_raw == ref.manifest_raw
        for info in ref.arrays():
            got, want = view.read(info.path), ref.read(info.path)
            assert got.dtype == want.dtype and got.shape == want.shape, info.path
            np.testing.assert_array_equal(got, want, err_msg=info.path)
            assert view.node_attrs(info.path) == ref.node_attrs(info.path) == {"name": info.path}
        kinds = {info.path: type(view._node(info.path)) for info in view.arrays()}
        assert {p for p, k in kinds.items() if k is LightArray} == {p for p in ARRAYS if p.startswith("plain/")}


def _docs(path):
    """Every zarr.json of a zarr-written tree, parsed."""
    root = path
    return {p.parent.relative_to(root).as_posix(): json.loads(p.read_text()) for p in root.rglob("zarr.json")}


def _variants(doc: dict) -> list[dict]:
    """Edits of an array document, valid and not."""
    out = []
    for key, value in [("fill_value", "NaN"), ("fill_value", 1.5), ("fill_value", True), ("fill_value", 10**20),
                       ("fill_value", None), ("shape", [-1, 5]), ("shape", [3]), ("data_type", "complex64"),
                       ("data_type", "int16"), ("extra", {"must_understand": False}), ("storage_transformers", [{}]),
                       ("dimension_names", ["a", None]), ("dimension_names", ["a"]), ("zarr_format", 2),
                       ("chunk_key_encoding", {"name": "v2", "configuration": {"separator": "."}}),
                       ("chunk_key_encoding", {"name": "default"}),
                       ("chunk_grid", {"name": "regular", "configuration": {"chunk_shape": [0, 5]}}),
                       ("codecs", [{"name": "bytes"}]), ("codecs", ["bytes"]),
                       ("codecs", [{"name": "bytes", "configuration": {"endian": "big"}}]),
                       ("codecs", [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "gzip", "configuration": {"level": 11}}]),
                       ("codecs", [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd", "configuration": {"level": 3}}]),
                       ("attributes", [])]:
        d = copy.deepcopy(doc)
        d[key] = value
        out.append(d)
    return out


def test_light_documents_are_read_as_zarr_reads_them(tmp_path):
    _write(zarr.storage.LocalStore(tmp_path / "t.zarr"))
    docs = _docs(tmp_path / "t.zarr")
    base = docs["plain/f32"]
    checked = light = 0
    for path, doc in [*docs.items(), *[("v", d) for d in _variants(base)]]:
        node = light_node(path, doc)
        try:
            md = _build_metadata_v3(copy.deepcopy(doc))
        except Exception:
            assert node is None, doc  # zarr refuses it: so must the light reader (it defers)
            continue
        checked += 1
        if node is None:
            continue
        light += 1
        if isinstance(node, LightGroup):
            assert md.node_type == "group" and node.attributes == md.attributes
            continue
        assert node.shape == md.shape and node.chunk_shape == md.chunk_grid.chunk_shape
        assert node.dtype == md.dtype.to_native_dtype()
        assert node.fill_value == md.fill_value and type(node.fill_value) is type(md.fill_value)
        assert node.codecs == tuple(c["name"] for c in md.to_dict()["codecs"])
        assert node.chunk_key((1, 2)) == md.encode_chunk_key((1, 2))
    assert checked > 10 and light > 5
    # what it leaves to zarr: NaN fill, unknown keys, transposes, checksums, implicit endian
    for doc in (docs["zarr/nan_fill"], docs["zarr/crc"], docs["zarr/transposed"], *_variants(base)[9:10]):
        assert light_node("x", doc) is None


def test_consolidated_or_v2_bundles_are_left_to_zarr(tmp_path):
    path = tmp_path / "c.zarr"
    _write(zarr.storage.LocalStore(path))
    zarr.consolidate_metadata(zarr.storage.LocalStore(path))
    with open_bundle(path) as view, _zarr_view(path) as ref:
        assert view._tree is None
        np.testing.assert_array_equal(view.read("plain/f64_chunked"), ref.read("plain/f64_chunked"))
    v2 = tmp_path / "v2.zarr"
    root = zarr.open_group(store=zarr.storage.LocalStore(v2), mode="w", zarr_format=2)
    root.create_array("a", data=np.arange(5.0))
    with open_bundle(v2) as view:
        assert view._tree is None
        np.testing.assert_array_equal(view.read("a"), np.arange(5.0))


def test_metadata_errors_are_zarr_errors(tmp_path):
    """A broken node document raises what zarr raises on it; the others still read."""
    path = tmp_path / "m.zarr"
    _write(zarr.storage.LocalStore(path))
    (path / "plain" / "u8" / "zarr.json").write_text("{not json")
    with open_bundle(path) as view, _zarr_view(path) as ref:
        for v in (view, ref):
            assert not v.has("plain/u8")
            with pytest.raises(Exception) as got:
                v._node("plain/u8")
            assert isinstance(got.value, json.JSONDecodeError)
        np.testing.assert_array_equal(view.read("plain/f32"), ref.read("plain/f32"))


def test_corrupt_stored_entries_are_refused_as_zipfile_refuses_them(tmp_path):
    """The direct read of a stored entry checks what zipfile checks: the CRC-32, the local
    header's magic and name."""
    import zipfile

    from kibotos.errors import BundleError

    path = tmp_path / "b.zarr.zip"
    store = zarr.storage.ZipStore(path, mode="w")
    _write(store)
    store.close()
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        data = zf.getinfo("plain/none/c/0")
        meta = zf.getinfo("plain/u8/zarr.json")
    body = data.header_offset + 30 + len(data.filename.encode())
    raw[body + 3] ^= 0xFF  # a flipped byte in the chunk: CRC mismatch
    raw[meta.header_offset] = ord("X")  # a broken local header magic
    broken = tmp_path / "broken.zarr.zip"
    broken.write_bytes(bytes(raw))
    with open_bundle(broken) as view, _zarr_view(broken) as ref:
        for v in (view, ref):
            with pytest.raises(BundleError) as exc:
                v.read("plain/none")
            assert exc.value.reason_code == "dataset_unreadable" and "CRC" in str(exc.value)
            with pytest.raises(zipfile.BadZipFile, match="magic"):
                v._node("plain/u8")
        np.testing.assert_array_equal(view.read("plain/f32"), ref.read("plain/f32"))
