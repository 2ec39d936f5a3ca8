"""Object storage for bundles (claim-check: events carry the URI, never the bytes).

Two stores with one interface:

* ``LocalObjectStore`` — the embedded default: a directory addressed by ``file://`` URIs.
  Its presigned upload URLs point at the ingest API (``PUT /v1/objects/<key>``), which
  checks an HMAC over (key, expiry, size, SHA-256) before writing a byte.
* ``S3ObjectStore`` — any S3 server (MinIO, AWS, SeaweedFS) through the ``minio``
  client, addressed by ``s3://bucket/key`` URIs. Its presigned PUT URLs are SigV4 query
  signatures that also sign the ``Content-Length`` and ``x-amz-checksum-sha256`` headers:
  the server refuses a body of any other size (signature mismatch) or content
  (BadDigest) — measured against SeaweedFS 4.48, which honours both, as AWS does.

Both give the same upload semantics: a URL bound to one key, expiring, size-bounded and
content-bound (``PresignedPut``). Workers resolve a URI to a local path they can open
read-only (S3 objects are downloaded to a bounded cache); a URI outside the store is
refused (path tricks in a forged event must not reach arbitrary files).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import io
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from kibotos.errors import KibotosError, ServiceError

_LOCAL_PUT_DOMAIN = b"kibotos.local-put.v1"


class ObjectStoreError(KibotosError):
    reason_code = "object_store_error"


class ObjectStoreUnavailable(ObjectStoreError, ServiceError):
    """The store failed or could not be reached: a fault of the service, not a property of
    the object asked for. A ``ServiceError``, so a stream stage hands it to its runner to
    retry (the verdict waits) instead of turning it into a rejection of the miner's bundle."""

    reason_code = "service_unavailable"


@dataclass(frozen=True)
class StoredObject:
    uri: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size_bytes: int
    modified_at: float  # epoch seconds


