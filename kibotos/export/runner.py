"""Export a published dataset version: ``export_version(store, name, version, out, objects)``.

Output: ``<out>/<name>/v<NNNNNN>/`` with ``lerobot/<robot>-<fps>fps-<W>x<H>/`` (LeRobot
v3.0 datasets, ``kibotos.export.lerobot``), ``humanx/<submission_id>/`` (clip.npz +
metadata.json, ``kibotos.export.humanx``), ``card.json``/``card.md`` (the version's
card) and ``export.json``: the version's content hash, the formats, per-file SHA-256,
and the episodes that could not be exported with a reason code.

Idempotent: the export is written to a temporary directory and renamed into place; an
export of the same version whose ``export.json`` names the same content hash and formats
is reused, not rewritten. The files are deterministic, so a forced re-export gives the
same bytes (the file hashes in ``export.json`` compare them). Episodes are streamed from
``episodes.jsonl`` and converted one at a time.

With an object store on the dataset store (``DatasetStore.objects``), an export is also
published there (``kibotos.datasets.objects``: content-addressed blobs, ``export.json`` as
its manifest, never overwritten — a forced re-export that gave other bytes is refused with
``dataset_object_conflict``), and an export missing here but stored there is fetched into
``out`` (the local directory is a cache) instead of being converted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from kibotos.datasets import objects as ds_objects
from kibotos.datasets.store import DatasetStore
from kibotos.errors import KibotosError
from kibotos.export.bundle_frames import read_bundle
from kibotos.export.humanx import copy_xgen_clip, write_bundle_clip
from kibotos.export.lerobot import LeRobotWriter, video_info

FORMATS = ("lerobot", "humanx")
EXPORT_FORMAT_VERSION = "kibotos-export-1"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_dir(out: Path, name: str, version: int) -> Path:
    return Path(out) / name / f"v{version:06d}"


def export_version(store: DatasetStore, name: str, version: int, out: Path, objects,
                   formats: tuple[str, ...] = FORMATS, force: bool = False, progress=None) -> dict:
    """Export ``name`` v``version``; returns its ``export.json`` (plus ``reused``)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise KibotosError(f"unknown export format(s) {unknown or list(formats)}; known: {', '.join(FORMATS)}",
                           reason_code="export_format_unknown")
    info = store.info(name, version)
    final = export_dir(out, name, version)
    manifest_path = final / "export.json"
    if manifest_path.exists() and not force:
        done = json.loads(manifest_path.read_text())
        if done.get("content_hash") == info["content_hash"] and set(formats) <= set(done.get("formats", [])):
            if store.objects is not None:  # exported before the object store was configured
                ds_objects.upload_export(store.objects, name, version, final, done)
            return done | {"reused": True}
    if store.objects is not None and not force:
        raw = ds_objects.find_export(store.objects, name, version, formats, info["content_hash"])
        if raw is not None:
            ds_objects.fetch_export(store.objects, name, raw, final)
            return json.loads(raw) | {"reused": True}
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    writers: dict[tuple, LeRobotWriter] = {}
    skipped, exported = [], 0
    for k, ep in enumerate(store.episodes(name, version)):
        line = ep.to_line()
        episode = json.loads(line)
        try:
            if ep.source == "xgen.clips":
                if "humanx" in formats:
                    meta = objects.local_path(ep.metadata_uri) if ep.metadata_uri else None
                    copy_xgen_clip(objects.local_path(ep.bundle_uri), meta, tmp / "humanx" / ep.submission_id, episode)
                exported += 1
                continue  # an XGen clip has no video stream of its own: LeRobot holds submissions
            be = read_bundle(objects.local_path(ep.bundle_uri))
            if "humanx" in formats:
                write_bundle_clip(be, tmp / "humanx" / ep.submission_id, episode)
            if "lerobot" in formats:
                if be.mp4 is None or be.fps != round(be.fps):
                    raise KibotosError("no encoded primary video at an integer fps", reason_code="lerobot_unsupported")
                w, h, codec = video_info(be.mp4)
                fps = int(round(be.fps))
                key = (be.robot_model_id, fps, w, h, tuple(be.joint_names))
                if key not in writers:
                    label = f"{be.robot_model_id}-{fps}fps-{w}x{h}"
                    used = {wr.root.name for wr in writers.values()}
                    if label in used:  # same robot and video, other joints (another revision)
                        label = f"{label}-{sum(1 for u in used if u.startswith(label)) + 1}"
                    writers[key] = LeRobotWriter(tmp / "lerobot" / label, be.robot_model_id, fps, be.joint_names,
                                                 w, h, codec, be.joint_vel is not None)
                writers[key].add(be, line)
            exported += 1
        except KibotosError as exc:
            skipped.append({"submission_id": ep.submission_id, "reason_code": exc.reason_code, "detail": str(exc)[:300]})
        if progress is not None:
            progress(k + 1)
    groups = {str(w.root.relative_to(tmp)): w.close() | {"root": str(w.root.relative_to(tmp))}
              for w in writers.values()}
    version_dir = store.version_dir(name, version)  # cached by store.info above
    for fname in ("card.json", "card.md"):
        shutil.copyfile(version_dir / fname, tmp / fname)
    files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    manifest = {"format": EXPORT_FORMAT_VERSION, "dataset": name, "version": version,
                "content_hash": info["content_hash"], "formats": sorted(formats), "episodes": info["episodes"],
                "exported": exported, "skipped": skipped, "lerobot": groups,
                "files_sha256": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest(),
                "files": files}
    (tmp / "export.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    if store.objects is not None:
        try:
            ds_objects.upload_export(store.objects, name, version, tmp, manifest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return manifest | {"reused": False, "wall_s": round(time.perf_counter() - t0, 3)}


def humanx_clips_dir(store: DatasetStore, ref: str, out: Path, objects) -> tuple[str, Path]:
    """``(name@vN, <export>/humanx)``: the HumanX clip folders of dataset ``ref`` (``NAME``
    or ``NAME@vN``), exported first if needed — a clips directory for training; a policy
    trained on it names ``name@vN`` in ``kibotos.datasets.policy.record_policy_evaluation``."""
    name, version = store.resolve(ref)
    export_version(store, name, version, out, objects, formats=("humanx",))
    return f"{name}@v{version}", export_dir(out, name, version) / "humanx"
