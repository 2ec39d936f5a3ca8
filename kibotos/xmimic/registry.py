"""The local policy registry: ``<home>/policies/<policy id>/`` holds ``model.pt`` (the
checkpoint), ``policy.json`` (role, task, config version, clips, training figures) and,
once evaluated, ``eval.json``. ``kibotos policies list|show|download`` read it first;
checkpoints published to the object store (``xmimic/<run id>/model_<it>.pt``) are
downloaded from there when the registry has no copy."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from kibotos.xmimic.clips import XMimicError

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def registry_root(home: Path) -> Path:
    return Path(home) / "policies"


def _check_id(policy_id: str) -> str:
    if not _ID.match(policy_id):
        raise XMimicError(f"bad policy id {policy_id!r}", reason_code="xmimic_policy_id_invalid")
    return policy_id


def register(home: Path, checkpoint: Path, *, policy_id: str | None = None, extra: dict | None = None,
             store=None) -> str:
    """Copy ``checkpoint`` into the registry (idempotent per id) and, with an object
    store, publish it there too."""
    from kibotos.xmimic.train import checkpoint_infos  # torch and rsl-rl: only where a checkpoint is read

    infos = checkpoint_infos(checkpoint)
    policy_id = _check_id(policy_id or f"{infos.get('role', 'policy')}-{infos.get('run_id') or Path(checkpoint).parents[1].name}"
                          f"-it{infos.get('iteration', 0)}")
    folder = registry_root(home) / policy_id
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, folder / "model.pt")
    meta = {"policy_id": policy_id, **infos, **(extra or {})}
    if Path(checkpoint).resolve().parent.name == "checkpoints":  # a run directory: its progress.jsonl (curves)
        meta.setdefault("run_dir", str(Path(checkpoint).resolve().parents[1]))
    if store is not None:
        meta["uri"] = store.put_file(folder / "model.pt", f"xmimic/policies/{policy_id}/model.pt").uri
    (folder / "policy.json").write_text(json.dumps(meta, indent=2, default=str))
    return policy_id


def list_policies(home: Path) -> list[dict]:
    root = registry_root(home)
    out = []
    for f in sorted(root.glob("*/policy.json")):
        meta = json.loads(f.read_text())
        ev = f.parent / "eval.json"
        if ev.is_file():
            e = json.loads(ev.read_text())
            meta["sr"] = e["sr"]["rate"]
            meta["gsr"] = e["gsr"]["rate"] if e.get("gsr") else None
        out.append(meta)
    return out


def show(home: Path, policy_id: str) -> dict:
    folder = registry_root(home) / _check_id(policy_id)
    if not (folder / "policy.json").is_file():
        raise XMimicError(f"no policy {policy_id!r} in {registry_root(home)}", reason_code="xmimic_policy_unknown")
    meta = json.loads((folder / "policy.json").read_text())
    if (folder / "eval.json").is_file():
        meta["eval"] = json.loads((folder / "eval.json").read_text())
    return meta


def checkpoint_path(home: Path, policy_id_or_path: str) -> Path:
    """A registry id or a checkpoint file path."""
    p = Path(policy_id_or_path)
    if p.is_file():
        return p
    folder = registry_root(home) / _check_id(policy_id_or_path)
    if (folder / "model.pt").is_file():
        return folder / "model.pt"
    raise XMimicError(f"no policy or checkpoint {policy_id_or_path!r}", reason_code="xmimic_policy_unknown")


def download(home: Path, policy_id: str, dest: Path, store=None) -> Path:
    meta = show(home, policy_id)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / f"{policy_id}.pt"
    local = registry_root(home) / policy_id / "model.pt"
    if local.is_file():
        shutil.copyfile(local, dest)
    elif store is not None and meta.get("uri"):
        shutil.copyfile(store.local_path(meta["uri"]), dest)
    else:
        raise XMimicError(f"policy {policy_id!r} has no stored checkpoint", reason_code="xmimic_policy_unknown")
    return dest


def save_eval(home: Path, policy_id: str, report: dict) -> None:
    folder = registry_root(home) / _check_id(policy_id)
    if folder.is_dir():
        (folder / "eval.json").write_text(json.dumps(report, indent=2))