@dataclass(frozen=True)
class PresignedPut:
    """An upload URL bound to one key, size and content: send ``headers`` with the body."""

    url: str
    expires_at: int  # epoch seconds
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "PUT"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checksum_header(sha256_hex: str) -> str:
    """The ``x-amz-checksum-sha256`` value (base64 of the raw digest) for a hex digest."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ObjectStoreError(f"invalid object key {key!r}", reason_code="object_uri_invalid")
    return key


def _upload_headers(size: int, sha256_hex: str) -> dict[str, str]:
    return {"Content-Length": str(size), "x-amz-checksum-sha256": checksum_header(sha256_hex)}


class LocalObjectStore:
    """A directory with the object store's interface.

    :param root: the store directory (created).
    :param upload_secret: HMAC key of presigned upload URLs; needed only by the process
        that issues and receives them (the ingest API).
    """

    scheme = "file"

    def __init__(self, root: str | Path, upload_secret: bytes | None = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._secret = upload_secret

    @classmethod
    def from_url(cls, url: str, upload_secret: bytes | None = None) -> "LocalObjectStore":
        parsed = urlparse(url)
        if parsed.scheme != "file":
            raise ObjectStoreError(f"unsupported object store URL {url!r} (embedded store needs file://)",
                                   reason_code="config_invalid")
        return cls(unquote(parsed.path), upload_secret)

    def _path_for_key(self, key: str) -> Path:
        path = (self.root / _check_key(key)).resolve()
        if self.root not in path.parents:
            raise ObjectStoreError(f"key {key!r} escapes the store", reason_code="object_uri_invalid")
        return path

    def uri_for(self, key: str) -> str:
        return self._path_for_key(key).as_uri()

    def put_file(self, src: str | Path, key: str) -> StoredObject:
        """Copy ``src`` under ``key`` atomically (write to a temp name, then rename)."""
        dest = self._path_for_key(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        return StoredObject(dest.as_uri(), sha256_file(dest), dest.stat().st_size)

    def put_bytes(self, data: bytes, key: str) -> StoredObject:
        """Store ``data`` under ``key`` atomically (write to a temp name, then rename)."""
        dest = self._path_for_key(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return StoredObject(dest.as_uri(), hashlib.sha256(data).hexdigest(), len(data))

    def create_bytes(self, data: bytes, key: str) -> StoredObject | None:
        """Store ``data`` under ``key`` only if no object is there (a conditional create:
        of two writers racing for one key exactly one succeeds); None when one exists.
        A hard link of a finished temp file is atomic and refuses an existing name."""
        dest = self._path_for_key(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{os.urandom(4).hex()}.part")
        tmp.write_bytes(data)
        try:
            os.link(tmp, dest)
        except FileExistsError:
            return None
        finally:
            tmp.unlink(missing_ok=True)
        return StoredObject(dest.as_uri(), hashlib.sha256(data).hexdigest(), len(data))

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

    def read_bytes(self, uri: str, max_bytes: int) -> bytes:
        """The whole object at ``uri`` (at most ``max_bytes``): small artifacts such as
        keyframe PNGs. Refuses URIs outside the store like ``local_path``."""
        path = self.local_path(uri)
        if path.stat().st_size > max_bytes:
            raise ObjectStoreError(f"object {uri!r} is larger than {max_bytes} bytes", reason_code="object_too_large")
        return path.read_bytes()

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path_for_key(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime) if path.is_file() else None

    @contextmanager
    def open_local(self, key: str, max_bytes: int) -> Iterator[Path]:
        """A local path holding the object (here: the stored file itself)."""
        info = self.stat(key)
        if info is None:
            raise ObjectStoreError(f"no object {key!r}", reason_code="upload_missing")
        if info.size_bytes > max_bytes:
            raise ObjectStoreError(f"object {key!r} is {info.size_bytes} bytes > {max_bytes}",
                                   reason_code="bundle_too_large")
        yield self._path_for_key(key)

    def move(self, src_key: str, dst_key: str) -> str:
        dest = self._path_for_key(dst_key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = self._path_for_key(src_key)
        os.replace(src, dest)
        self._prune(src.parent)
        return dest.as_uri()

    def delete(self, key: str) -> None:
        path = self._path_for_key(key)
        path.unlink(missing_ok=True)
        self._prune(path.parent)

    def _prune(self, directory: Path) -> None:
        # keys are paths: drop the directories a removed object leaves empty (not the root)
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:  # not empty (or already gone)
                return
            directory = directory.parent

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self.root / prefix
        if not base.is_dir():
            return
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                st = path.stat()
                yield ObjectInfo(path.relative_to(self.root).as_posix(), st.st_size, st.st_mtime)

    # --- presigned uploads, served by the ingest API -----------------------------------

    def _put_signature(self, key: str, expires_at: int, size: int, sha256_hex: str) -> str:
        if not self._secret:
            raise ObjectStoreError("this local store has no upload secret", reason_code="config_invalid")
        msg = b"\n".join([_LOCAL_PUT_DOMAIN, key.encode(), str(expires_at).encode(), str(size).encode(),
                          sha256_hex.encode()])
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def presign_put(self, key: str, *, size: int, sha256: str, expires_s: int, base_url: str) -> PresignedPut:
        """A URL of the ingest API at ``base_url`` that accepts exactly this upload."""
        _check_key(key)
        expires_at = int(time.time()) + expires_s
        query = urllib.parse.urlencode({"expires": expires_at, "size": size, "sha256": sha256,
                                        "signature": self._put_signature(key, expires_at, size, sha256)})
        url = f"{base_url.rstrip('/')}/v1/objects/{urllib.parse.quote(key)}?{query}"
        return PresignedPut(url, expires_at, _upload_headers(size, sha256))

    def begin_upload(self, key: str, *, expires: str, size: str, sha256: str, signature: str,
                     content_length: str | None, checksum: str | None = None) -> "LocalUpload":
        """Check a presigned PUT before its body is read.

        :raises ObjectStoreError: ``url_signature_invalid`` (forged or altered URL),
            ``url_expired``, ``length_required``, ``upload_size_mismatch`` (a
            Content-Length other than the signed size), ``upload_hash_mismatch`` (a
            checksum header other than the signed one).
        """
        try:
            expires_at, size_n = int(expires), int(size)
            _check_key(key)
            expected = self._put_signature(key, expires_at, size_n, sha256)
        except (ValueError, ObjectStoreError) as exc:
            raise ObjectStoreError(f"malformed upload URL: {exc}", reason_code="url_signature_invalid") from exc
        if not hmac.compare_digest(expected, signature):
            raise ObjectStoreError("upload URL signature does not match", reason_code="url_signature_invalid")
        if time.time() > expires_at:
            raise ObjectStoreError("upload URL has expired", reason_code="url_expired")
        if content_length is None:
            raise ObjectStoreError("Content-Length is required", reason_code="length_required")
        if content_length.strip() != str(size_n):
            raise ObjectStoreError(f"Content-Length {content_length[:20]} is not the signed size {size_n}",
                                   reason_code="upload_size_mismatch")
        if checksum is not None and checksum != checksum_header(sha256):
            raise ObjectStoreError("x-amz-checksum-sha256 is not the signed checksum",
                                   reason_code="upload_hash_mismatch")
        return LocalUpload(self._path_for_key(key), size_n, sha256)


class LocalUpload:
    """One presigned PUT being received: bounded writes to a temp file, then an atomic
    rename once size and SHA-256 match (an object is never visible half-written)."""

    def __init__(self, dest: Path, size: int, sha256_hex: str):
        self.dest, self.size, self.sha256 = dest, size, sha256_hex
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.received = 0

    def write(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.size:
            raise ObjectStoreError(f"body exceeds the signed size {self.size}", reason_code="upload_too_large")
        self._hash.update(chunk)
        self._fh.write(chunk)

    def commit(self) -> StoredObject:
        self._fh.close()
        if self.received != self.size:
            raise ObjectStoreError(f"received {self.received} of {self.size} bytes", reason_code="upload_size_mismatch")
        if self._hash.hexdigest() != self.sha256:
            raise ObjectStoreError("body does not match the signed SHA-256", reason_code="upload_hash_mismatch")
        os.replace(self._tmp, self.dest)
        return StoredObject(self.dest.as_uri(), self.sha256, self.size)

    def abort(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)


def _sigv4_key(secret: str, day: str, region: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def presign_v4(method: str, endpoint: str, path: str, *, access_key: str, secret_key: str, region: str,
               expires_s: int, headers: dict[str, str], now: dt.datetime | None = None) -> str:
    """An AWS SigV4 query-string presigned URL that also signs ``headers`` (the client
    must send them verbatim). ``minio``'s own presigner signs only ``host``; a size- and
    content-bound PUT needs ``content-length`` and ``x-amz-checksum-sha256`` signed too."""
    now = now or dt.datetime.now(dt.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = urlparse(endpoint).netloc
    signed = {"host": host, **{k.lower(): str(v).strip() for k, v in headers.items()}}
    names = ";".join(sorted(signed))
    scope = f"{day}/{region}/s3/aws4_request"
    query = {"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": f"{access_key}/{scope}",
             "X-Amz-Date": amz_date, "X-Amz-Expires": str(expires_s), "X-Amz-SignedHeaders": names}
    canonical_query = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                               for k, v in sorted(query.items()))
    canonical_path = urllib.parse.quote(path, safe="/-_.~")
    canonical_headers = "".join(f"{k}:{signed[k]}\n" for k in sorted(signed))
    request = "\n".join([method, canonical_path, canonical_query, canonical_headers, names, "UNSIGNED-PAYLOAD"])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(request.encode()).hexdigest()])
    signature = hmac.new(_sigv4_key(secret_key, day, region), to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{endpoint.rstrip('/')}{canonical_path}?{canonical_query}&X-Amz-Signature={signature}"


class S3ObjectStore:
    """Bundles in an S3 bucket (path-style addressing), through the ``minio`` client.

    :param bucket: bucket name (created by ``ensure_bucket``).
    :param prefix: key prefix inside the bucket (e.g. one per environment).
    :param endpoint: ``http(s)://host:port`` of the S3 server.
    :param cache_dir: where ``local_path`` downloads objects for the gate workers.
    :param cache_max_bytes: the cache is trimmed (oldest first) above this size.
    """

    scheme = "s3"

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str, access_key: str, secret_key: str,
                 region: str = "us-east-1", cache_dir: str | Path, cache_max_bytes: int = 4 << 30):
        from minio import Minio

        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ObjectStoreError(f"S3 endpoint {endpoint!r} must be http(s)://host[:port]",
                                   reason_code="config_invalid")
        self.bucket, self.prefix = bucket, prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint = f"{parsed.scheme}://{parsed.netloc}"
        self.region = region
        self._access_key, self._secret_key = access_key, secret_key
        self.client = Minio(parsed.netloc, access_key=access_key, secret_key=secret_key,
                            secure=parsed.scheme == "https", region=region)
        self.cache_dir = Path(cache_dir).resolve()
        self.cache_max_bytes = cache_max_bytes

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "S3ObjectStore":
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ObjectStoreError(f"S3 store URL must be s3://bucket[/prefix], got {url!r}",
                                   reason_code="config_invalid")
        return cls(parsed.netloc, parsed.path, **kwargs)

    def _s3err(self, action: str, exc: Exception) -> ObjectStoreError:
        return ObjectStoreUnavailable(f"S3 {action} failed at {self.endpoint}: {exc}")

    def ensure_bucket(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except Exception as exc:
            raise self._s3err("make_bucket", exc) from exc

    def _object(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object(key)}"

    def _key_of(self, uri: str) -> str:
        parsed = urlparse(uri)
        name = unquote(parsed.path).lstrip("/")
        if parsed.scheme != "s3" or parsed.netloc != self.bucket or not name.startswith(self.prefix):
            raise ObjectStoreError(f"object URI {uri!r} is outside the store", reason_code="object_uri_invalid")
        return _check_key(name[len(self.prefix):])

    def put_file(self, src: str | Path, key: str) -> StoredObject:
        try:
            self.client.fput_object(self.bucket, self._object(key), str(src))
        except Exception as exc:
            raise self._s3err("put", exc) from exc
        return StoredObject(self.uri_for(key), sha256_file(Path(src)), Path(src).stat().st_size)

    def put_bytes(self, data: bytes, key: str) -> StoredObject:
        try:
            self.client.put_object(self.bucket, self._object(key), io.BytesIO(data), len(data))
        except Exception as exc:
            raise self._s3err("put", exc) from exc
        return StoredObject(self.uri_for(key), hashlib.sha256(data).hexdigest(), len(data))

    def create_bytes(self, data: bytes, key: str) -> StoredObject | None:
        """Store ``data`` under ``key`` only if no object is there: a PUT with
        ``If-None-Match: *`` (S3 conditional writes; the server answers 412 to all but the
        first writer); None when one exists. ``minio`` cannot send that header, so the PUT
        goes through a SigV4 URL that signs it (``presign_v4``)."""
        import urllib.error
        import urllib.request

        obj = self._object(key)
        headers = {"If-None-Match": "*", "Content-Length": str(len(data))}
        url = presign_v4("PUT", self.endpoint, f"/{self.bucket}/{obj}", access_key=self._access_key,
                         secret_key=self._secret_key, region=self.region, expires_s=300, headers=headers)
        req = urllib.request.Request(url, data=data, method="PUT", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code in (409, 412):  # an object is there (409: a concurrent conditional write)
                return None
            raise self._s3err("conditional put", exc) from exc
        except Exception as exc:
            raise self._s3err("conditional put", exc) from exc
        return StoredObject(self.uri_for(key), hashlib.sha256(data).hexdigest(), len(data))

    def stat(self, key: str) -> ObjectInfo | None:
        from minio.error import S3Error

        try:
            st = self.client.stat_object(self.bucket, self._object(key))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound", "NoSuchBucket"):
                return None
            raise self._s3err("stat", exc) from exc
        except Exception as exc:
            raise self._s3err("stat", exc) from exc
        return ObjectInfo(key, int(st.size or 0), st.last_modified.timestamp() if st.last_modified else 0.0)

    def _download(self, key: str, dest: Path, max_bytes: int) -> None:
        info = self.stat(key)
        if info is None:
            raise ObjectStoreError(f"no object {key!r}", reason_code="upload_missing")
        if info.size_bytes > max_bytes:
            raise ObjectStoreError(f"object {key!r} is {info.size_bytes} bytes > {max_bytes}",
                                   reason_code="bundle_too_large")
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:
            resp = self.client.get_object(self.bucket, self._object(key))
            try:
                written = 0
                with open(tmp, "wb") as fh:
                    for block in resp.stream(1 << 20):
                        written += len(block)
                        if written > max_bytes:  # the object grew after stat: still bounded
                            raise ObjectStoreError(f"object {key!r} exceeds {max_bytes} bytes",
                                                   reason_code="bundle_too_large")
                        fh.write(block)
            finally:
                resp.close()
                resp.release_conn()
            os.replace(tmp, dest)
        except ObjectStoreError:
            tmp.unlink(missing_ok=True)
            raise
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise self._s3err("get", exc) from exc

    @contextmanager
    def open_local(self, key: str, max_bytes: int) -> Iterator[Path]:
        """Download the object (at most ``max_bytes``) to a temp file, removed afterwards."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix="ingest-") as tmp:
            dest = Path(tmp) / "bundle.zarr.zip"
            self._download(key, dest, max_bytes)
            yield dest

    def local_path(self, uri: str, max_bytes: int = 4 << 30) -> Path:
        """A cached local copy of ``uri`` (objects are immutable once accepted)."""
        key = self._key_of(uri)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        dest = self.cache_dir / (hashlib.sha256(uri.encode()).hexdigest()[:32] + ".zarr.zip")
        if not dest.is_file():
            self._download(key, dest, max_bytes)
            self._trim_cache()
        return dest

    def read_bytes(self, uri: str, max_bytes: int) -> bytes:
        """The whole object at ``uri`` (at most ``max_bytes``), in memory: small artifacts
        such as keyframe PNGs. Refuses URIs outside the bucket and prefix."""
        key = self._key_of(uri)
        info = self.stat(key)
        if info is None:
            raise ObjectStoreError(f"object {uri!r} does not exist", reason_code="bundle_not_found")
        if info.size_bytes > max_bytes:
            raise ObjectStoreError(f"object {uri!r} is larger than {max_bytes} bytes", reason_code="object_too_large")
        try:
            resp = self.client.get_object(self.bucket, self._object(key))
            try:
                data = resp.read(max_bytes + 1)
            finally:
                resp.close()
                resp.release_conn()
        except Exception as exc:
            raise self._s3err("get", exc) from exc
        if len(data) > max_bytes:  # the object grew after stat: still bounded
            raise ObjectStoreError(f"object {uri!r} is larger than {max_bytes} bytes", reason_code="object_too_large")
        return data

    def _trim_cache(self) -> None:
        files = sorted((p for p in self.cache_dir.glob("*.zarr.zip")), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files[:-1]:  # never the newest: it is about to be read
            if total <= self.cache_max_bytes:
                break
            total -= p.stat().st_size
            p.unlink(missing_ok=True)

    def move(self, src_key: str, dst_key: str) -> str:
        from minio.commonconfig import CopySource

        try:
            self.client.copy_object(self.bucket, self._object(dst_key), CopySource(self.bucket, self._object(src_key)))
            self.client.remove_object(self.bucket, self._object(src_key))
        except Exception as exc:
            raise self._s3err("move", exc) from exc
        return self.uri_for(dst_key)

    def delete(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, self._object(key))
        except Exception as exc:
            raise self._s3err("delete", exc) from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            for obj in self.client.list_objects(self.bucket, prefix=self.prefix + prefix, recursive=True):
                modified = obj.last_modified.timestamp() if obj.last_modified else 0.0
                yield ObjectInfo(obj.object_name[len(self.prefix):], int(obj.size or 0), modified)
        except Exception as exc:
            raise self._s3err("list", exc) from exc

    def presign_put(self, key: str, *, size: int, sha256: str, expires_s: int, base_url: str = "") -> PresignedPut:
        """A SigV4 PUT URL signing Content-Length and x-amz-checksum-sha256 (``base_url``
        is unused: the client talks to the S3 server directly)."""
        headers = _upload_headers(size, sha256)
        url = presign_v4("PUT", self.endpoint, f"/{self.bucket}/{self._object(key)}", access_key=self._access_key,
                         secret_key=self._secret_key, region=self.region, expires_s=expires_s, headers=headers)
        return PresignedPut(url, int(time.time()) + expires_s, headers)


ObjectStore = LocalObjectStore | S3ObjectStore


def open_store(url: str, *, s3_endpoint: str | None = None, s3_access_key: str | None = None,
               s3_secret_key: str | None = None, s3_region: str = "us-east-1", cache_dir: str | Path | None = None,
               upload_secret: bytes | None = None) -> ObjectStore:
    """The store for ``url``: ``file:///dir`` or ``s3://bucket[/prefix]`` (with an endpoint)."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        return LocalObjectStore.from_url(url, upload_secret)
    if scheme == "s3":
        if not (s3_endpoint and s3_access_key and s3_secret_key):
            raise ObjectStoreError("an s3:// store needs KIBOTOS_S3_ENDPOINT, KIBOTOS_S3_ACCESS_KEY and "
                                   "KIBOTOS_S3_SECRET_KEY", reason_code="config_invalid")
        return S3ObjectStore.from_url(url, endpoint=s3_endpoint, access_key=s3_access_key, secret_key=s3_secret_key,
                                      region=s3_region, cache_dir=cache_dir or Path(tempfile.gettempdir()) / "kibotos-cache")
    raise ObjectStoreError(f"unsupported object store URL {url!r} (file:// or s3://)", reason_code="config_invalid")


def store_from_settings(settings, upload_secret: bytes | None = None) -> ObjectStore:
    """The object store configured by ``kibotos.config.settings.Settings``."""
    return open_store(settings.store_url, s3_endpoint=settings.s3_endpoint, s3_access_key=settings.s3_access_key,
                      s3_secret_key=settings.s3_secret_key, s3_region=settings.s3_region,
                      cache_dir=settings.home / "cache" / "objects", upload_secret=upload_secret)
