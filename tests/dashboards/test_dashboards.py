"""Dashboard JSON and Grafana provisioning, read as Grafana reads them (no database)."""

from __future__ import annotations

import ast
import datetime as dt
import json
import re
from pathlib import Path

import pytest
import yaml

from dashboards import build
from tests.dashboards.grafana import (
    Dashboard,
    InterpolationError,
    QueryContext,
    expand_macros,
    interpolate_variables,
    render_sql,
    variable_names,
)

ROOT = Path(__file__).resolve().parents[2]
JSON_FILES = sorted((ROOT / "dashboards" / "json").glob("*.json"))
PROVISIONING = ROOT / "dashboards" / "provisioning"


def _datasources() -> dict[str, str]:
    """uid -> type of every provisioned datasource."""
    out = {}
    for path in sorted((PROVISIONING / "datasources").glob("*.yaml")):
        for ds in yaml.safe_load(path.read_text())["datasources"]:
            out[ds["uid"]] = ds["type"]
    return out


def _dashboards() -> list[tuple[str, dict]]:
    return [(p.name, json.loads(p.read_text())) for p in JSON_FILES]


def test_committed_json_is_what_the_generator_writes():
    rendered = build.render()
    assert sorted(rendered) == [p.name for p in JSON_FILES]
    for path in JSON_FILES:
        assert path.read_text() == rendered[path.name], f"{path.name} is stale: run python -m dashboards.build"
    assert build.main(["--check"]) == 0


@pytest.mark.parametrize("name, raw", _dashboards(), ids=[p.name for p in JSON_FILES])
def test_dashboard_parses_as_a_grafana_model(name, raw):
    model = Dashboard.model_validate(raw)
    assert model.uid.startswith("kibotos-") and "kibotos" in model.tags
    assert name == f"{model.uid}.json"


def test_dashboard_uids_and_titles_are_unique():
    models = [Dashboard.model_validate(raw) for _, raw in _dashboards()]
    assert len({m.uid for m in models}) == len(models) == len(build.DASHBOARDS)
    assert len({m.title for m in models}) == len(models)


def test_the_required_views_exist():
    titles = {p["title"] for _, raw in _dashboards() for p in raw["panels"]}
    for wanted in ("Submissions per minute", "Verdict mix", "Rejections by gate", "Rejections by reason code",
                   "Gate wall time p95", "Miners", "Final score S", "Score components (mean)",
                   "Duplicate and near-duplicate rate", "Verification backlog (received, no verdict yet)",
                   "GPU job queue (Kafka lag of the job topics)", "Evidence jobs completed per minute"):
        assert wanted in titles


def test_provisioned_datasources():
    doc = yaml.safe_load((PROVISIONING / "datasources" / "clickhouse.yaml").read_text())
    [ch] = doc["datasources"]
    assert ch["uid"] == build.CLICKHOUSE["uid"] and ch["type"] == build.CLICKHOUSE["type"]
    data = ch["jsonData"]
    # connection settings come from the environment, never a machine's address
    for key in ("host", "port", "secure", "username"):
        assert re.fullmatch(r"\$\{[A-Z_]+\}", str(data[key])), key
    assert re.fullmatch(r"\$\{[A-Z_]+\}", ch["secureJsonData"]["password"])
    assert data["defaultDatabase"] == "kibotos" and data["protocol"] in ("native", "http")
    assert _datasources() == {build.CLICKHOUSE["uid"]: build.CLICKHOUSE["type"],
                              build.PROMETHEUS["uid"]: build.PROMETHEUS["type"]}


