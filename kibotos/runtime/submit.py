"""The submission client: store a bundle in the object store, then emit
``submissions.received`` (claim-check: the event carries the URI and hash, not bytes)."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer

from kibotos.bundle import open_bundle
from kibotos.errors import BundleError, ServiceError
from kibotos.objectstore import ObjectStore
from topics.catalogue import Catalogue


@dataclass(frozen=True)
class Submitted:
    submission_id: str
    miner_id: str
    bundle_uri: str
    readable: bool


def _identify(path: Path, fallback_miner: str) -> tuple[str, str, str | None, bool]:
    """submission id, miner, robot from the manifest; an unreadable bundle still gets an
    id (a fresh one) so that it is judged and rejected with a reason, not lost."""
    try:
        with open_bundle(path) as view:
            raw = view.manifest_raw
        sid = str(uuid.UUID(str(raw.get("submission_id"))))
        miner = str(raw.get("miner_id") or fallback_miner)
        robot = raw.get("robot_model_id") if isinstance(raw.get("robot_model_id"), str) else None
        return sid, miner, robot, True
    except (BundleError, ValueError, TypeError, AttributeError):
        return str(uuid.uuid4()), fallback_miner, None, False


def producer(bootstrap: str) -> Producer:
    # one record per request: see the Tansu watermark note in ARCHITECTURE.md
    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                     "batch.num.messages": 1, "enable.idempotence": False})


def submit_paths(paths: list[Path], *, bootstrap: str, store: ObjectStore, catalogue: Catalogue,
                 miner_id: str = "anonymous") -> list[Submitted]:
    prod = producer(bootstrap)
    out: list[Submitted] = []
    topic = catalogue.submissions_received
    for path in paths:
        path = Path(path)
        sid, miner, robot, readable = _identify(path, miner_id)
        with tempfile.TemporaryDirectory() as tmp:
            src = path
            if path.is_dir():  # a directory store travels as a zip of the same tree
                src = Path(shutil.make_archive(str(Path(tmp) / "bundle"), "zip", root_dir=path))
            stored = store.put_file(src, f"bundles/{sid}.zarr.zip")
        event = {"submission_id": sid, "miner_id": miner, "bundle_uri": stored.uri, "bundle_sha256": stored.sha256,
                 "bundle_size_bytes": stored.size_bytes, "received_at": int(time.time() * 1000),
                 "robot_model_id": robot}
        prod.produce(topic.name, key=topic.key(event), value=topic.serialize(event))
        out.append(Submitted(sid, miner, stored.uri, readable))
    remaining = prod.flush(30)
    if remaining:
        raise ServiceError(f"{remaining} submission event(s) not acknowledged by the broker at {bootstrap}")
    return out
