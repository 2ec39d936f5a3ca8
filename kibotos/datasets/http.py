"""Dataset routes of the read API (``kibotos.reports.server``), served from the dataset
store's files (no warehouse lock needed):

``GET /datasets`` (every dataset and its latest version), ``GET /datasets/<name[@vN]>``
(version.json + card.json + hash check), ``GET /datasets/<name[@vN]>.html`` (the dataset
page; its episode rows link to ``/reports/<id>.html`` on the same server),
``GET /datasets/<name[@vN]>/attribution`` (each miner's share and points).
"""

from __future__ import annotations

from pathlib import Path

from kibotos.datasets.attribution import shares
from kibotos.datasets.store import DatasetStore
from kibotos.errors import KibotosError

NOT_FOUND = {"dataset_not_found", "dataset_version_not_found", "dataset_ref_invalid"}


def dataset_route(root: Path, parts: list[str], objects=None) -> tuple[int, object, str] | None:
    """``(status, body, content type)`` for a ``/datasets`` path, None for other paths;
    ``objects``: the object store the versions live in (``root`` is then its cache)."""
    if not parts or parts[0] != "datasets":
        return None
    store = DatasetStore(root, objects=objects)
    json_type = "application/json"
    try:
        if parts == ["datasets"]:
            out = []
            for name in store.names():
                v = store.latest(name)
                info = store.info(name, v) if v else {}
                out.append({"dataset": name, "latest_version": v, "episodes": info.get("episodes", 0),
                            "content_hash": info.get("content_hash")})
            return 200, out, json_type
        if len(parts) == 2 and parts[1].endswith(".html"):
            from kibotos.datasets.html import render_version_page

            name, v = store.resolve(parts[1][: -len(".html")])
            return 200, render_version_page(store, name, v), "text/html; charset=utf-8"
        if len(parts) == 2:
            name, v = store.resolve(parts[1])
            return 200, {"version": store.info(name, v), "card": store.card(name, v),
                         "hash_ok": store.verify(name, v)}, json_type
        if len(parts) == 3 and parts[2] == "attribution":
            name, v = store.resolve(parts[1])
            return 200, {"dataset": name, "version": v, "miners": shares(store.episodes(name, v)),
                         "entries": store.attribution(name, v)}, json_type
    except KibotosError as exc:
        status = 404 if exc.reason_code in NOT_FOUND else 400
        return status, {"error": str(exc), "reason_code": exc.reason_code}, json_type
    return 404, {"error": "no such dataset route"}, json_type
