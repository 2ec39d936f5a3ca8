"""Every dashboard query, interpolated as Grafana and the ClickHouse plugin would, runs
against a real embedded ClickHouse (chdb) holding demo-like traffic, and returns the
shape its panel type needs — and, for the headline panels, the right numbers."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

import pytest

from kibotos.warehouse import open_client
from tests.dashboards.grafana import QueryContext, render_sql
from tests.fixtures.warehouse import load_warehouse, prepare_schema

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "dashboards" / "json").glob("*.json"))}
NUMERIC = re.compile(r"^(Nullable\()?(U?Int\d+|Float\d+|Decimal.*|Bool)\)?$")
TIME = re.compile(r"^(Nullable\()?DateTime(64)?(\(.*\))?\)?$")
TEXT = re.compile(r"^(Nullable\()?(LowCardinality\()?(Nullable\()?(String|Enum\d*\(.*\))\)*$")
RANGE_S = 6 * 3600
INTERVAL_S = 300


class Warehouse:
    """The loaded store and the panel contexts of each dashboard."""

    def __init__(self, client, loaded, now_ms: int):
        self.client, self.loaded, self.now_ms = client, loaded, now_ms
        self._contexts: dict[str, QueryContext] = {}

    def run(self, uid: str, sql: str):
        if uid not in self._contexts:
            self._contexts[uid] = _context(self.client, DASHBOARDS[uid], self.now_ms)
        return self.client.query(render_sql(sql, self._contexts[uid]))

    def panel(self, uid: str, title: str):
        [p] = [p for p in DASHBOARDS[uid]["panels"] if p["title"] == title]
        return self.run(uid, p["targets"][0]["rawSql"]).result_rows

    def value(self, uid: str, title: str):
        return self.panel(uid, title)[0][0]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    """One chdb store for the module (chdb locks a directory to one process; the client is
    closed at the end so other modules can open theirs)."""
    client = open_client(f"chdb://{tmp_path_factory.mktemp('dashboards') / 'chdb'}")
    try:
        prepare_schema(client)
        now_ms = int(time.time() * 1000)
        yield Warehouse(client, load_warehouse(client, now_ms), now_ms)
    finally:
        client.close()


def _context(client, raw: dict, now_ms: int) -> QueryContext:
    """The panel context with every variable at "All": each variable's own query runs first."""
    base = QueryContext(dt.datetime.fromtimestamp(now_ms / 1000 - RANGE_S, dt.UTC),
                        dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC), INTERVAL_S)
    values, multi = {}, set()
    for var in raw["templating"]["list"]:
        result = client.query(render_sql(var["query"], base))
        assert len(result.column_names) == 1, f"variable {var['name']}: one column of values"
        values[var["name"]] = [str(row[0]) for row in result.result_rows]
        assert values[var["name"]], f"variable {var['name']} has no values"
        if var.get("multi") or var.get("includeAll"):
            multi.add(var["name"])
    return QueryContext(base.time_from, base.time_to, INTERVAL_S, values, frozenset(multi))


def _sql_targets():
    for uid, raw in DASHBOARDS.items():
        for p in raw["panels"]:
            for t in p["targets"]:
                if t.get("rawSql"):
                    yield pytest.param(uid, p, t, id=f"{uid}:{p['id']}:{t['refId']}:{p['title']}")


def _columns(result) -> list[tuple[str, str]]:
    return [(name, ctype.name) for name, ctype in zip(result.column_names, result.column_types)]


def check_shape(kind: str, fmt: str, result) -> None:
    """What each panel type needs of its frame."""
    cols = _columns(result)
    rows = result.result_rows
    assert rows, "no rows: the demo data should light every panel"
    numeric = [i for i, (_, t) in enumerate(cols) if NUMERIC.match(t)]
    text = [i for i, (_, t) in enumerate(cols) if TEXT.match(t)]
    assert numeric or kind == "table", f"no numeric column in {cols}"
    for i in numeric:  # a misspelled or always-empty column shows as a flat nothing
        assert any(r[i] is not None for r in rows), f"column {cols[i][0]} is all NULL"
    if kind in ("timeseries", "heatmap"):
        assert fmt == "timeseries"
        assert cols[0][0] == "time" and TIME.match(cols[0][1]), f"first column must be the time: {cols}"
        times = [r[0] for r in rows]
        assert times == sorted(times), "time must ascend (long frames are pivoted in order)"
        assert len(set(times)) >= 2, "a time series with a single instant"
        assert set(range(1, len(cols))) == set(numeric) | set(text), f"values and labels only: {cols}"
        if kind == "heatmap":  # pre-bucketed: one numeric column per bucket, named by its upper bound
            bounds = [float("inf") if n == "+Inf" else float(n) for n, _ in cols[1:]]
            assert bounds == sorted(bounds) and set(numeric) == set(range(1, len(cols)))
    elif kind == "histogram":
        assert set(numeric) == set(range(len(cols))) and len(rows) >= 10, "raw numeric values"
    elif kind in ("stat", "gauge", "piechart", "bargauge"):
        assert set(numeric) | set(text) == set(range(len(cols)))
        assert len(text) <= 1, "at most one label column"
        if kind == "stat":
            assert len(rows) == 1 and not text
    else:
        assert kind == "table" and fmt == "table"


@pytest.mark.parametrize("uid, var", [pytest.param(uid, v, id=f"{uid}:${v['name']}")
                                      for uid, raw in DASHBOARDS.items() for v in raw["templating"]["list"]])
def test_variable_query_lists_values(warehouse, uid, var):
    result = warehouse.run(uid, var["query"])
    assert len(result.column_names) == 1 and TEXT.match(result.column_types[0].name)
    values = [row[0] for row in result.result_rows]
    assert values and len(values) == len(set(values)) and None not in values


