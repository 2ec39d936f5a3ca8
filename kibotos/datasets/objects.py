"""Dataset versions and exports in the object store (``kibotos.objectstore``: a local
directory or S3), the durable home of what the dataset store publishes; the local
``<KIBOTOS_HOME>/datasets`` directory is a cache of it.

Keys::

    datasets/_specs/<name>.json                 the frozen spec (canonical JSON)
    datasets/<name>/blobs/<sha256>              every file, addressed by its SHA-256
    datasets/<name>/versions/v000001.json       a version's manifest: its files -> SHA-256, size
    datasets/<name>/exports/v000001-<formats>.json   an export's export.json (its "files" name the blobs)

Immutable: a blob key *is* its content's hash, so the same key always means the same
bytes (an existing blob of another size is refused; every read checks the SHA-256). A
manifest is the version's commit point, written after its blobs: one that exists already
with other bytes is refused (``dataset_object_conflict``: another writer published
another version n, or the store was tampered with), the same bytes again are a no-op, so
an upload retried after a crash is harmless. Blobs of an interrupted upload are orphans,
never read. Dataset names cannot start with ``_``, so ``_specs`` is no dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from kibotos.errors import KibotosError
from kibotos.objectstore import ObjectStoreError, sha256_file

PREFIX = "datasets"
MANIFEST_FORMAT = "kibotos-dataset-objects-1"
MAX_MANIFEST_BYTES = 64 << 20
MAX_BLOB_BYTES = 1 << 40


class DatasetObjectError(KibotosError):
    reason_code = "dataset_object_conflict"


def spec_key(name: str) -> str:
    return f"{PREFIX}/_specs/{name}.json"


def blob_key(name: str, sha256: str) -> str:
    return f"{PREFIX}/{name}/blobs/{sha256}"


def version_key(name: str, version: int) -> str:
    return f"{PREFIX}/{name}/versions/v{version:06d}.json"


def export_key(name: str, version: int, formats) -> str:
    return f"{PREFIX}/{name}/exports/v{version:06d}-{'+'.join(sorted(formats))}.json"


def read_small(objects, key: str) -> bytes | None:
    """The bytes under ``key``, or None when there is no such object."""
    if objects.stat(key) is None:
        return None
    try:
        return objects.read_bytes(objects.uri_for(key), MAX_MANIFEST_BYTES)
    except ObjectStoreError as exc:
        if exc.reason_code == "bundle_not_found":  # deleted since the stat
            return None
        raise


def put_immutable(objects, key: str, data: bytes) -> bool:
    """Store ``data`` under ``key`` unless it is there already; True when written.

    :raises DatasetObjectError: the key holds other bytes (``dataset_object_conflict``).
    """
    existing = read_small(objects, key)
    if existing is not None:
        if existing != data:
            raise DatasetObjectError(f"object {key} exists with other content (sha256 "
                                     f"{hashlib.sha256(existing).hexdigest()[:16]}… != "
                                     f"{hashlib.sha256(data).hexdigest()[:16]}…): published objects are never "
                                     "overwritten")
        return False
    objects.put_bytes(data, key)
    return True


def put_blob(objects, name: str, path: Path, sha256: str | None = None) -> str:
    """Store the file as a content-addressed blob; returns its SHA-256."""
    sha256 = sha256 or sha256_file(path)
    key = blob_key(name, sha256)
    info = objects.stat(key)
    size = path.stat().st_size
    if info is None:
        objects.put_file(path, key)
    elif info.size_bytes != size:
        raise DatasetObjectError(f"blob {key} exists with {info.size_bytes} bytes, not {size}: the store is corrupt")
    return sha256


def fetch_blob(objects, name: str, sha256: str, dest: Path) -> None:
    """Copy a blob to ``dest``, checking its SHA-256."""
    try:
        with objects.open_local(blob_key(name, sha256), MAX_BLOB_BYTES) as src:
            shutil.copyfile(src, dest)
    except ObjectStoreError as exc:
        raise DatasetObjectError(f"blob {sha256} of dataset {name} is missing from the object store: {exc}",
                                 reason_code="dataset_object_missing") from exc
    if sha256_file(dest) != sha256:
        dest.unlink(missing_ok=True)
        raise DatasetObjectError(f"blob {sha256} of dataset {name} does not match its hash",
                                 reason_code="dataset_object_corrupt")


def dataset_names(objects) -> set[str]:
    out = set()
    for info in objects.list(f"{PREFIX}/_specs/"):
        base = info.key.rsplit("/", 1)[-1]
        if base.endswith(".json"):
            out.add(base[: -len(".json")])
    return out


def versions(objects, name: str) -> set[int]:
    out = set()
    for info in objects.list(f"{PREFIX}/{name}/versions/"):
        base = info.key.rsplit("/", 1)[-1]
        if base.startswith("v") and base.endswith(".json") and base[1:-5].isdigit():
            out.add(int(base[1:-5]))
    return out


def upload_version(objects, name: str, version: int, directory: Path) -> dict:
    """Blobs of every file of the version directory, then its manifest; returns the manifest."""
    info = json.loads((directory / "version.json").read_text())
    files = {}
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        files[path.name] = {"sha256": put_blob(objects, name, path), "size": path.stat().st_size}
    manifest = {"format": MANIFEST_FORMAT, "dataset": name, "version": version,
                "content_hash": info["content_hash"], "files": files}
    put_immutable(objects, version_key(name, version), _canonical(manifest))
    return manifest


def fetch_version(objects, name: str, version: int, dest: Path) -> bool:
    """Download version ``version`` into ``dest`` (created whole, read-only, by a rename);
    False when the object store has no such version."""
    raw = read_small(objects, version_key(name, version))
    if raw is None:
        return False
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("content_hash"), str):
            raise ValueError("no files / content_hash")
    except (ValueError, AttributeError) as exc:
        raise DatasetObjectError(f"the manifest of {name}@v{version} in the object store is malformed: {exc}",
                                 reason_code="dataset_object_corrupt") from exc
    tmp = dest.with_name(f".fetch-{dest.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for fname, f in sorted(manifest["files"].items()):
            if "/" in fname or fname.startswith("."):
                raise DatasetObjectError(f"manifest of {name}@v{version} names a bad file {fname!r}",
                                         reason_code="dataset_object_corrupt")
            fetch_blob(objects, name, f["sha256"], tmp / fname)
        if sha256_file(tmp / "episodes.jsonl") != manifest["content_hash"]:
            raise DatasetObjectError(f"{name}@v{version} in the object store does not match its content hash",
                                     reason_code="dataset_object_corrupt")
        for p in tmp.iterdir():
            p.chmod(0o444)
        try:
            os.replace(tmp, dest)
        except OSError:  # another reader fetched it meanwhile: same bytes
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def upload_export(objects, name: str, version: int, directory: Path, manifest: dict) -> None:
    """Blobs of an export's files, then its ``export.json`` as the manifest."""
    key = export_key(name, version, manifest["formats"])
    if read_small(objects, key) == (directory / "export.json").read_bytes():
        return  # stored already (its blobs went before it)
    for rel, sha in sorted(manifest["files"].items()):
        put_blob(objects, name, directory / rel, sha)
    put_immutable(objects, key, (directory / "export.json").read_bytes())


