"""Synchronous reading of a checked Zarr v3 bundle, without zarr's event loop.

zarr 3 runs every store access on its event-loop thread, and decodes zstd/gzip chunks on
a thread pool: each node lookup or array read is one or more round trips between threads
(~0.5 ms each), which made opening a bundle and reading its metadata cost more than the
cheap gates' own work (issue 17). ``DirectTree`` reads the same entries from the archive
already opened and checked by ``open_bundle``, on the calling thread:

* node lookups read ``<path>/zarr.json`` and parse it with zarr's own metadata classes
  (``_build_metadata_v3``): the same documents are accepted, the same errors raised, and
  the nodes returned are zarr's ``Array`` / ``Group`` objects;
* the tree walk follows zarr's ``members(max_depth=None)``: a group's children are the
  names below it, each with its own ``zarr.json`` (others skipped), groups recursed;
* array data is decoded by zarr's own codec objects (their ``_decode_sync``: the bounded
  zstd/gzip of ``kibotos.bundle.codecs``, bytes, crc32c, transpose) on a regular chunk
  grid, with the fill value for absent chunks. Any other codec or grid returns ``None``:
  the caller reads through zarr instead.

Parsing a document with zarr's metadata classes costs ~0.2 ms (pydantic-like validation,
config look-ups): more than all the arrays' reads together on a short episode. A document
in the plain form ``write_bundle`` and zarr write it -- a group with attributes, or an
array of a fixed-size numeric type, one regular chunk grid, the default chunk keys, an
explicit fill value of its type, and the codecs ``bytes`` (+ ``zstd`` or ``gzip``) -- is
read into a ``LightGroup`` / ``LightArray`` here instead (``light_node``: strict: any other
key, type, codec or configuration and the document goes to zarr's parser, so every
document zarr accepts is still accepted, and read as zarr reads it).

Entries are read with the same bound as ``BoundedZipStore``: never more than an entry's
declared size, in 1 MiB blocks.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from math import prod
from pathlib import Path
from typing import Any, cast

import numpy as np
import zarr
from zarr.codecs.bytes import BytesCodec
from zarr.codecs.crc32c_ import Crc32cCodec
from zarr.codecs.transpose import TransposeCodec
from zarr.core.array_spec import parse_array_config
from zarr.core.buffer import default_buffer_prototype
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.core.codec_pipeline import fill_value_or_default
from zarr.core.group import GroupMetadata, _build_metadata_v3, _build_node
from zarr.core.metadata.v3 import ArrayV3Metadata

from kibotos.bundle.codecs import SLACK_BYTES, BoundedGzipCodec, BoundedZstdCodec, gzip_bounded, zstd_bounded

ZARR_JSON = "zarr.json"
_BLOCK = 1 << 20
# the codecs decoded here; any other (a config may allow more) goes through zarr
_DIRECT_CODECS = (BytesCodec, BoundedZstdCodec, BoundedGzipCodec, Crc32cCodec, TransposeCodec)


# --- plain documents, read without zarr's parser ------------------------------------------

_GROUP_KEYS = {"zarr_format", "node_type", "attributes", "consolidated_metadata"}
_ARRAY_KEYS = {"zarr_format", "node_type", "shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value",
               "codecs", "attributes", "dimension_names", "storage_transformers"}
_INT_TYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_FLOAT_TYPES = {"float32", "float64"}


class _Attrs:
    """``node.attrs`` as zarr's: ``asdict()`` gives the attributes."""

    def __init__(self, attributes: dict[str, Any]):
        self._attributes = attributes

    def asdict(self) -> dict[str, Any]:
        return dict(self._attributes)


@dataclass(frozen=True)
class LightGroup:
    path: str
    attributes: dict[str, Any]

    @property
    def attrs(self) -> _Attrs:
        return _Attrs(self.attributes)