@pytest.mark.parametrize("uid, panel, target", list(_sql_targets()))
def test_panel_query_runs_and_fits_its_panel(warehouse, uid, panel, target):
    check_shape(panel["type"], target["queryType"], warehouse.run(uid, target["rawSql"]))


def test_headline_numbers_match_the_data(warehouse):
    w = warehouse
    reports = list(w.loaded.reports.values())
    accepted = [r for r in reports if r["verdict"] == "accepted"]
    rejected = [r for r in reports if r["verdict"] == "rejected"]
    assert w.value("kibotos-overview", "Undecided now") == len(w.loaded.pending) == 5
    assert w.value("kibotos-gpu-jobs", "Undecided now") == len(w.loaded.pending)
    # each submission once, although part of the batch was delivered twice
    assert w.value("kibotos-overview", "Decided") == len(reports)
    assert w.value("kibotos-overview", "Acceptance rate") == pytest.approx(len(accepted) / len(reports))
    # the ledger: rewards plus the attribution points of the fixture's datasets and policy
    assert w.loaded.attribution_points > 0
    assert w.value("kibotos-overview", "Points credited") == pytest.approx(
        sum(r["points"] for r in accepted) + w.loaded.attribution_points)
    assert w.value("kibotos-scores", "Scored submissions") == len(accepted)
    assert len(w.panel("kibotos-novelty", "S_novel distribution")) == len(accepted)
    duplicates = [r for r in rejected if r["reason_code"] == "duplicate_submission"]
    assert duplicates and w.value("kibotos-novelty", "Duplicates rejected") == len(duplicates)

    assert sum(n for _, n in w.panel("kibotos-rejections", "Top reason codes")) == len(rejected)
    refused = w.panel("kibotos-rejections", "Recent uploads refused at ingestion")
    assert {row[2] for row in refused} == {a["upload_id"] for a in w.loaded.attempts.values()} != set()
    expected: dict[str, int] = {}
    for r in reports:
        for g in r["gates"]:
            expected[g["gate"]] = expected.get(g["gate"], 0) + 1
    assert {g: n for g, n, *_ in w.panel("kibotos-gate-latency", "Wall time per gate")} == expected
    balances = w.panel("kibotos-miners", "Balance (all time)")
    assert sum(b for _, b in balances) == pytest.approx(sum(r["points"] for r in accepted) + w.loaded.attribution_points)
    backlog = w.panel("kibotos-gpu-jobs", "Verification backlog (received, no verdict yet)")
    assert len(backlog) >= RANGE_S // INTERVAL_S  # filled: an empty queue reads 0, not a gap
    assert max(n for _, n in backlog) >= 1 and min(n for _, n in backlog) == 0


def test_xgen_headline_numbers_match_the_data(warehouse):
    loaded = warehouse.loaded
    assert loaded.xgen_verified > 0 and loaded.xgen_refused
    assert warehouse.value("kibotos-xgen", "Clips verified") == loaded.xgen_verified
    assert warehouse.value("kibotos-xgen", "Requests refused") == len(loaded.xgen_refused)
    stages = {row[0]: row for row in warehouse.panel("kibotos-xgen", "XGen stages")}
    assert list(stages) == ["pose", "retarget", "interaction", "augment", "export"]
    refused = {row[0]: row[4] for row in warehouse.panel("kibotos-xgen", "Recent XGen requests")}
    for rid, stage in loaded.xgen_refused.items():
        assert refused[rid].startswith(f"{stage}: xgen_")


def test_dataset_headline_numbers_match_the_data(warehouse):
    w = warehouse
    loaded = w.loaded.datasets
    assert w.value("kibotos-datasets", "Datasets") == len(loaded) == 2
    assert w.value("kibotos-datasets", "Episodes in datasets") == sum(v["episodes"] for v in loaded.values())
    assert w.value("kibotos-datasets", "Versions published") == sum(v["version"] for v in loaded.values())
    assert w.value("kibotos-datasets", "Attribution points paid") == pytest.approx(w.loaded.attribution_points)
    accepted = [r for r in w.loaded.reports.values() if r["verdict"] == "accepted"]
    assert loaded["all-accepted"]["episodes"] == len(accepted)
    kinds = {row[0]: row for row in w.panel("kibotos-datasets", "Attribution by kind")}
    assert set(kinds) == {"dataset_publication", "policy_evaluation"}
    shares = w.panel("kibotos-datasets", "Attribution share per miner (all time)")
    assert sum(s for _, s in shares) == pytest.approx(1.0, abs=1e-3)


def test_training_headline_numbers_match_the_data(warehouse):
    w, loaded = warehouse, warehouse.loaded.training
    assert w.value("kibotos-training", "Training runs") == sum(loaded["states"].values()) == 4
    assert dict(w.panel("kibotos-training", "Runs by state")) == loaded["states"]
    assert w.value("kibotos-training", "Runs in progress") == loaded["states"]["running"]
    assert w.value("kibotos-training", "Policies") == loaded["states"]["done"]
    # the latest evaluation of each policy, not the mean of all its evaluations
    assert dict(w.panel("kibotos-training", "Eval SR per policy (latest evaluation)")) == pytest.approx(
        {pid: sr for pid, (sr, _) in loaded["latest"].items()})
    assert dict(w.panel("kibotos-training", "Eval GSR per policy (latest evaluation)")) == pytest.approx(
        {pid: gsr for pid, (_, gsr) in loaded["latest"].items()})
    rows = {r[0]: r for r in w.panel("kibotos-training", "Evaluations (latest per policy)")}
    assert rows["teacher-run-t1-it8"][2:7] == (1.0, 0.75, 0.5, 4, 4)
