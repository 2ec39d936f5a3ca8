"""Where training clips come from: a ``--dataset`` reference resolved to clips in the
object store, and those clips copied into a local folder ``load_clips`` reads.

A reference is either

- a dataset version ``name`` / ``name@vN`` of ``kibotos.datasets`` (the store under
  ``<KIBOTOS_HOME>/datasets``): its episodes whose source is ``xgen.clips`` name a clip
  (``bundle_uri`` = ``clip.npz``, ``metadata_uri`` = ``metadata.json``, ``submission_id`` =
  the clip id; ``kibotos.datasets.episode.from_xgen_clip``); recorded as ``name@vN``, the
  version pinned at resolution so a retried job trains on the same clips; or
- an XGen request id: the clips its export job stored under ``xgen/<id>/clips/``;
  recorded as ``xgen:<id>``.

A name that is a dataset wins over a request id of the same spelling (request ids are
UUIDs, dataset names are not). Unresolvable references are ``xmimic_dataset_unknown``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kibotos.xmimic.clips import XMimicError

MAX_CLIP_BYTES = 1 << 30
_SAFE = re.compile(r"^[A-Za-z0-9_.@:-]{1,200}$")


@dataclass(frozen=True)
class ClipRef:
    clip_id: str
    clip_uri: str
    metadata_uri: str

    def as_record(self) -> dict:
        return {"clip_id": self.clip_id, "clip_uri": self.clip_uri, "metadata_uri": self.metadata_uri}


@dataclass(frozen=True)
class TrainingData:
    """What a dataset reference resolved to: the reference, the versions it pins, the clips."""

    dataset: str
    dataset_versions: tuple[str, ...]
    clips: tuple[ClipRef, ...]


def _dataset_store(home: Path):
    from kibotos.datasets.store import DatasetStore

    return DatasetStore(Path(home) / "datasets")


def resolve_dataset(ref: str, home: Path, store) -> TrainingData:
    """``ref`` (``name[@vN]`` or an XGen request id) → its clips in the object store.

    :raises XMimicError: ``xmimic_dataset_unknown`` (nothing of that name, no clips in it).
    """
    if not isinstance(ref, str) or not _SAFE.match(ref):
        raise XMimicError(f"bad dataset reference {ref!r}", reason_code="xmimic_dataset_unknown")
    datasets = _dataset_store(home)
    name = ref.partition("@")[0]
    if name in datasets.names():
        return _from_dataset_version(datasets, ref)
    if "@" in ref:
        raise XMimicError(f"no dataset {name!r} under {datasets.root}", reason_code="xmimic_dataset_unknown")
    return _from_xgen_request(ref, store)


def _from_dataset_version(datasets, ref: str) -> TrainingData:
    from kibotos.errors import KibotosError

    try:
        name, version = datasets.resolve(ref)
        episodes = list(datasets.episodes(name, version))
    except KibotosError as exc:
        raise XMimicError(f"dataset {ref!r}: {exc}", reason_code="xmimic_dataset_unknown") from exc
    clips = tuple(ClipRef(ep.submission_id, ep.bundle_uri, ep.metadata_uri) for ep in episodes
                  if ep.source == "xgen.clips" and ep.metadata_uri)
    if not clips:
        raise XMimicError(f"dataset {name}@v{version} has no XGen clips (episodes from xgen.clips)",
                          reason_code="xmimic_dataset_unknown")
    pinned = f"{name}@v{version}"
    return TrainingData(dataset=pinned, dataset_versions=(pinned,), clips=clips)


def _from_xgen_request(request_id: str, store) -> TrainingData:
    prefix = f"xgen/{request_id}/clips/"
    folders: dict[str, dict[str, str]] = {}
    for info in store.list(prefix):
        clip_id, _, name = info.key[len(prefix):].partition("/")
        if name in ("clip.npz", "metadata.json"):
            folders.setdefault(clip_id, {})[name] = store.uri_for(info.key)
    clips = tuple(ClipRef(cid, f["clip.npz"], f["metadata.json"]) for cid, f in sorted(folders.items())
                  if len(f) == 2)
    if not clips:
        raise XMimicError(f"no clips for dataset {request_id!r} under {prefix}", reason_code="xmimic_dataset_unknown")
    return TrainingData(dataset=request_id, dataset_versions=(f"xgen:{request_id}",), clips=clips)


def download_clips(clips, store, dest: Path) -> Path:
    """Copy every clip (``ClipRef`` or its record) into ``dest/<clip_id>/`` (clip.npz +
    metadata.json); returns ``dest``. A clip that is gone is ``xmimic_clips_missing``."""
    from kibotos.errors import KibotosError, ServiceError

    dest = Path(dest)
    for ref in clips:
        rec = ref.as_record() if isinstance(ref, ClipRef) else ref
        cid = rec["clip_id"]
        if not _SAFE.match(cid) or cid in (".", ".."):
            raise XMimicError(f"bad clip id {cid!r}", reason_code="xmimic_clip_invalid")
        folder = dest / cid
        folder.mkdir(parents=True, exist_ok=True)
        for name, uri in (("clip.npz", rec["clip_uri"]), ("metadata.json", rec["metadata_uri"])):
            try:
                data = store.read_bytes(uri, MAX_CLIP_BYTES)
            except ServiceError:
                raise
            except KibotosError as exc:
                raise XMimicError(f"clip {cid}: {name} at {uri}: {exc}", reason_code="xmimic_clips_missing") from exc
            (folder / name).write_bytes(data)
    return dest


def local_clips(ref: str, home: Path, store, dest: Path | None = None) -> tuple[Path, TrainingData]:
    """``ref`` resolved and its clips copied into ``dest`` (default: a new temp dir)."""
    import tempfile

    data = resolve_dataset(ref, home, store)
    dest = Path(dest) if dest else Path(tempfile.mkdtemp(prefix="xmimic-clips-"))
    return download_clips(data.clips, store, dest), data
