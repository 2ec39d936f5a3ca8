"""Datasets on disk: specs, pending episodes, immutable versions.

Layout under the store root (``<KIBOTOS_HOME>/datasets`` by default)::

    <name>/spec.json                     the frozen spec (kibotos.datasets.spec)
    <name>/pending.jsonl                 episodes selected since the last version (spool)
    <name>/pending_removals.jsonl        submission ids whose verdict was revised to rejected
    <name>/pending_revisions.jsonl       episodes whose verdict was revised to accepted with other quality
    <name>/emitted.json                  the last version whose events reached the topics
    <name>/versions/v000001/
        episodes.jsonl                   every episode of the version, one canonical JSON line each
        changelog.jsonl                  {"op": "added"|"removed"|"revised", "episode": {...}} against the
                                         parent ("revised" also names the "previous" quality)
        attribution.json                 the attribution entries this publication owes
        version.json                     content hash, parent, counts, spec hash, rule version
        card.json, card.md               the dataset card (kibotos.datasets.card)

A version is written to a temporary directory and renamed into place in one step, then
made read-only; nothing ever rewrites it. With an object store (``objects``), every
version is first written there (``kibotos.datasets.objects``: content-addressed blobs,
then the version's manifest), and the local directory is a cache of it: a version, spec
or dataset only in the object store (published on another machine, or a fresh cache) is
listed, and fetched into the cache when read. Its ``content_hash`` is the SHA-256 of
``episodes.jsonl`` (``verify`` recomputes it). Versions are append-only: version ``n+1``
is version ``n`` less the removed episodes, with the revised ones replaced in place,
plus the new ones in arrival order, so publishing streams the parent file once and holds
only submission ids (and the pending revisions) in memory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from kibotos.datasets import objects as ds_objects
from kibotos.datasets.attribution import episode_points, publication_entries
from kibotos.datasets.card import CardStats, card_markdown
from kibotos.datasets.config import DatasetsConfig, default_config
from kibotos.datasets.episode import Episode
from kibotos.datasets.spec import DatasetSpec, SpecError, parse_spec
from kibotos.errors import KibotosError

FORMAT_VERSION = "kibotos-dataset-1"
PENDING_FILES = ("pending.jsonl", "pending_removals.jsonl", "pending_revisions.jsonl")


class DatasetError(KibotosError):
    reason_code = "dataset_invalid"


def iso(ms: int) -> str:
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``name`` or ``name@v3`` / ``name@3`` -> (name, version or None for the latest)."""
    name, _, v = ref.partition("@")
    if not v:
        return name, None
    try:
        return name, int(v.lstrip("v"))
    except ValueError:
        raise DatasetError(f"bad dataset reference {ref!r}: expected NAME or NAME@vN",
                           reason_code="dataset_ref_invalid") from None