@dataclass(frozen=True)
class LightArray:
    path: str
    shape: tuple[int, ...]
    dtype: np.dtype  # native byte order, as zarr returns the data
    chunk_shape: tuple[int, ...]
    separator: str  # of the default chunk key encoding
    fill_value: Any
    endian: str  # "<" or ">": how the bytes codec stores multi-byte items
    compressor: str | None  # "zstd", "gzip" or None
    codecs: tuple[str, ...]  # the codec names, as listed
    attributes: dict[str, Any]

    @property
    def attrs(self) -> _Attrs:
        return _Attrs(self.attributes)

    def chunk_key(self, coords: tuple[int, ...]) -> str:
        return self.separator.join(map(str, ("c", *coords)))


def cached_lookup(cache: dict[str, Any], path: str, lookup: Callable[[str], Any]) -> Any:
    """``lookup(path)``, made once per ``cache``: a failed lookup's error is kept and
    raised again on every later call (a bundle's node lookups are asked for many times
    per episode, and a missing node must stay missing)."""
    if path not in cache:
        try:
            cache[path] = lookup(path)
        except Exception as exc:
            cache[path] = exc
    node = cache[path]
    if isinstance(node, Exception):
        raise node
    return node


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _named(entry: Any) -> tuple[str, dict[str, Any]] | None:
    """``(name, configuration)`` of a ``{"name", "configuration"?}`` object, else None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or set(entry) - {"name", "configuration"}:
        return None
    config = entry.get("configuration", {})
    return (entry["name"], config) if isinstance(config, dict) else None


def light_node(path: str, doc: Any) -> LightGroup | LightArray | None:
    """The node of a plain metadata document, or ``None``: zarr's parser reads it."""
    if not isinstance(doc, dict) or doc.get("zarr_format") != 3 or not isinstance(doc.get("attributes", {}), dict):
        return None
    attributes = doc.get("attributes", {})
    if doc.get("node_type") == "group":
        if set(doc) - _GROUP_KEYS or doc.get("consolidated_metadata") is not None:
            return None
        return LightGroup(path, attributes)
    if doc.get("node_type") != "array" or set(doc) - _ARRAY_KEYS or doc.get("storage_transformers", []) != []:
        return None
    shape, dtype_name = doc.get("shape"), doc.get("data_type")
    if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
        return None
    if not isinstance(dtype_name, str) or dtype_name not in _INT_TYPES | _FLOAT_TYPES | {"bool"}:
        return None
    dims = doc.get("dimension_names")
    if dims is not None and not (isinstance(dims, list) and len(dims) == len(shape)
                                 and all(d is None or isinstance(d, str) for d in dims)):
        return None
    grid, keys = _named(doc.get("chunk_grid")), _named(doc.get("chunk_key_encoding"))
    if grid is None or grid[0] != "regular" or set(grid[1]) != {"chunk_shape"}:
        return None
    chunk_shape = grid[1]["chunk_shape"]
    if not isinstance(chunk_shape, list) or len(chunk_shape) != len(shape) or \
            not all(_is_int(c) and c >= 1 for c in chunk_shape):
        return None
    if keys is None or keys[0] != "default" or set(keys[1]) - {"separator"} or \
            keys[1].get("separator", "/") not in ("/", "."):
        return None
    dtype = np.dtype(dtype_name)
    fill = doc.get("fill_value")
    if dtype_name == "bool":
        if not isinstance(fill, bool):
            return None
    elif dtype_name in _INT_TYPES:
        if not _is_int(fill) or not np.iinfo(dtype).min <= cast(int, fill) <= np.iinfo(dtype).max:
            return None
    elif not (_is_int(fill) or isinstance(fill, float)) or not abs(cast(float, fill)) <= min(np.finfo(dtype).max, 2.0**53):
        return None  # NaN, infinities, values the type cannot hold: zarr's to judge
    codecs = doc.get("codecs")
    if not isinstance(codecs, list) or not 1 <= len(codecs) <= 2:
        return None
    named = [_named(c) for c in codecs]
    if any(n is None for n in named):
        return None
    (first, first_cfg), *rest = named  # type: ignore[misc]
    endian = first_cfg.get("endian")
    if first != "bytes" or set(first_cfg) - {"endian"} or (endian is None and dtype.itemsize > 1) \
            or endian not in (None, "little", "big"):
        return None
    compressor = None
    if rest:
        name, cfg = rest[0]  # type: ignore[misc]
        if name == "zstd":
            if set(cfg) != {"level", "checksum"} or not _is_int(cfg["level"]) or not isinstance(cfg["checksum"], bool):
                return None
        elif name == "gzip":
            if set(cfg) != {"level"} or not _is_int(cfg["level"]) or not 0 <= cfg["level"] <= 9:
                return None
        else:
            return None
        compressor = name
    return LightArray(path, tuple(shape), dtype, tuple(chunk_shape), keys[1].get("separator", "/"),
                      dtype.type(fill), ">" if endian == "big" else "<", compressor,
                      tuple(n for n, _ in named), attributes)  # type: ignore[misc]


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile's sizeFileHeader layout
_PLAIN_FLAGS = 0x0008 | 0x0800  # data descriptor, UTF-8 names: nothing to undo


