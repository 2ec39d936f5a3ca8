"""Open a bundle safely: every check that bounds memory and disk runs before data is read.

Hostile archives (zip bombs, path tricks, symlinks, absurd declared shapes, truncated
files, oversized attributes) raise ``BundleError`` with a reason code; nothing is loaded
whose declared size exceeds ``Limits``.
"""

from __future__ import annotations

import json
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from math import prod
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage
from zarr.abc.store import Store
from zarr.core.chunk_grids import RegularChunkGrid

from kibotos.bundle import codecs as _codecs  # noqa: F401  (bounded zstd/gzip decoding)
from kibotos.bundle.direct import DirectTree, LightArray, cached_lookup, is_array, is_group, read_zip_entry
from kibotos.bundle.limits import Limits, ResourceLimitExceeded, check, check_deadline
from kibotos.bundle.manifest import Manifest
from kibotos.errors import BundleError

MANIFEST_GROUP = "manifest"
TIMESTAMPS = "kinematics/timestamps_ms"
JOINT_POS = "kinematics/joint_pos"
JOINT_VEL = "kinematics/joint_vel"
VIDEO_ENCODED = "video/primary/encoded"
VIDEO_FRAMES = "video/primary/frames"
SECONDARY_PREFIX = "secondary_"  # video/secondary_<name>/..., manifest camera/video "secondary_<name>"


def video_paths(camera: str) -> tuple[str, str]:
    """``(encoded, frames)`` array paths of ``camera`` ("primary" or "secondary_<name>")."""
    return f"video/{camera}/encoded", f"video/{camera}/frames"


def _reject(reason: str, message: str) -> BundleError:
    return BundleError(message, reason_code=reason)


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise _reject("bundle_unreadable", f"not a zip archive or truncated: {exc}") from exc
    except OSError as exc:
        raise _reject("bundle_unreadable", f"cannot read archive: {exc}") from exc


def _check_zip(path: Path, limits: Limits) -> dict[str, int]:
    """The archive's entries ``{name: declared uncompressed size}`` after the safety checks."""
    with _open_zip(path) as zf:
        return _check_zip_entries(zf, limits)