class DatasetStore:
    """:param root: the local directory (the cache, when ``objects`` is given).
    :param objects: the object store versions are published to and read back from
        (``kibotos.objectstore``); None: the local directory only.
    """

    def __init__(self, root: Path | str, cfg: DatasetsConfig | None = None, objects=None):
        self.root = Path(root)
        self.cfg = cfg or default_config()
        self.objects = objects

    # --- specs ---------------------------------------------------------------------------

    def dir(self, name: str) -> Path:
        return self.root / name

    def create(self, spec: DatasetSpec) -> bool:
        """Register ``spec``; False when the same spec exists already (idempotent).

        :raises SpecError: a dataset of that name exists with another spec.
        """
        d = self.dir(spec.name)
        path = d / "spec.json"
        if path.exists() or (self.objects is not None and spec.name in ds_objects.dataset_names(self.objects)):
            if self.spec(spec.name).spec_hash != spec.spec_hash:
                raise SpecError(f"dataset {spec.name!r} exists with another spec; a different selection is a "
                                "different dataset: pick another name", reason_code="dataset_exists")
            self._put_spec(spec.name)  # a spec stored locally before the object store was configured
            return False
        self._write_spec(spec.name, spec.canonical_json())
        self._put_spec(spec.name)
        return True

    def _write_spec(self, name: str, text: str) -> None:
        d = self.dir(name)
        (d / "versions").mkdir(parents=True, exist_ok=True)
        tmp = d / f".spec.json.{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, d / "spec.json")

    def _put_spec(self, name: str) -> None:
        if self.objects is not None:
            try:
                ds_objects.put_immutable(self.objects, ds_objects.spec_key(name), (self.dir(name) / "spec.json").read_bytes())
            except ds_objects.DatasetObjectError as exc:
                raise SpecError(f"dataset {name!r} exists in the object store with another spec: {exc}",
                                reason_code="dataset_exists") from exc

    def names(self) -> list[str]:
        local = {p.parent.name for p in self.root.glob("*/spec.json")} if self.root.is_dir() else set()
        remote = ds_objects.dataset_names(self.objects) if self.objects is not None else set()
        return sorted(local | remote)

    def spec(self, name: str) -> DatasetSpec:
        path = self.dir(name) / "spec.json"
        if not path.is_file() and self.objects is not None and _valid_name(name):
            raw = ds_objects.read_small(self.objects, ds_objects.spec_key(name))
            if raw is not None:  # a dataset published elsewhere: cache its spec
                self._write_spec(name, raw.decode())
        if not path.is_file():
            raise DatasetError(f"no dataset {name!r}", reason_code="dataset_not_found")
        return parse_spec(json.loads(path.read_text()))

    # --- versions ------------------------------------------------------------------------

    def version_dir(self, name: str, version: int) -> Path:
        return self.dir(name) / "versions" / f"v{version:06d}"

    def local_versions(self, name: str) -> list[int]:
        return sorted(int(p.name[1:]) for p in (self.dir(name) / "versions").glob("v[0-9]*") if p.is_dir())

    def versions(self, name: str) -> list[int]:
        self.spec(name)
        remote = ds_objects.versions(self.objects, name) if self.objects is not None else set()
        return sorted(set(self.local_versions(name)) | remote)

    def _local(self, name: str, version: int) -> Path:
        """The cached directory of a version, fetched from the object store when missing."""
        d = self.version_dir(name, version)
        if not d.is_dir() and self.objects is not None:
            ds_objects.fetch_version(self.objects, name, version, d)
        return d

    def upload_missing(self, name: str) -> list[int]:
        """Put the local versions the object store lacks (published before it was
        configured); returns them."""
        if self.objects is None:
            return []
        missing = sorted(set(self.local_versions(name)) - ds_objects.versions(self.objects, name))
        self._put_spec(name)
        for v in missing:
            ds_objects.upload_version(self.objects, name, v, self.version_dir(name, v))
        return missing

    def latest(self, name: str) -> int | None:
        vs = self.versions(name)
        return vs[-1] if vs else None

    def resolve(self, ref: str) -> tuple[str, int]:
        """``name[@vN]`` -> (name, version); the latest when none is named."""
        name, version = parse_ref(ref)
        version = self.latest(name) if version is None else version
        if version is None or not self._local(name, version).is_dir():
            raise DatasetError(f"dataset {ref!r} has no such version (versions: {self.versions(name) or 'none'})",
                               reason_code="dataset_version_not_found")
        return name, version

    def info(self, name: str, version: int) -> dict:
        return json.loads((self._local(name, version) / "version.json").read_text())

    def card(self, name: str, version: int) -> dict:
        return json.loads((self._local(name, version) / "card.json").read_text())

    def attribution(self, name: str, version: int) -> list[dict]:
        return json.loads((self._local(name, version) / "attribution.json").read_text())

    def episodes(self, name: str, version: int) -> Iterator[Episode]:
        """The episodes of a version, streamed from its file."""
        with open(self._local(name, version) / "episodes.jsonl", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield Episode.from_line(line)

    def changelog(self, name: str, version: int) -> Iterator[tuple[str, Episode]]:
        with open(self._local(name, version) / "changelog.jsonl", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    yield d["op"], Episode.from_line(json.dumps(d["episode"]))

    def member_ids(self, name: str) -> set[str]:
        v = self.latest(name)
        return set() if v is None else {ep.submission_id for ep in self.episodes(name, v)}

    def retracted_ids(self, name: str) -> set[str]:
        """Every submission some version removed (its verdict was revised to rejected):
        it never re-enters the dataset, whatever is redelivered."""
        out = set()
        for v in self.versions(name):
            out |= {ep.submission_id for op, ep in self.changelog(name, v) if op == "removed"}
        return out

    def verify(self, name: str, version: int) -> bool:
        """True when ``episodes.jsonl`` still hashes to the version's content hash."""
        return _sha256(self._local(name, version) / "episodes.jsonl") == self.info(name, version)["content_hash"]

    # --- pending -------------------------------------------------------------------------

    def add_pending(self, name: str, episodes: list[Episode], sync: bool = True) -> None:
        """Append to the spool; ``sync=False`` leaves the fsync to ``sync_pending`` (the
        stream processor syncs once per batch, before it commits the batch's offsets)."""
        with open(self.dir(name) / "pending.jsonl", "a", encoding="utf-8") as f:
            for ep in episodes:
                f.write(ep.to_line() + "\n")
            if sync:
                f.flush()
                os.fsync(f.fileno())

    def sync_pending(self, name: str) -> None:
        for fname in PENDING_FILES:
            path = self.dir(name) / fname
            if path.exists():
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def add_removals(self, name: str, submission_ids: list[str]) -> None:
        with open(self.dir(name) / "pending_removals.jsonl", "a", encoding="utf-8") as f:
            for sid in submission_ids:
                f.write(json.dumps(sid) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def add_revisions(self, name: str, episodes: list[Episode]) -> None:
        """Spool episodes whose verdict was revised (still accepted, other quality)."""
        with open(self.dir(name) / "pending_revisions.jsonl", "a", encoding="utf-8") as f:
            for ep in episodes:
                f.write(ep.to_line() + "\n")
            f.flush()
            os.fsync(f.fileno())

    def pending_revisions(self, name: str) -> dict[str, Episode]:
        """submission id -> its highest pending verdict revision."""
        path = self.dir(name) / "pending_revisions.jsonl"
        out: dict[str, Episode] = {}
        if path.exists():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        ep = Episode.from_line(line)
                    except ValueError:  # a torn last line after a crash: it is offered again
                        continue
                    if ep.submission_id not in out or ep.verdict_revision > out[ep.submission_id].verdict_revision:
                        out[ep.submission_id] = ep
        return out

    def pending(self, name: str) -> Iterator[Episode]:
        path = self.dir(name) / "pending.jsonl"
        if path.exists():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        try:
                            yield Episode.from_line(line)
                        except ValueError:  # a torn last line after a crash: it is offered again
                            continue

    def pending_removals(self, name: str) -> set[str]:
        path = self.dir(name) / "pending_removals.jsonl"
        if not path.exists():
            return set()
        out = set()
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.add(json.loads(line))
        return out

    @contextlib.contextmanager
    def lock(self, name: str):
        """One writer per dataset at a time (the builder, or a CLI publish)."""
        self.spec(name)
        with open(self.dir(name) / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # --- publication ---------------------------------------------------------------------

    def publish(self, name: str, now_ms: int | None = None) -> dict | None:
        """Write the next version from the latest one and the pending spools; ``None``
        when nothing changed. Returns the new ``version.json``."""
        with self.lock(name):
            return self._publish(name, int(time.time() * 1000) if now_ms is None else now_ms)

    def _publish(self, name: str, now_ms: int) -> dict | None:
        spec = self.spec(name)
        parent = self.latest(name)
        version = (parent or 0) + 1
        parent_info = self.info(name, parent) if parent else None
        removals = self.pending_removals(name)
        revisions = self.pending_revisions(name)
        retracted = self.retracted_ids(name)
        final = self.version_dir(name, version)
        tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        stats = CardStats(self.cfg.card.score_bins)
        hasher = hashlib.sha256()
        members: set[str] = set()
        removed: list[Episode] = []
        revised: list[tuple[Episode, Episode]] = []  # (as published before, as revised)
        added = 0
        with open(tmp / "episodes.jsonl", "w", encoding="utf-8") as out, \
                open(tmp / "changelog.jsonl", "w", encoding="utf-8") as log:
            def write(ep: Episode) -> None:
                line = (ep.to_line() + "\n").encode()
                hasher.update(line)
                out.write(line.decode())
                stats.add(ep)
                members.add(ep.submission_id)

            if parent:
                for ep in self.episodes(name, parent):
                    if ep.submission_id in removals:
                        removed.append(ep)
                        log.write(json.dumps({"op": "removed", "episode": json.loads(ep.to_line())},
                                             sort_keys=True) + "\n")
                    elif (new := _supersedes(revisions.get(ep.submission_id), ep)) is not None \
                            and not spec.reject_reason(new):
                        # the revised quality replaces the published one; its attribution is
                        # brought to what the new S earns (the difference is paid by this version)
                        new = new.with_attribution(episode_points(new, self.cfg))
                        write(new)
                        revised.append((ep, new))
                        log.write(json.dumps({"op": "revised", "episode": json.loads(new.to_line()),
                                              "previous": _quality_dict(ep)}, sort_keys=True) + "\n")
                    else:
                        write(ep)
            for ep in self.pending(name):
                if ep.submission_id in members or ep.submission_id in removals or ep.submission_id in retracted:
                    continue
                ep = _supersedes(revisions.get(ep.submission_id), ep) or ep
                if spec.reject_reason(ep):
                    continue
                ep = ep.with_attribution(episode_points(ep, self.cfg))
                write(ep)
                added += 1
                log.write(json.dumps({"op": "added", "episode": json.loads(ep.to_line())}, sort_keys=True) + "\n")
        if not added and not removed and not revised:
            shutil.rmtree(tmp)
            self._clear_pending(name)
            return None
        entries = publication_entries(name, version, (ep for op, ep in _changelog(tmp) if op == "added"),
                                      removed, now_ms, self.cfg, revised=revised)
        content_hash = hasher.hexdigest()
        info = {"format": FORMAT_VERSION, "dataset": name, "version": version, "content_hash": content_hash,
                "parent_version": parent, "parent_hash": parent_info["content_hash"] if parent_info else None,
                "episodes": stats.n, "added": added, "removed": len(removed), "revised": len(revised),
                "created_at": iso(now_ms),
                "created_at_ms": now_ms, "spec_hash": spec.spec_hash, "description": spec.description,
                "rule_version": self.cfg.config_version,
                "attribution_points": round(sum(e["points"] for e in entries), 6)}
        (tmp / "attribution.json").write_text(json.dumps(entries, indent=1, sort_keys=True))
        (tmp / "version.json").write_text(json.dumps(info, indent=1, sort_keys=True))
        card = {"dataset": name, "version": version, "content_hash": content_hash,
                "parent_hash": info["parent_hash"], "created_at": info["created_at"], "spec_hash": spec.spec_hash,
                "spec_json": json.dumps(spec.model_dump(mode="json"), indent=1, sort_keys=True),
                "description": spec.description, **stats.as_dict(),
                "changelog": {"added": added, "removed": len(removed), "revised": len(revised)},
                "attribution": {"rule_version": self.cfg.config_version, "points": info["attribution_points"]}}
        (tmp / "card.json").write_text(json.dumps(card, indent=1, sort_keys=True))
        (tmp / "card.md").write_text(card_markdown(card))
        for p in tmp.iterdir():
            p.chmod(0o444)
        if self.objects is not None:  # the object store first: the local directory is its cache
            try:
                ds_objects.upload_version(self.objects, name, version, tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        os.replace(tmp, final)  # the version appears whole or not at all
        self._clear_pending(name)
        return info

    def _clear_pending(self, name: str) -> None:
        for fname in PENDING_FILES:
            (self.dir(name) / fname).unlink(missing_ok=True)

    # --- events emitted ------------------------------------------------------------------

    def emitted(self, name: str) -> int:
        path = self.dir(name) / "emitted.json"
        return json.loads(path.read_text())["version"] if path.exists() else 0

    def mark_emitted(self, name: str, version: int) -> None:
        tmp = self.dir(name) / f".emitted.{os.getpid()}"
        tmp.write_text(json.dumps({"version": version}))
        os.replace(tmp, self.dir(name) / "emitted.json")


def _valid_name(name: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", name))


def _supersedes(new: Episode | None, old: Episode) -> Episode | None:
    """``new`` when it is a later verdict revision of ``old`` with other quality."""
    if new is None or new.verdict_revision <= old.verdict_revision or new.quality() == old.quality():
        return None
    return new


def _quality_dict(ep: Episode) -> dict:
    return {"score": ep.score, "reward": ep.reward, "components": ep.components, "copy_factor": ep.copy_factor,
            "attribution_points": ep.attribution_points, "verdict_revision": ep.verdict_revision}


def _changelog(directory: Path) -> Iterator[tuple[str, Episode]]:
    with open(directory / "changelog.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            yield d["op"], Episode.from_line(json.dumps(d["episode"]))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