def find_export(objects, name: str, version: int, formats, content_hash: str) -> bytes | None:
    """The ``export.json`` bytes of a stored export of this version holding ``formats``."""
    for info in objects.list(f"{PREFIX}/{name}/exports/"):
        if not info.key.rsplit("/", 1)[-1].startswith(f"v{version:06d}-"):
            continue
        raw = read_small(objects, info.key)
        if raw is None:
            continue
        done = json.loads(raw)
        if done.get("content_hash") == content_hash and set(formats) <= set(done.get("formats", [])):
            return raw
    return None


def fetch_export(objects, name: str, raw_manifest: bytes, dest: Path) -> None:
    """Download an export (its ``export.json`` bytes given) into ``dest``."""
    manifest = json.loads(raw_manifest)
    tmp = dest.with_name(f".fetch-{dest.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        root = tmp.resolve()
        for rel, sha in sorted(manifest["files"].items()):
            path = (tmp / rel).resolve()
            if root not in path.parents:
                raise DatasetObjectError(f"export manifest names a path outside the export: {rel!r}",
                                         reason_code="dataset_object_corrupt")
            path.parent.mkdir(parents=True, exist_ok=True)
            fetch_blob(objects, name, sha, path)
        (tmp / "export.json").write_bytes(raw_manifest)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _canonical(d: dict) -> bytes:
    return json.dumps(d, indent=1, sort_keys=True).encode()