def _check_zip_entries(zf: zipfile.ZipFile, limits: Limits) -> dict[str, int]:
    """``_check_zip`` on an archive already open."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise _reject("bundle_too_many_entries", f"{len(infos)} entries > {limits.max_entries}")
    total = 0
    for info in infos:
        name = info.filename
        # PurePosixPath(name).parts for a relative name, without building the path
        parts = tuple(part for part in name.split("/") if part not in ("", "."))
        if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or ":" in name:
            raise _reject("bundle_unsafe_path", f"unsafe entry name {name!r}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise _reject("bundle_unsafe_path", f"symlink entry {name!r}")
        if len(name) > limits.max_key_length or len(parts) > limits.max_key_depth:
            raise _reject("bundle_unsafe_path", f"entry name of {len(name)} characters, {len(parts)} levels")
        total += info.file_size
        if total > limits.max_archive_bytes:
            raise _reject("bundle_too_large", f"uncompressed size exceeds {limits.max_archive_bytes} bytes")
        if info.file_size > (1 << 20) and info.file_size > limits.max_compression_ratio * max(info.compress_size, 1):
            raise _reject("bundle_zip_bomb", f"entry {name!r} expands {info.file_size / max(info.compress_size, 1):.0f}x")
        if name.endswith("zarr.json") and info.file_size > limits.max_metadata_bytes:
            raise _reject("bundle_metadata_too_large", f"{name!r} is {info.file_size} bytes")
    names = [i.filename for i in infos]
    if len(names) != len(set(names)):
        raise _reject("bundle_duplicate_entries", "archive holds duplicate entry names")
    return {i.filename: i.file_size for i in infos}


def _check_dir(path: Path, limits: Limits) -> dict[str, int]:
    root = path.resolve()
    total = count = 0
    entries: dict[str, int] = {}
    for item in root.rglob("*"):
        if item.is_symlink():
            raise _reject("bundle_unsafe_path", f"symlink {item.relative_to(root)}")
        if item.is_file():
            rel = item.relative_to(root).as_posix()
            if len(rel) > limits.max_key_length or rel.count("/") >= limits.max_key_depth:
                raise _reject("bundle_unsafe_path", f"file name of {len(rel)} characters")
            count += 1
            size = item.stat().st_size
            total += size
            if count > limits.max_entries:
                raise _reject("bundle_too_many_entries", f"more than {limits.max_entries} files")
            if total > limits.max_archive_bytes:
                raise _reject("bundle_too_large", f"size exceeds {limits.max_archive_bytes} bytes")
            if item.name == "zarr.json" and size > limits.max_metadata_bytes:
                raise _reject("bundle_metadata_too_large", f"{item.relative_to(root)} is {size} bytes")
            entries[rel] = size
    return entries


def check_archive(path: str | Path, limits: Limits | None = None) -> None:
    """The pre-read safety checks of ``open_bundle`` alone (entry names, symlinks, sizes,
    compression ratios, metadata sizes), for code that reads the raw entries itself
    (the hash tree). Raises ``BundleError`` with a reason code."""
    limits = limits or Limits()
    path = Path(path)
    if not path.exists():
        raise _reject("bundle_not_found", f"no such bundle: {path}")
    if path.is_dir():
        _check_dir(path, limits)
    else:
        _check_zip(path, limits)


class BoundedZipStore(zarr.storage.ZipStore):
    """A read-only zip store that never decompresses more than an entry's declared size:
    zipfile inflates a whole compressed block at once on ``read()``, so an entry whose
    header claims 1 MiB but which inflates to 1 GiB would cost 1 GiB before the CRC check
    fails. Reading in 1 MiB blocks bounds each step; zipfile stops at the declared size."""

    _BLOCK = 1 << 20

    def _get(self, key, prototype, byte_range=None):
        if not self._is_open:
            self._sync_open()
        try:
            info = self._zf.getinfo(key)
        except KeyError:
            return None
        start, end = 0, info.file_size
        if byte_range is not None:
            from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

            if isinstance(byte_range, RangeByteRequest):
                start, end = byte_range.start, min(byte_range.end, info.file_size)
            elif isinstance(byte_range, OffsetByteRequest):
                start = byte_range.offset
            elif isinstance(byte_range, SuffixByteRequest):
                start = max(0, info.file_size - byte_range.suffix)
            else:
                raise TypeError(f"Unexpected byte_range, got {byte_range}.")
        return prototype.buffer.from_bytes(read_zip_entry(self._zf, info, start, end))


@dataclass(frozen=True)
class ArrayInfo:
    path: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    chunks: int
    chunk_bytes: int = 0  # one chunk decoded (the declared chunk shape x itemsize)
    codecs: tuple[str, ...] = ()


class BundleView:
    """Read-only, size-bounded access to one bundle. Use ``open_bundle``.

    Nodes and arrays are read through ``tree`` (``kibotos.bundle.direct``: on the calling
    thread) when the bundle is a plain Zarr v3 hierarchy, else through zarr (``root``)."""

    def __init__(self, path: Path, root: zarr.Group | None, store, limits: Limits,
                 entries: dict[str, int] | None = None, tree: DirectTree | None = None):
        if root is None and tree is None:
            raise ValueError("a bundle view needs a zarr root or a direct tree")
        self.path = path
        self._zarr_root = root
        self._tree = tree
        self._store = store
        self.limits = limits
        self._entries = entries if entries is not None else {}  # stored keys -> declared size
        self._cache: dict[str, np.ndarray] = {}
        # node lookups and array infos, each made once per view: every lookup is a round
        # trip through zarr's event loop thread, and gates A-E ask for the same nodes ~60
        # times per episode (issue 17: a fixed cost as large as a small episode's decode)
        self._nodes: dict[str, Any] = {}
        self._infos: dict[str, ArrayInfo] = {}
        self._array_list: list[ArrayInfo] | None = None
        self.decoded_bytes = 0  # what ``read`` has decoded, against ``max_total_decoded_bytes``
        self._memo: dict[Any, Any] = {}
        self._stored: dict[str, int] = {}  # array path -> its stored chunk entries

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per view and ``key``: what several gates derive from the same
        arrays (the joint derivatives, the noise level) is computed once per episode. The
        value is shared: callers must not modify it."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def close(self) -> None:
        if self._tree is not None:
            self._tree.close()
        close = getattr(self._store, "close", None)
        if close is not None and (self._zarr_root is not None or getattr(self._store, "_is_open", True)):
            close()

    @property
    def _root(self) -> zarr.Group:
        """zarr's root group, opened on first use when the direct tree serves the rest."""
        if self._zarr_root is None:
            self._zarr_root = zarr.open_group(store=self._store, mode="r")
        return self._zarr_root

    def _lookup(self, path: str) -> Any:
        """``root[path]``: through the direct tree for a plain path (no empty, ``.`` or
        ``..`` segment: zarr normalises or refuses those itself)."""
        if self._tree is not None and all(part not in ("", ".", "..") for part in path.split("/")):
            return self._tree.node(path)
        return self._root[path]

    def __enter__(self) -> "BundleView":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @cached_property
    def manifest_raw(self) -> dict[str, Any]:
        try:
            group = self._lookup(MANIFEST_GROUP)
        except KeyError as exc:
            raise _reject("manifest_missing", "bundle has no 'manifest' group") from exc
        except BundleError:
            raise
        except Exception as exc:  # not JSON, nested too deep, not a Zarr node document
            raise _reject("manifest_invalid", f"manifest/zarr.json cannot be parsed: {type(exc).__name__}: "
                                              f"{str(exc)[:200]}") from exc
        if not is_group(group):
            raise _reject("manifest_missing", "'manifest' is not a group")
        return dict(group.attrs.asdict())

    @cached_property
    def manifest(self) -> Manifest:
        """The validated manifest; ``BundleError(manifest_invalid)`` lists what is wrong."""
        from pydantic import ValidationError

        try:
            return Manifest.model_validate(self.manifest_raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:10])
            raise _reject("manifest_invalid", problems) from exc

    def secondary_cameras(self) -> list[str]:
        """The optional secondary cameras, ``secondary_<name>`` keys, sorted: every group
        ``video/secondary_<name>`` and every such entry of the manifest's ``video`` or
        ``camera`` (a stream without its manifest entry, or the reverse, is still listed:
        the checks that read them report what is missing)."""
        names = set(self.manifest.video) | set(self.manifest.camera)
        try:
            video = self._lookup("video")
            if is_group(video):
                members = self._tree.members("video", max_depth=0) if self._tree is not None else video.members()
                names |= {name for name, node in members if is_group(node)}
        except (KeyError, ValueError, OSError):
            pass
        return sorted(n for n in names if n.startswith(SECONDARY_PREFIX) and len(n) > len(SECONDARY_PREFIX))

    def _node(self, path: str) -> Any:
        """``self._root[path]``, looked up once (a failed lookup raises the same error again)."""
        return cached_lookup(self._nodes, path, self._lookup)

    def has(self, path: str) -> bool:
        try:
            node = self._node(path)
        except (KeyError, ValueError, OSError):
            return False
        return is_array(node)

    def info(self, path: str) -> ArrayInfo:
        if path not in self._infos:
            self._infos[path] = self._info(path)
        return self._infos[path]

    def _info(self, path: str) -> ArrayInfo:
        try:
            arr = self._node(path)
        except KeyError as exc:
            raise _reject("missing_dataset", f"missing dataset {path}") from exc
        except Exception as exc:  # malformed zarr.json of that node
            raise _reject("bundle_malformed", f"cannot open {path}: {exc}") from exc
        if not is_array(arr):
            raise _reject("missing_dataset", f"{path} is not an array")
        if isinstance(arr, LightArray):  # a plain document: already checked and sized
            itemsize = arr.dtype.itemsize
            chunks = prod(-(-s // c) for s, c in zip(arr.shape, arr.chunk_shape)) if arr.shape else 1
            return ArrayInfo(path, arr.shape, str(arr.dtype), prod(arr.shape) * itemsize, chunks,
                             prod(arr.chunk_shape) * itemsize, arr.codecs)
        try:
            shape = tuple(int(s) for s in arr.shape)
            dtype = np.dtype(arr.dtype) if not hasattr(arr.dtype, "to_native_dtype") else arr.dtype.to_native_dtype()
            itemsize = np.dtype(dtype).itemsize
            nbytes = prod(shape) * itemsize
            grid = arr.metadata.chunk_grid
            if shape and not isinstance(grid, RegularChunkGrid):
                raise ValueError(f"chunk grid {type(grid).__name__} is not a regular grid")
            chunk_shape = tuple(int(c) for c in grid.chunk_shape) if isinstance(grid, RegularChunkGrid) else ()
            chunks = prod(-(-s // max(c, 1)) for s, c in zip(shape, chunk_shape)) if shape else 1
            listed = arr.metadata.to_dict().get("codecs", [])
            codecs = tuple(str(c.get("name")) if isinstance(c, dict) else str(c)
                           for c in (listed if isinstance(listed, list | tuple) else []))
        except BundleError:
            raise
        except Exception as exc:  # a chunk grid or dtype zarr opens but cannot size
            raise _reject("bundle_malformed", f"cannot size {path}: {type(exc).__name__}: {exc}") from exc
        return ArrayInfo(path, shape, str(np.dtype(dtype)), nbytes, chunks, prod(chunk_shape) * itemsize, codecs)

    def stored_chunks(self, path: str) -> int:
        """How many chunk entries of array ``path`` the bundle stores (counted once per
        path: gate A asks for every array, and again before each read)."""
        if path not in self._stored:
            prefix = path.rstrip("/") + "/"
            self._stored[path] = sum(1 for k in self._entries if k.startswith(prefix) and not k.endswith("zarr.json"))
        return self._stored[path]

    def check_readable(self, info: ArrayInfo) -> None:
        """Every bound a read of ``info`` must fit, from its metadata alone (nothing is
        read): declared bytes, chunks, chunk bytes, codecs, fill-value bytes, the view's
        total decoded bytes. Raises ``BundleError`` with the reason code."""
        lim, path = self.limits, info.path
        if info.nbytes > lim.max_array_bytes:
            raise _too_large(path, info.nbytes, lim)
        if info.chunks > lim.max_chunks:
            raise _reject("dataset_too_many_chunks", f"{path} declares {info.chunks} chunks > {lim.max_chunks}")
        check("max_chunk_bytes", info.chunk_bytes, lim.max_chunk_bytes, f"{path} chunk bytes", dataset=path)
        bad = [c for c in info.codecs if c not in lim.allowed_codecs]
        if bad:
            raise _reject("codec_not_allowed", f"{path} uses codec(s) {bad[:5]}; allowed: {list(lim.allowed_codecs)}")
        missing = max(0, info.chunks - self.stored_chunks(path))
        check("max_fill_value_bytes", min(missing * info.chunk_bytes, info.nbytes), lim.max_fill_value_bytes,
              f"{path}: bytes backed only by the fill value ({missing} of {info.chunks} chunks absent)", dataset=path)

    def read(self, path: str) -> np.ndarray:
        """Load one array after checking its declared size and chunk count."""
        if path in self._cache:
            return self._cache[path]
        check_deadline(f"reading {path}")
        info = self.info(path)
        self.check_readable(info)
        check("max_total_decoded_bytes", self.decoded_bytes + info.nbytes, self.limits.max_total_decoded_bytes,
              f"decoded bytes with {path}", dataset=path)
        try:
            node = self._node(path)
            if not is_array(node):  # info() refused it; a group here is malformed
                raise TypeError(f"{path} is not an array")
            data = self._tree.read(path, node) if self._tree is not None else None
            if data is None:  # no direct tree, or a grid or codec it leaves to zarr
                data = np.asarray(node[...])
        except (ResourceLimitExceeded, MemoryError):
            raise  # MemoryError: the worker's memory ceiling (run_gate names it)
        except Exception as exc:  # corrupt chunk, codec error, truncated member
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ResourceLimitExceeded):
                raise cause from exc
            raise _reject("dataset_unreadable", f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
        self.decoded_bytes += info.nbytes
        self._cache[path] = data
        return data

    def arrays(self) -> list[ArrayInfo]:
        """Every array in the bundle (metadata only), sorted by path; the tree is walked
        once per view."""
        if self._array_list is None:
            self._array_list = self._walk_arrays()
        return list(self._array_list)

    def _walk_arrays(self) -> list[ArrayInfo]:
        # the whole tree in one listing (one round trip through zarr's event loop, not
        # one per group), and each array node kept for the lookups that follow
        found: list[ArrayInfo] = []
        members = self._tree.members() if self._tree is not None else self._root.members(max_depth=None)
        for path, node in members:
            if not is_group(node):
                self._nodes.setdefault(path, node)
                found.append(self.info(path))
        return sorted(found, key=lambda a: a.path)

    def node_attrs(self, path: str) -> dict[str, Any]:
        return dict(self._lookup(path).attrs.asdict())


def open_bundle(path: str | Path, limits: Limits | None = None) -> BundleView:
    """Open ``*.zarr.zip`` (zip store) or a directory store, read-only, after safety checks."""
    limits = limits or Limits()
    path = Path(path)
    if not path.exists():
        raise _reject("bundle_not_found", f"no such bundle: {path}")
    store: Store
    zf = None
    try:
        if path.is_dir():
            entries = _check_dir(path, limits)
            store = zarr.storage.LocalStore(path, read_only=True)
        else:
            zf = _open_zip(path)
            entries = _check_zip_entries(zf, limits)
            store = BoundedZipStore(path, mode="r")
        # a plain Zarr v3 hierarchy is read on this thread (issue 17); anything else
        # (Zarr v2, consolidated metadata, no root group) is zarr's to open or refuse
        tree = DirectTree(path, entries, store, zf)
        if tree.root_metadata() is not None:
            return BundleView(path, None, store, limits, entries, tree)
        tree.close()
        zf = None
        root = zarr.open_group(store=store, mode="r")
    except BundleError:
        if zf is not None:
            zf.close()
        raise
    except Exception as exc:
        if zf is not None:
            zf.close()
        raise _reject("bundle_unreadable", f"not a readable Zarr v3 bundle: {type(exc).__name__}: {exc}") from exc
    return BundleView(path, root, store, limits, entries)


def _too_large(path: str, nbytes: int, limits: Limits) -> BundleError:
    exc = _reject("dataset_too_large", f"{path} declares {nbytes} bytes > max_array_bytes {limits.max_array_bytes}")
    exc.metrics = {"limit": "max_array_bytes", "limit_value": limits.max_array_bytes, "observed": nbytes,
                   "dataset": path}
    return exc


def metadata_json(view: BundleView) -> str:
    return json.dumps(view.manifest_raw, sort_keys=True)
