"""Asking the running dataset builder to publish now.

``kibotos up`` runs the builder (``streams.dataset_builder``) in a process of its own; it
publishes on its cadence (``builder`` in ``kibotos/config/datasets.yaml``). Whoever needs
a version *now* — the demo, ``kibotos datasets create|build`` while a stack runs — leaves
a request file in the dataset's directory::

    <datasets root>/<name>/publish-<nonce>.request     written by request_publish
    <datasets root>/<name>/publish-<nonce>.json        the builder's answer

The builder notes the sources' high watermarks when it first sees the request, keeps
consuming until its committed offsets reach them (every record produced before the
request has been offered), publishes what is pending, and answers with the latest
version. Files, not a socket: the builder may be restarting, and a request written
meanwhile is answered by the next one. A dataset created just before its request is
picked up by the builder's next scan (``rescan_s``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from kibotos.datasets.store import DatasetError, DatasetStore

SUFFIX = ".request"


def request_publish(store: DatasetStore, name: str, timeout_s: float = 120.0) -> dict:
    """Ask the running builder to catch up and publish ``name``; returns its answer
    (``version``: the latest version or None, ``published``: the version it published
    now or None, ``outcomes``: records offered by outcome since it started).

    :raises DatasetError: ``dataset_builder_timeout`` when no answer came in time.
    """
    store.spec(name)  # dataset_not_found before waiting on anything
    nonce = uuid.uuid4().hex
    request = store.dir(name) / f"publish-{nonce}{SUFFIX}"
    answer = request.with_suffix(".json")
    tmp = request.with_suffix(".tmp")
    tmp.write_text(json.dumps({"requested_at": time.time()}))
    tmp.replace(request)  # whole or not at all: the builder may look at any moment
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answer.exists():
            body = json.loads(answer.read_text())
            answer.unlink(missing_ok=True)
            if not body.pop("ok", False):
                raise DatasetError(f"the dataset builder could not publish {name}: {body.get('error')}",
                                   reason_code=body.get("reason_code") or "dataset_builder_failed")
            return body
        time.sleep(0.2)
    request.unlink(missing_ok=True)
    raise DatasetError(f"the running dataset builder did not publish {name} within {timeout_s:.0f}s "
                       "(see dataset-builder.log under KIBOTOS_HOME)", reason_code="dataset_builder_timeout")


def pending_requests(store: DatasetStore, name: str) -> Iterator[Path]:
    yield from sorted(store.dir(name).glob(f"publish-*{SUFFIX}"))


def has_requests(store: DatasetStore) -> set[str]:
    """The datasets with a publish request waiting."""
    return {p.parent.name for p in store.root.glob(f"*/publish-*{SUFFIX}")} if store.root.is_dir() else set()


def answer(request: Path, body: dict) -> None:
    """Answer ``request`` (and remove it)."""
    out = request.with_suffix(".json")
    tmp = request.with_suffix(".answer-tmp")
    tmp.write_text(json.dumps(body, sort_keys=True, default=str))
    tmp.replace(out)
    request.unlink(missing_ok=True)
