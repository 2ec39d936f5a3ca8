"""The read API's dataset routes (served by the stack's query server from the store)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from kibotos.datasets.builder import DatasetBuilder
from kibotos.datasets.spec import parse_spec
from kibotos.reports.server import QueryServer
from tests.kibotos.datasets.helpers import T0, sid, verdict


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type"), exc.read().decode()


@pytest.fixture
def server(store):
    store.create(parse_spec({"name": "ur5"}))
    b = DatasetBuilder(store, "ur5")
    for n, (m, s) in enumerate([("alice", 0.9), ("bob", 0.6)], 1):
        b.offer("verdicts", verdict(n, m, "ur5", s, "file:///b"))
    b.publish(now_ms=T0)
    srv = QueryServer(None, datasets_root=store.root).start()
    yield srv
    srv.stop()


def test_dataset_routes(server):
    status, _, body = get(f"{server.url}/datasets")
    assert status == 200 and json.loads(body) == [
        {"dataset": "ur5", "latest_version": 1, "episodes": 2, "content_hash": json.loads(body)[0]["content_hash"]}]
    status, _, body = get(f"{server.url}/datasets/ur5@v1")
    assert status == 200 and json.loads(body)["hash_ok"] and json.loads(body)["card"]["episodes"] == 2
    status, ctype, page = get(f"{server.url}/datasets/ur5.html")
    assert status == 200 and ctype.startswith("text/html") and f"/reports/{sid(1)}.html" in page
    status, _, body = get(f"{server.url}/datasets/ur5/attribution")
    miners = {m["miner_id"]: m["share"] for m in json.loads(body)["miners"]}
    assert miners == pytest.approx({"alice": 0.6, "bob": 0.4})
    status, _, body = get(f"{server.url}/datasets/ur5@v9")
    assert status == 404 and json.loads(body)["reason_code"] == "dataset_version_not_found"
    assert get(f"{server.url}/datasets/nope")[0] == 404