def test_dashboard_provider_loads_a_folder_of_files():
    [provider] = yaml.safe_load((PROVISIONING / "dashboards" / "kibotos.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    assert provider["allowUiUpdates"] is False  # the generator is the source of truth


@pytest.mark.parametrize("name, raw", _dashboards(), ids=[p.name for p in JSON_FILES])
def test_every_query_uses_a_provisioned_datasource_and_defined_variables(name, raw):
    sources = _datasources()
    defined = {v["name"]: v for v in raw["templating"]["list"]}
    used: set[str] = set()
    for v in defined.values():
        assert sources[v["datasource"]["uid"]] == v["datasource"]["type"]
        used |= variable_names(v["query"])
    for p in raw["panels"]:
        assert sources[p["datasource"]["uid"]] == p["datasource"]["type"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], p["title"]
            refs = variable_names(t.get("rawSql") or t.get("expr"))
            assert refs <= set(defined), f"{p['title']}: undefined variables {refs - set(defined)}"
            used |= refs
    assert used >= set(defined), f"unused variables {set(defined) - used}"


def _prometheus_series() -> dict[str, set[str]]:
    """Exposed series name -> label names, from the collectors in kibotos.runtime.metrics."""
    from prometheus_client.metrics import MetricWrapperBase

    import kibotos.runtime.metrics as metrics

    out = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}[obj._type]
            for suffix in suffixes:
                out[obj._name + suffix] = set(obj._labelnames) | ({"le"} if suffix == "_bucket" else set())
    return out


def test_prometheus_panels_query_metrics_kibotos_exports():
    series = _prometheus_series()
    exprs = [t["expr"] for _, raw in _dashboards() for p in raw["panels"] for t in p["targets"] if "expr" in t]
    assert exprs
    for expr in exprs:
        names = re.findall(r"\bkibotos_\w+", expr)
        assert names and all(n in series for n in names), expr
        labels = set(re.findall(r"(\w+)\s*=~?\s*\"", expr))
        for group in re.findall(r"by\s*\(([^)]*)\)", expr):
            labels |= {s.strip() for s in group.split(",") if s.strip()}
        assert labels <= set().union(*(series[n] for n in names)), expr
    # the GPU consumer reports its lag under the processor name the queue panel filters on
    consumer = (ROOT / "gpu_consumers" / "consumer.py").read_text()
    assert 'update_lag("gpu_jobs"' in consumer


def _string_constants(path: Path, suffix: str) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    return {node.targets[0].id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id.endswith(suffix) and isinstance(node.value, ast.Constant)}


def test_evidence_gate_names_match_the_gpu_consumers():
    """The panels, the scores and the job modules read one registry (gpu_consumers.jobs)."""
    from gpu_consumers import alignment, gate_f_pose, ik, playback
    from gpu_consumers.registry import job_specs
    from kibotos.scoring import components

    evidence = {spec.gate for spec in job_specs("evidence")}
    assert {"gate_f_pose", "ik_residual", "playback"} <= evidence
    assert set(build.EVIDENCE_GATES) == evidence
    assert {ik.GATE_ID, playback.GATE_ID, alignment.GATE_ID, gate_f_pose.GATE_ID} <= evidence
    # the evidence the scores read: every GPU stage's gate id
    assert {components.POSE_GATE, components.IK_GATE, components.ALIGN_GATE, components.TASK_GATE} <= evidence
    assert components.NOVELTY_GATE == "novelty" and "gate = 'novelty'" in build.NOVELTY
    checker = ROOT / "kibotos" / "novelty" / "checker.py"
    if checker.is_file():  # the reason codes the novelty panels count
        reasons = _string_constants(checker, "")
        assert reasons["GATE_ID"] == "novelty"
        assert f"'{reasons['REASON_DUPLICATE']}'" in build.DUPLICATE
        assert f"'{reasons['REASON_ARTIFACTS']}'" in build.ARTIFACTS
        assert 'f"{scope}_near_duplicate"' in checker.read_text() and "same_miner_near_duplicate" in build.NEAR_DUPLICATE


# --- the interpolation the other tests rely on -------------------------------------------

UTC = dt.UTC
CTX = QueryContext(dt.datetime(2026, 1, 2, 3, 0, tzinfo=UTC), dt.datetime(2026, 1, 2, 4, 0, tzinfo=UTC), interval_s=30,
                   variables={"miner": ["a", "o'b"], "one": ["x"]}, multi=frozenset({"miner"}))


@pytest.mark.parametrize("sql, expected", [
    ("$__timeFilter(decided_at)", "decided_at >= toDateTime(1767322800) AND decided_at <= toDateTime(1767326400)"),
    ("$__timeFilter_ms(t)", "t >= fromUnixTimestamp64Milli(1767322800000) AND t <= fromUnixTimestamp64Milli(1767326400000)"),
    ("$__dateFilter(d)", "d >= toDate('2026-01-02') AND d <= toDate('2026-01-02')"),
    ("$__timeInterval(toDateTime(max(t)))", "toStartOfInterval(toDateTime(toDateTime(max(t))), INTERVAL 30 second)"),
    ("$__timeInterval_ms(t)", "toStartOfInterval(toDateTime64(t, 3), INTERVAL 30000 millisecond)"),
    ("$__fromTime..$__toTime/$__interval_s", "toDateTime(1767322800)..toDateTime(1767326400)/30"),
    ("$__fromTime_ms", "fromUnixTimestamp64Milli(1767322800000)"),
])
def test_macros_expand_like_the_plugin(sql, expected):
    assert expand_macros(sql, CTX) == expected


@pytest.mark.parametrize("sql, expected", [
    ("m IN (${miner:singlequote})", "m IN ('a','o\\'b')"),
    ("m IN (${miner:sqlstring})", "m IN ('a','o''b')"),
    ("${miner:csv} $one ${one} [[one]]", "a,o'b x x x"),
])
def test_variables_interpolate_like_grafana(sql, expected):
    assert interpolate_variables(sql, CTX) == expected


@pytest.mark.parametrize("sql", ["$__timeFilter", "$__timeFilter(a, b)", "$__nope(x)", "$nope", "m = $miner",
                                 "$__timeFilter((x)"])
def test_bad_queries_are_refused(sql):
    with pytest.raises(InterpolationError):
        render_sql(sql, CTX)
