"""The bundle hash tree: one content hash per Zarr node, combined into a Merkle root.

A bundle is a Zarr v3 store: a set of keys (zip entries or files) such as
``kinematics/joint_pos/zarr.json`` and ``kinematics/joint_pos/c/0/0``. Every key belongs
to exactly one *node* — the deepest directory above it holding a ``zarr.json``::

    ""                       group       zarr.json                     (root attribute set)
    manifest                 group       zarr.json                     (the manifest)
    kinematics/joint_pos     array       zarr.json, c/0/0, c/1/0, ...  (a dataset)

Definitions (version 1; a signer in any language can reproduce them):

* entry digest = SHA-256 of the key's bytes (decompressed: the root does not depend on
  zip vs directory store, entry order or compression);
* node hash = SHA-256 of ``b"kibotos.hashtree.node.v1\\0" + path + b"\\0"`` followed, for
  each key of the node — ``zarr.json`` first, then the others sorted by UTF-8 bytes — by
  ``relative_key + b"\\0" + size as 8-byte big-endian + entry digest``. An array's node
  hash covers its metadata and every chunk; a group's covers its attribute set;
* Merkle root = RFC 6962 Merkle tree hash over the node hashes sorted by path
  (leaf = SHA-256(0x00 || node hash), inner node = SHA-256(0x01 || left || right));
* manifest hash = SHA-256 of the raw bytes of ``manifest/zarr.json``.

Hashing streams every entry in 1 MiB blocks after ``check_archive`` has bounded entry
count, sizes and compression ratios: memory stays flat whatever the archive claims.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import zipfile
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

from kibotos.bundle.reader import Limits, check_archive
from kibotos.errors import BundleError

NODE_DOMAIN = b"kibotos.hashtree.node.v1\x00"
METADATA = "zarr.json"
MANIFEST_KEY = "manifest/zarr.json"
_BLOCK = 1 << 20
_DIGITS = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class EntryHash:
    key: str  # relative to its node
    size: int
    sha256: str


@dataclass(frozen=True)
class NodeHash:
    path: str
    kind: str  # "array", "group", or "invalid" (unparseable zarr.json; still hashed)
    sha256: str
    entries: tuple[EntryHash, ...]
    metadata: Mapping | None = None  # the parsed zarr.json, when it parsed

    @property
    def size_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def unexpected_entries(self) -> list[str]:
        """Keys that no Zarr v3 node of this kind holds (anything but ``zarr.json`` in a
        group; anything but ``zarr.json`` and chunk keys in an array)."""
        if self.kind != "array":
            return [e.key for e in self.entries if e.key != METADATA]
        return [e.key for e in self.entries if e.key != METADATA and not _is_chunk_key(e.key, self.metadata or {})]


@dataclass(frozen=True)
class HashTree:
    nodes: tuple[NodeHash, ...]  # sorted by path
    merkle_root: str
    manifest_sha256: str | None  # None: the bundle has no manifest/zarr.json
    manifest_raw: bytes | None = field(default=None, repr=False)  # its bytes (bounded by Limits)

    def leaves(self) -> dict[str, str]:
        """``{node path: node hash}`` — what a signature sidecar lists."""
        return {n.path: n.sha256 for n in self.nodes}

    @property
    def datasets(self) -> dict[str, str]:
        return {n.path: n.sha256 for n in self.nodes if n.kind == "array"}

    @property
    def attribute_sets(self) -> dict[str, str]:
        return {n.path: n.sha256 for n in self.nodes if n.kind != "array"}

    def diff(self, other: Mapping[str, str]) -> list[str]:
        """Paths whose hash differs from ``other`` (changed, added or removed), sorted."""
        mine = self.leaves()
        return sorted(p for p in mine.keys() | other.keys() if mine.get(p) != other.get(p))

    def problems(self) -> list[str]:
        """Structural faults: stray keys, nodes nested in arrays (empty when well-formed)."""
        out = [f"{n.path}/{k}".lstrip("/") for n in self.nodes for k in n.unexpected_entries()]
        arrays = {n.path for n in self.nodes if n.kind == "array"}
        for n in self.nodes:
            parts = n.path.split("/") if n.path else []
            if n.kind == "invalid":
                out.append(f"{n.path or '<root>'} (zarr.json is not a Zarr v3 node document)")
            if any(part in ("", ".") for part in parts):
                out.append(f"{n.path} (empty or '.' path segment)")
            # ancestors by prefix, not by scanning every array: linear in the node count
            if any("/".join(parts[:i]) in arrays for i in range(1, len(parts))):
                out.append(f"{n.path} (node inside an array)")
        return out


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash of ``leaves`` (leaf data, here node hashes)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = [hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves]
    return _mth(level)


def _mth(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)  # largest power of two < n
    return hashlib.sha256(b"\x01" + _mth(hashes[:k]) + _mth(hashes[k:])).digest()


def node_hash(path: str, entries: Sequence[EntryHash]) -> str:
    """The node hash of ``path`` over its entries (ordered here, whatever the input order)."""
    h = hashlib.sha256(NODE_DOMAIN + path.encode() + b"\x00")
    for e in sorted(entries, key=_entry_order):
        h.update(e.key.encode() + b"\x00" + e.size.to_bytes(8, "big") + bytes.fromhex(e.sha256))
    return h.hexdigest()


def _entry_order(e: EntryHash) -> tuple[int, bytes]:
    return (0 if e.key == METADATA else 1, e.key.encode())


def _is_chunk_key(rel: str, meta: Mapping) -> bool:
    enc = meta.get("chunk_key_encoding") if isinstance(meta, Mapping) else None
    enc = enc if isinstance(enc, Mapping) else {"name": "default"}
    listed = enc.get("configuration")
    config: Mapping = listed if isinstance(listed, Mapping) else {}
    if enc.get("name") == "v2":
        sep = config.get("separator", ".")
        return all(_DIGITS.match(p) for p in rel.split(sep)) if sep in ("/", ".") else False
    sep = config.get("separator", "/")
    if sep not in ("/", "."):
        return False
    if rel == "c":
        return True
    return rel.startswith("c" + sep) and all(_DIGITS.match(p) for p in rel[2:].split(sep))


def _digest(stream: IO[bytes]) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    while block := stream.read(_BLOCK):
        h.update(block)
        size += len(block)
    return size, h.hexdigest()


def _read_all(stream: IO[bytes]) -> bytes:
    """An entry's bytes in 1 MiB steps: one ``read()`` would inflate the whole compressed
    entry before zipfile cuts it to the declared size (an entry can claim 1 KiB and
    inflate to 1 GiB)."""
    out = bytearray()
    while block := stream.read(_BLOCK):
        out += block
    return bytes(out)


def _zip_entries(path: Path) -> Generator[tuple[str, Callable[[], IO[bytes]]]]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.filename.endswith("/") and info.file_size == 0:
                continue  # a directory record carries no content
            yield info.filename, partial(zf.open, info)


def _open_binary(item: Path) -> IO[bytes]:
    return open(item, "rb")


def _dir_entries(path: Path) -> Generator[tuple[str, Callable[[], IO[bytes]]]]:
    root = path.resolve()
    for item in sorted(root.rglob("*")):
        if item.is_file() and not item.is_symlink():
            yield item.relative_to(root).as_posix(), partial(_open_binary, item)


def _owner(key: str, node_paths: set[str]) -> str:
    """The deepest node path above ``key`` ("" — the root — when no other)."""
    cut = len(key)
    while (cut := key.rfind("/", 0, cut)) > 0:
        if key[:cut] in node_paths:
            return key[:cut]
    return ""


def _parse_metadata(raw: bytes) -> Mapping | None:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def hash_bundle(path: str | Path, limits: Limits | None = None) -> HashTree:
    """The hash tree of a bundle (zip store or directory store).

    :raises BundleError: the archive fails the safety checks (reason codes of
        ``open_bundle``), cannot be read (``bundle_unreadable``: truncated, bad CRC,
        unsupported compression or encryption) or has no root ``zarr.json``.
    """
    path = Path(path)
    check_archive(path, limits)
    entries = _zip_entries(path) if path.is_file() else _dir_entries(path)
    digests: dict[str, tuple[int, str]] = {}
    metadata: dict[str, Mapping | None] = {}
    manifest_raw = None
    try:
        with contextlib.closing(entries):
            for key, opener in entries:
                with opener() as stream:
                    if key == METADATA or key.endswith("/" + METADATA):
                        raw = _read_all(stream)  # bounded by check_archive (max_metadata_bytes)
                        digests[key] = (len(raw), hashlib.sha256(raw).hexdigest())
                        metadata[key] = _parse_metadata(raw)
                        if key == MANIFEST_KEY:
                            manifest_raw = raw
                    else:
                        digests[key] = _digest(stream)
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, NotImplementedError,
            ValueError) as exc:
        # RuntimeError: encrypted entry; NotImplementedError: unsupported compression
        raise BundleError(f"cannot read archive entry: {type(exc).__name__}: {exc}",
                          reason_code="bundle_unreadable") from exc
    node_paths = {k[: -len(METADATA)].rstrip("/") for k in metadata}
    if "" not in node_paths:
        raise BundleError("the archive has no root zarr.json: not a Zarr v3 store", reason_code="bundle_unreadable")
    grouped: dict[str, list[EntryHash]] = {p: [] for p in node_paths}
    for key, (size, sha) in digests.items():
        owner = _owner(key, node_paths)
        rel = key[len(owner) + 1:] if owner else key
        grouped[owner].append(EntryHash(rel, size, sha))
    nodes = []
    for p in sorted(node_paths, key=lambda s: s.encode()):
        meta = metadata[f"{p}/{METADATA}" if p else METADATA]
        node_type = meta.get("node_type") if meta is not None else None
        kind = node_type if node_type in ("array", "group") else "invalid"
        ents = tuple(sorted(grouped[p], key=_entry_order))
        nodes.append(NodeHash(p, kind, node_hash(p, ents), ents, meta))
    root = merkle_root([bytes.fromhex(n.sha256) for n in nodes]).hex()
    manifest_sha = hashlib.sha256(manifest_raw).hexdigest() if manifest_raw is not None else None
    return HashTree(tuple(nodes), root, manifest_sha, manifest_raw)


def root_of_leaves(leaves: Mapping[str, str]) -> str:
    """The Merkle root of ``{path: node hash}`` (e.g. a sidecar's list), hex."""
    ordered = sorted(leaves.items(), key=lambda kv: kv[0].encode())
    return merkle_root([bytes.fromhex(h) for _, h in ordered]).hex()