def read_zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, start: int = 0, end: int | None = None) -> bytes:
    """Bytes ``start:end`` of one entry, never inflating past its declared size."""
    end = info.file_size if end is None else min(end, info.file_size)
    if start == 0 and end == info.file_size:
        stored = _read_stored(zf, info)
        if stored is not None:
            return stored
    out = bytearray()
    with zf.open(info) as f:
        if start:
            f.seek(start)
        while len(out) < end - start and (block := f.read(min(_BLOCK, end - start - len(out)))):
            out += block
    return bytes(out)


def _read_stored(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | None:
    """A whole stored (uncompressed) entry in two ``pread`` calls, with zipfile's checks
    (local header magic and name, CRC-32); ``None`` for any other entry (zipfile reads it).
    zipfile's ``open`` costs ~4x more per small entry (a header read, an extra-field
    parse, a stream object), and a bundle's metadata is ~15 small entries."""
    fp = getattr(zf, "fp", None)
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & ~_PLAIN_FLAGS \
            or info.compress_size != info.file_size or fp is None:
        return None
    try:
        fd = fp.fileno()
    except (AttributeError, OSError, ValueError):  # an archive in memory: zipfile reads it
        return None
    header = os.pread(fd, _LOCAL_HEADER.size, info.header_offset)
    if len(header) != _LOCAL_HEADER.size:
        raise zipfile.BadZipFile("Truncated file header")
    fields = _LOCAL_HEADER.unpack(header)
    if fields[0] != zipfile.stringFileHeader:  # type: ignore[attr-defined]
        raise zipfile.BadZipFile("Bad magic number for file header")
    name_len, extra_len = fields[10], fields[11]
    start = info.header_offset + _LOCAL_HEADER.size
    name = os.pread(fd, name_len, start)
    if name.decode("utf-8" if info.flag_bits & 0x800 else "cp437") != info.orig_filename:
        raise zipfile.BadZipFile(f"File name in directory {info.orig_filename!r} and header {name!r} differ.")
    data = os.pread(fd, info.file_size, start + name_len + extra_len)
    if len(data) != info.file_size:
        raise EOFError
    if zlib.crc32(data) != info.CRC:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {info.filename!r}")
    return data


class DirectTree:
    """The nodes and arrays of one bundle (a zip archive or a directory), read on the
    calling thread. ``entries`` are the archive's checked entries ``{key: declared size}``;
    ``store`` is the zarr store each node is bound to (for reads that fall back to zarr)."""

    def __init__(self, path: Path, entries: dict[str, int], store, zf: zipfile.ZipFile | None = None):
        self.path = path
        self.entries = entries
        self.store = store
        self._zf = zf
        self._infos = {i.filename: i for i in zf.infolist()} if zf is not None else {}
        self._config = parse_array_config(None)
        self._prototype = default_buffer_prototype()
        self._nodes: dict[str, Any] = {}  # path -> node, or the error its lookup raised
        self._dirs: dict[str, dict[str, None]] | None = None  # prefix -> names below it

    def close(self) -> None:
        if self._zf is not None:
            self._zf.close()

    # --- raw entries --------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """One stored entry's bytes, or ``None`` when the bundle has no such entry."""
        if self._zf is not None:
            info = self._infos.get(key)
            return None if info is None else read_zip_entry(self._zf, info)
        if key not in self.entries:
            return None
        with open(self.path / key, "rb") as f:  # no more than the size checked at opening
            return f.read(self.entries[key])

    def list_dir(self, prefix: str) -> list[str]:
        """The names directly below ``prefix``, as zarr's ``ZipStore.list_dir`` gives them
        (every prefix's names indexed in one pass over the entries)."""
        if self._dirs is None:
            dirs: dict[str, dict[str, None]] = {}
            for key in self.entries:
                parts = key.split("/")
                dirs.setdefault("", {}).setdefault(parts[0])
                for i in range(1, len(parts)):
                    parent = "/".join(parts[:i])
                    if key.strip("/") != parent:
                        dirs.setdefault(parent, {}).setdefault(parts[i])
            self._dirs = dirs
        return list(self._dirs.get(prefix.rstrip("/"), {}))

    # --- nodes --------------------------------------------------------------------------

    def root_metadata(self) -> GroupMetadata | None:
        """The root group's metadata when this tree can serve the bundle: a Zarr v3 group
        without consolidated metadata. ``None`` otherwise (zarr opens it, and raises what
        it raises)."""
        try:
            raw = self.get(ZARR_JSON)
            if raw is None:
                return None
            md = _build_metadata_v3(json.loads(raw))
        except Exception:
            return None
        if not isinstance(md, GroupMetadata) or md.zarr_format != 3 or md.consolidated_metadata is not None:
            return None
        return md

    def node(self, path: str) -> zarr.Array | zarr.Group:
        """``root[path]`` as zarr gives it: ``KeyError`` when ``<path>/zarr.json`` is absent,
        zarr's own errors when it does not parse. Each document is parsed once (the tree
        walk and the lookups share it)."""
        return cached_lookup(self._nodes, path, self._parse)

    def _parse(self, path: str) -> Any:
        raw = self.get(f"{path}/{ZARR_JSON}")
        if raw is None:
            raise KeyError(path)
        doc = json.loads(raw)
        light = light_node(path, doc)
        if light is not None:
            return light
        md = _build_metadata_v3(doc)
        node = _build_node(store=self.store, path=path, metadata=md)
        return zarr.Array(cast(Any, node)) if isinstance(md, ArrayV3Metadata) else zarr.Group(cast(Any, node))

    def members(self, path: str = "", max_depth: int | None = None) -> list[tuple[str, zarr.Array | zarr.Group]]:
        """``root[path].members(max_depth)``: every node below ``path`` that has its own
        ``zarr.json``, groups recursed ``max_depth`` more levels (``None``: all), keys
        relative to ``path``."""
        out: list[tuple[str, zarr.Array | zarr.Group]] = []
        groups: list[str] = []
        for name in self.list_dir(path):
            if name in (ZARR_JSON, "", ".", ".."):  # no node has such a name ("a//b" entries)
                continue
            full = f"{path}/{name}" if path else name
            try:
                node = self.node(full)
            except KeyError:  # an entry, not a node (zarr warns and skips it)
                continue
            out.append((name, node))
            if is_group(node) and (max_depth is None or max_depth > 0):
                groups.append(name)
        for name in groups:
            full = f"{path}/{name}" if path else name
            deeper = None if max_depth is None else max_depth - 1
            out += [(f"{name}/{key}", node) for key, node in self.members(full, deeper)]
        return out

    # --- array data ---------------------------------------------------------------------

    def read(self, path: str, arr: Any) -> np.ndarray | None:
        """The whole array at ``path``, decoded here; ``None`` when its grid or codecs are
        not ones this reader decodes (the caller reads it through zarr)."""
        if isinstance(arr, LightArray):
            return self._read_light(arr)
        md = arr.metadata
        if not isinstance(md, ArrayV3Metadata) or not isinstance(md.chunk_grid, RegularChunkGrid):
            return None
        if not all(isinstance(c, _DIRECT_CODECS) for c in md.codecs):
            return None
        aa: list[Any] = [c for c in md.codecs if isinstance(c, TransposeCodec)]
        ab = [c for c in md.codecs if isinstance(c, BytesCodec)]
        bb: list[Any] = [c for c in md.codecs if not isinstance(c, TransposeCodec | BytesCodec)]
        if len(ab) != 1 or list(md.codecs) != [*aa, *ab, *bb]:
            return None
        shape = tuple(int(s) for s in md.shape)
        chunk_shape = tuple(int(c) for c in md.chunk_grid.chunk_shape)
        # each codec's spec, resolved in order as zarr's codec pipeline does
        base = spec = md.get_chunk_spec((0,) * len(shape), self._config, self._prototype)
        aa_specs = []
        for codec in aa:
            aa_specs.append(spec)
            spec = codec.resolve_metadata(spec)
        ab_spec, spec = spec, ab[0].resolve_metadata(spec)
        bb_specs = []
        for codec in bb:
            bb_specs.append(spec)
            spec = codec.resolve_metadata(spec)
        out = np.empty(shape, dtype=md.dtype.to_native_dtype())
        grid = [range(-(-s // max(c, 1))) for s, c in zip(shape, chunk_shape)]
        for coords in product(*grid):
            region = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(coords, chunk_shape, shape))
            raw = self.get(f"{path}/{md.encode_chunk_key(coords)}")
            if raw is None:
                out[region] = fill_value_or_default(base)
                continue
            buf: Any = self._prototype.buffer.from_bytes(raw)
            for codec, codec_spec in zip(reversed(bb), reversed(bb_specs)):
                buf = codec._decode_sync(buf, codec_spec)
            chunk = ab[0]._decode_sync(buf, ab_spec)
            for codec, codec_spec in zip(reversed(aa), reversed(aa_specs)):
                chunk = codec._decode_sync(chunk, codec_spec)
            data = chunk.as_numpy_array()
            out[region] = data[tuple(slice(0, r.stop - r.start) for r in region)]
        return out

    def _read_light(self, arr: LightArray) -> np.ndarray:
        """As zarr reads it: each chunk decompressed within its declared size (the bounded
        codecs' bound), its bytes viewed in the stored byte order and shaped to the chunk,
        absent chunks the fill value."""
        shape, chunk_shape = arr.shape, arr.chunk_shape
        stored = arr.dtype.newbyteorder(cast(Any, arr.endian)) if arr.dtype.itemsize > 1 else arr.dtype
        bound = prod(chunk_shape) * max(arr.dtype.itemsize, 1) + SLACK_BYTES
        out = np.empty(shape, dtype=arr.dtype)
        for coords in product(*[range(-(-s // c)) for s, c in zip(shape, chunk_shape)]):
            region = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(coords, chunk_shape, shape))
            raw = self.get(f"{arr.path}/{arr.chunk_key(coords)}")
            if raw is None:
                out[region] = arr.fill_value
                continue
            if arr.compressor == "zstd":
                raw = zstd_bounded(raw, bound)
            elif arr.compressor == "gzip":
                raw = gzip_bounded(raw, bound)
            chunk = np.frombuffer(raw, dtype=stored).reshape(chunk_shape)
            out[region] = chunk[tuple(slice(0, r.stop - r.start) for r in region)]
        return out


def is_array(node: Any) -> bool:
    return isinstance(node, LightArray | zarr.Array)


def is_group(node: Any) -> bool:
    return isinstance(node, LightGroup | zarr.Group)
