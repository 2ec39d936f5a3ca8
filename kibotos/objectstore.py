"""Object storage for bundles (claim-check: events carry the URI, never the bytes).

The embedded default is a local directory addressed by ``file://`` URIs. Workers resolve
a URI to a local path they can open read-only; a URI outside the store root is refused
(path tricks in a forged event must not reach arbitrary files).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from kibotos.errors import KibotosError


class ObjectStoreError(KibotosError):
    reason_code = "object_store_error"


@dataclass(frozen=True)
class StoredObject:
    uri: str
    sha256: str
    size_bytes: int


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class LocalObjectStore:
    """A directory with the object store's interface: ``put_file``, ``local_path``."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_url(cls, url: str) -> "LocalObjectStore":
        parsed = urlparse(url)
        if parsed.scheme != "file":
            raise ObjectStoreError(f"unsupported object store URL {url!r} (embedded store needs file://)",
                                   reason_code="config_invalid")
        return cls(unquote(parsed.path))

    def _path_for_key(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ObjectStoreError(f"key {key!r} escapes the store", reason_code="object_uri_invalid")
        return path

    def put_file(self, src: str | Path, key: str) -> StoredObject:
        """Copy ``src`` under ``key`` atomically (write to a temp name, then rename)."""
        dest = self._path_for_key(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        return StoredObject(dest.as_uri(), sha256_file(dest), dest.stat().st_size)

    def local_path(self, uri: str) -> Path:
        """The readable local path of ``uri``; refuses anything outside the store."""
        parsed = urlparse(uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ObjectStoreError(f"unsupported object URI {uri!r}", reason_code="object_uri_invalid")
        path = Path(unquote(parsed.path)).resolve()
        if self.root not in path.parents:
            raise ObjectStoreError(f"object URI {uri!r} is outside the store", reason_code="object_uri_invalid")
        if not path.is_file():
            raise ObjectStoreError(f"object {uri!r} does not exist", reason_code="bundle_not_found")
        return path


def open_store(url: str) -> LocalObjectStore:
    return LocalObjectStore.from_url(url)
