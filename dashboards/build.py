"""Generate the Kibotos Grafana dashboards: ``python -m dashboards.build [--check]``.

Every ClickHouse panel is raw SQL for the ``grafana-clickhouse-datasource`` plugin (v4)
against the warehouse tables (``infra/clickhouse/migrations``). The replacing tables are
read with ``FINAL`` so a redelivered row counts once. Time filtering and bucketing use
the plugin's macros, expanded by the plugin's backend at query time:

* ``$__timeFilter(col)`` -> ``col >= toDateTime(<from s>) AND col <= toDateTime(<to s>)``
* ``$__timeInterval(col)`` -> ``toStartOfInterval(toDateTime(col), INTERVAL <interval s> second)``
* ``$__fromTime`` / ``$__toTime`` -> ``toDateTime(<epoch s>)``; ``$__interval_s`` -> seconds

Dashboard variables are multi-value and always spelled ``${name:singlequote}`` inside
``IN (...)`` (Grafana quotes each value).

Two GPU-queue panels read Prometheus (``kibotos_jobs_in_flight``,
``kibotos_consumer_lag{processor="gpu_jobs"}``): a job waiting in a Kafka topic leaves no
row in ClickHouse until its verdict, so the warehouse can only show the verification
backlog (received, no verdict yet) while the topic lag is the exact GPU queue depth.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gpu_consumers.registry import EVIDENCE_GATES as JOB_GATES
from streams.stage import VALIDATOR_FAULTS

HERE = Path(__file__).resolve().parent
JSON_DIR = HERE / "json"
CLICKHOUSE = {"type": "grafana-clickhouse-datasource", "uid": "kibotos-clickhouse"}
PROMETHEUS = {"type": "prometheus", "uid": "kibotos-prometheus"}
PLUGIN_VERSION = "4.5.1"  # target model version: newer plugins read it as is (no v3 migration)
SCHEMA_VERSION = 39
# evidence stages run by the GPU consumer group (gate ids of gpu_consumers/*.py) and the
# ones reserved for later jobs; the tests check this against gpu_consumers/
EVIDENCE_GATES = tuple(JOB_GATES.values())  # the evidence jobs' result ids (gpu_consumers.jobs)
EVIDENCE_IN = "(" + ", ".join(f"'{g}'" for g in EVIDENCE_GATES) + ")"
# dead letters of the validator's own faults (streams.stage: retried, verdict pending)
PARKED_IN = "(" + ", ".join(f"'{c}'" for c in ("job_service_unavailable", *sorted(VALIDATOR_FAULTS))) + ")"


# --- building blocks -------------------------------------------------------------------

def sql_target(sql: str, fmt: str, ref: str = "A") -> dict[str, Any]:
    """A ClickHouse SQL query; ``fmt`` is ``timeseries`` (long frames pivoted by label
    columns) or ``table``."""
    return {"refId": ref, "datasource": CLICKHOUSE, "editorType": "sql", "pluginVersion": PLUGIN_VERSION,
            "queryType": fmt, "format": 0 if fmt == "timeseries" else 1, "rawSql": _tidy(sql)}


def prom_target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {"refId": ref, "datasource": PROMETHEUS, "expr": expr, "legendFormat": legend, "range": True}


def _tidy(sql: str) -> str:
    lines = [line.rstrip() for line in sql.strip("\n").splitlines()]
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return "\n".join(line[indent:] for line in lines).strip()


def _reduce(values: bool) -> dict[str, Any]:
    return {"values": values, "calcs": [] if values else ["lastNotNull"], "fields": ""}


def panel(kind: str, title: str, targets: list[dict], *, w: int = 12, h: int = 8, unit: str | None = None,
          description: str = "", stacked: bool = False, bars: bool = False, decimals: int | None = None,
          minimum: float | None = None, maximum: float | None = None) -> dict[str, Any]:
    """A panel of ``kind`` (timeseries, stat, piechart, bargauge, table, histogram, heatmap)."""
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    if decimals is not None:
        defaults["decimals"] = decimals
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    options: dict[str, Any] = {}
    if kind == "timeseries":
        defaults["custom"] = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 20 if stacked else 8,
                              "showPoints": "never", "spanNulls": False,
                              "stacking": {"mode": "normal" if stacked else "none", "group": "A"}}
        options = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "max"]},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    elif kind == "stat":
        options = {"reduceOptions": _reduce(False), "colorMode": "value", "graphMode": "none", "textMode": "auto"}
    elif kind == "piechart":
        options = {"reduceOptions": _reduce(True), "pieType": "donut",
                   "legend": {"displayMode": "table", "placement": "right", "values": ["value", "percent"]}}
    elif kind == "bargauge":
        options = {"reduceOptions": _reduce(True), "orientation": "horizontal", "displayMode": "gradient",
                   "showUnfilled": True}
    elif kind == "table":
        options = {"showHeader": True, "cellHeight": "sm"}
    elif kind == "histogram":
        options = {"combine": False, "legend": {"displayMode": "list", "placement": "bottom"}}
    elif kind == "heatmap":
        options = {"calculate": False, "rowsFrame": {"layout": "le"}, "yAxis": {"axisPlacement": "left"},
                   "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64}, "cellGap": 1}
    datasource = targets[0]["datasource"]
    return {"type": kind, "title": title, "description": description, "datasource": datasource,
            "targets": targets, "fieldConfig": {"defaults": defaults, "overrides": []}, "options": options,
            "gridPos": {"w": w, "h": h}}


def variable(name: str, label: str, sql: str) -> dict[str, Any]:
    """A multi-value query variable (with All) refreshed when the time range changes."""
    return {"name": name, "label": label, "type": "query", "datasource": CLICKHOUSE, "query": _tidy(sql),
            "definition": _tidy(sql), "refresh": 2, "multi": True, "includeAll": True,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1, "hide": 0}


def dashboard(uid: str, title: str, description: str, panels: list[dict], variables: list[dict] = ()) -> dict:
    """Lay ``panels`` out left to right, top to bottom on Grafana's 24-column grid."""
    x = y = row_h = 0
    laid = []
    for pid, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        laid.append({"id": pid, **p, "gridPos": {"h": h, "w": w, "x": x, "y": y}})
        x, row_h = x + w, max(row_h, h)
    return {
        "id": None, "uid": uid, "title": title, "description": description, "tags": ["kibotos"],
        "timezone": "utc", "editable": True, "graphTooltip": 1, "refresh": "30s", "schemaVersion": SCHEMA_VERSION,
        "version": 1, "time": {"from": "now-6h", "to": "now"}, "timepicker": {},
        "links": [{"title": "Kibotos", "type": "dashboards", "tags": ["kibotos"], "asDropdown": True,
                   "includeVars": False, "keepTime": True}],
        "annotations": {"list": []}, "templating": {"list": list(variables)}, "panels": laid,
    }


def ts(title: str, sql: str, **kw) -> dict:
    return panel("timeseries", title, [sql_target(sql, "timeseries")], **kw)


def table(title: str, sql: str, **kw) -> dict:
    return panel("table", title, [sql_target(sql, "table")], **kw)


def tabular(kind: str, title: str, sql: str, **kw) -> dict:
    """stat / piechart / bargauge / histogram: table-format frames reduced by the panel."""
    return panel(kind, title, [sql_target(sql, "table")], **kw)


MINER_VAR = variable("miner", "Miner", """
    SELECT miner_id FROM kibotos.verification_reports
    WHERE $__timeFilter(decided_at)
    GROUP BY miner_id ORDER BY miner_id
""")
MINERS = "miner_id IN (${miner:singlequote})"

UNDECIDED_NOW = """
    SELECT count() AS undecided
    FROM kibotos.submissions FINAL
    WHERE submission_id NOT IN (SELECT submission_id FROM kibotos.verification_reports)
"""


# --- dashboards ------------------------------------------------------------------------

def overview() -> dict:
    return dashboard("kibotos-overview", "Kibotos · Overview", "Submissions, verdicts and points at a glance.", [
        tabular("stat", "Submissions received", """
            SELECT count() AS received FROM kibotos.submissions FINAL WHERE $__timeFilter(received_at)
        """, w=4, h=4),
        tabular("stat", "Decided", """
            SELECT count() AS verdicts FROM kibotos.verification_reports FINAL WHERE $__timeFilter(decided_at)
        """, w=4, h=4),
        tabular("stat", "Acceptance rate", """
            SELECT countIf(verdict = 'accepted') / greatest(count(), 1) AS acceptance
            FROM kibotos.verification_reports FINAL WHERE $__timeFilter(decided_at)
        """, w=4, h=4, unit="percentunit", decimals=1),
        tabular("stat", "Points credited", """
            SELECT sum(points) AS points FROM kibotos.points_ledger FINAL WHERE $__timeFilter(created_at)
        """, w=4, h=4, decimals=0),
        tabular("stat", "Undecided now", UNDECIDED_NOW, w=4, h=4,
                description="Received, no verdict yet: in the gates or waiting for evidence jobs."),
        tabular("stat", "Dead letters", """
            SELECT count() AS dead_letters FROM kibotos.dead_letters FINAL WHERE $__timeFilter(failed_at)
        """, w=4, h=4),
        ts("Submissions per minute", """
            SELECT time, sum(received) * 60 / $__interval_s AS received, sum(decided) * 60 / $__interval_s AS decided
            FROM
            (
                SELECT $__timeInterval(received_at) AS time, count() AS received, toUInt64(0) AS decided
                FROM kibotos.submissions FINAL WHERE $__timeFilter(received_at) GROUP BY time
                UNION ALL
                SELECT $__timeInterval(decided_at) AS time, toUInt64(0) AS received, count() AS decided
                FROM kibotos.verification_reports FINAL WHERE $__timeFilter(decided_at) GROUP BY time
            )
            GROUP BY time ORDER BY time
        """, w=12, unit="short", description="Received = submissions.received events; decided = verdicts."),
        ts("Verdicts over time", """
            SELECT $__timeInterval(decided_at) AS time,
                   countIf(verdict = 'accepted') AS accepted, countIf(verdict = 'rejected') AS rejected
            FROM kibotos.verification_reports FINAL
            WHERE $__timeFilter(decided_at)
            GROUP BY time ORDER BY time
        """, w=12, stacked=True, bars=True),
        tabular("piechart", "Verdict mix", """
            SELECT verdict, count() AS submissions
            FROM kibotos.verification_reports FINAL WHERE $__timeFilter(decided_at)
            GROUP BY verdict ORDER BY verdict
        """, w=6),
        tabular("piechart", "Where rejections happen", """
            SELECT ifNull(failed_gate, 'unknown') AS gate, count() AS rejections
            FROM kibotos.verification_reports FINAL
            WHERE $__timeFilter(decided_at) AND verdict = 'rejected'
            GROUP BY gate ORDER BY rejections DESC
        """, w=6),
        ts("Dead letters by error code", """
            SELECT $__timeInterval(failed_at) AS time, error_code, count() AS records
            FROM kibotos.dead_letters FINAL WHERE $__timeFilter(failed_at)
            GROUP BY time, error_code ORDER BY time
        """, w=12, bars=True),
        table("Latest verdicts", """
            SELECT decided_at, submission_id, miner_id, verdict, failed_gate, reason_code, points, score
            FROM kibotos.verification_reports FINAL
            WHERE $__timeFilter(decided_at)
            ORDER BY decided_at DESC LIMIT 50
        """, w=24, h=10),
    ])


GATE_VAR_FAILED = variable("gate", "Gate", """
    SELECT failed_gate FROM kibotos.verification_reports
    WHERE $__timeFilter(decided_at) AND failed_gate IS NOT NULL
    GROUP BY failed_gate ORDER BY failed_gate
""")


def rejections() -> dict:
    rejected = "$__timeFilter(decided_at) AND verdict = 'rejected' AND ifNull(failed_gate, '') IN (${gate:singlequote})"
    return dashboard("kibotos-rejections", "Kibotos · Rejections", "Rejections by gate and reason code.", [
        ts("Rejections by gate", f"""
            SELECT $__timeInterval(decided_at) AS time, ifNull(failed_gate, 'unknown') AS gate, count() AS rejections
            FROM kibotos.verification_reports FINAL
            WHERE {rejected}
            GROUP BY time, gate ORDER BY time
        """, stacked=True, bars=True),
        ts("Rejections by reason code", f"""
            SELECT $__timeInterval(decided_at) AS time, ifNull(reason_code, 'unknown') AS reason_code, count() AS rejections
            FROM kibotos.verification_reports FINAL
            WHERE {rejected}
            GROUP BY time, reason_code ORDER BY time
        """, stacked=True, bars=True),
        ts("Rejection rate per gate (of submissions reaching it)", """
            SELECT $__timeInterval(decided_at) AS time, gate, countIf(NOT passed) / count() AS rejection_rate
            FROM kibotos.gate_results FINAL
            WHERE $__timeFilter(decided_at) AND gate IN (${gate:singlequote})
            GROUP BY time, gate ORDER BY time
        """, unit="percentunit", minimum=0, maximum=1),
        tabular("bargauge", "Top reason codes", f"""
            SELECT ifNull(reason_code, 'unknown') AS reason_code, count() AS rejections
            FROM kibotos.verification_reports FINAL
            WHERE {rejected}
            GROUP BY reason_code ORDER BY rejections DESC LIMIT 20
        """),
        table("Reason codes by gate", f"""
            SELECT ifNull(failed_gate, 'unknown') AS gate, ifNull(reason_code, 'unknown') AS reason_code,
                   count() AS rejections, round(rejections / sum(rejections) OVER (), 4) AS share,
                   uniqExact(miner_id) AS miners, any(submission_id) AS example_submission
            FROM kibotos.verification_reports FINAL
            WHERE {rejected}
            GROUP BY gate, reason_code ORDER BY rejections DESC
        """, w=12, h=10),
        table("Soft flags raised", """
            SELECT gate, arrayJoin(flags) AS flag, count() AS results
            FROM kibotos.gate_results FINAL
            WHERE $__timeFilter(decided_at) AND gate IN (${gate:singlequote})
            GROUP BY gate, flag ORDER BY results DESC LIMIT 50
        """, w=12, h=10, description="Flags are soft evidence: recorded, never a rejection by themselves."),
        table("Recent rejections", f"""
            SELECT decided_at, submission_id, miner_id, failed_gate, reason_code, config_version
            FROM kibotos.verification_reports FINAL
            WHERE {rejected}
            ORDER BY decided_at DESC LIMIT 100
        """, w=24, h=10),
        # an upload refused at the ingest edge judges that attempt, not the submission
        # (anyone may upload under any submission_id): its own table, its own panels
        ts("Uploads refused at ingestion", """
            SELECT $__timeInterval(decided_at) AS time, ifNull(reason_code, 'unknown') AS reason_code, count() AS uploads
            FROM kibotos.upload_verdicts FINAL
            WHERE $__timeFilter(decided_at)
            GROUP BY time, reason_code ORDER BY time
        """, stacked=True, bars=True, description="Upload attempts the ingest checks refused (signature, hash "
                                                  "tree, manifest, limits); never a submission's verdict."),
        table("Recent uploads refused at ingestion", """
            SELECT decided_at, submission_id, upload_id, miner_id, reason_code
            FROM kibotos.upload_verdicts FINAL
            WHERE $__timeFilter(decided_at)
            ORDER BY decided_at DESC LIMIT 100
        """, w=12, h=10),
    ], [GATE_VAR_FAILED])


GATE_VAR_RESULTS = variable("gate", "Gate", """
    SELECT gate FROM kibotos.gate_results
    WHERE $__timeFilter(decided_at)
    GROUP BY gate ORDER BY min(gate_order), gate
""")
GATE_WALL = "$__timeFilter(decided_at) AND gate IN (${gate:singlequote}) AND wall_ms IS NOT NULL"


def gate_latency() -> dict:
    percentile = [ts(f"Gate wall time p{q}", f"""
            SELECT $__timeInterval(decided_at) AS time, gate, quantile(0.{q})(wall_ms) AS p{q}_ms
            FROM kibotos.gate_results FINAL
            WHERE {GATE_WALL}
            GROUP BY time, gate ORDER BY time
        """, w=8, unit="ms") for q in (50, 95, 99)]
    return dashboard("kibotos-gate-latency", "Kibotos · Gate latency", "Per-gate wall time (gate_results.wall_ms).", [
        *percentile,
        table("Wall time per gate", f"""
            SELECT gate, count() AS results,
                   round(quantile(0.5)(wall_ms), 2) AS p50_ms, round(quantile(0.95)(wall_ms), 2) AS p95_ms,
                   round(quantile(0.99)(wall_ms), 2) AS p99_ms, round(max(wall_ms), 2) AS max_ms,
                   round(avg(wall_ms), 2) AS mean_ms, round(sum(wall_ms) / 1000, 1) AS total_s
            FROM kibotos.gate_results FINAL
            WHERE {GATE_WALL}
            GROUP BY gate ORDER BY min(gate_order), gate
        """, w=12, h=9),
        panel("heatmap", "Wall time distribution (bucket upper bound, ms)", [sql_target(f"""
            SELECT $__timeInterval(decided_at) AS time,
                   countIf(wall_ms < 1) AS `1`, countIf(wall_ms >= 1 AND wall_ms < 10) AS `10`,
                   countIf(wall_ms >= 10 AND wall_ms < 100) AS `100`, countIf(wall_ms >= 100 AND wall_ms < 1000) AS `1000`,
                   countIf(wall_ms >= 1000 AND wall_ms < 10000) AS `10000`, countIf(wall_ms >= 10000) AS `+Inf`
            FROM kibotos.gate_results FINAL
            WHERE {GATE_WALL}
            GROUP BY time ORDER BY time
        """, "timeseries")], w=12, h=9),
        ts("Gate time per submission (sum over its gates)", """
            SELECT time, quantile(0.5)(total_ms) AS p50_ms, quantile(0.95)(total_ms) AS p95_ms
            FROM
            (
                SELECT submission_id, $__timeInterval(max(decided_at)) AS time, sum(wall_ms) AS total_ms
                FROM kibotos.gate_results FINAL
                WHERE $__timeFilter(decided_at)
                GROUP BY submission_id
            )
            GROUP BY time ORDER BY time
        """, unit="ms"),
        ts("Received → verdict", """
            SELECT $__timeInterval(r.decided_at) AS time,
                   quantile(0.5)(dateDiff('millisecond', s.received_at, r.decided_at)) / 1000 AS p50_s,
                   quantile(0.95)(dateDiff('millisecond', s.received_at, r.decided_at)) / 1000 AS p95_s
            FROM (SELECT submission_id, decided_at FROM kibotos.verification_reports FINAL
                  WHERE $__timeFilter(decided_at)) AS r
            INNER JOIN (SELECT submission_id, received_at FROM kibotos.submissions FINAL) AS s
                ON r.submission_id = s.submission_id
            GROUP BY time ORDER BY time
        """, unit="s", description="End to end: queueing, every gate and every evidence job."),
        tabular("histogram", "Wall time of the selected gates", f"""
            SELECT assumeNotNull(wall_ms) AS wall_time_ms
            FROM kibotos.gate_results FINAL
            WHERE {GATE_WALL}
            LIMIT 20000
        """, w=24, unit="ms"),
    ], [GATE_VAR_RESULTS])


def miners() -> dict:
    return dashboard("kibotos-miners", "Kibotos · Miners", "Acceptance and points per miner.", [
        table("Miners", f"""
            SELECT r.miner_id AS miner, decided, accepted, rejected, acceptance_rate, mean_score, reward_sum,
                   ifNull(l.points, 0) AS points_credited, last_verdict
            FROM
            (
                SELECT miner_id, count() AS decided, countIf(verdict = 'accepted') AS accepted,
                       countIf(verdict = 'rejected') AS rejected, round(accepted / decided, 4) AS acceptance_rate,
                       round(avg(score), 4) AS mean_score, round(sum(reward), 2) AS reward_sum,
                       max(decided_at) AS last_verdict
                FROM kibotos.verification_reports FINAL
                WHERE $__timeFilter(decided_at) AND {MINERS}
                GROUP BY miner_id
            ) AS r
            LEFT JOIN
            (
                SELECT miner_id, sum(points) AS points FROM kibotos.points_ledger FINAL
                WHERE $__timeFilter(created_at) GROUP BY miner_id
            ) AS l ON r.miner_id = l.miner_id
            ORDER BY points_credited DESC, miner
        """, w=24, h=9),
        ts("Acceptance rate per miner", f"""
            SELECT $__timeInterval(decided_at) AS time, miner_id, countIf(verdict = 'accepted') / count() AS acceptance
            FROM kibotos.verification_reports FINAL
            WHERE $__timeFilter(decided_at) AND {MINERS}
            GROUP BY time, miner_id ORDER BY time
        """, unit="percentunit", minimum=0, maximum=1),
        ts("Points credited per miner", f"""
            SELECT $__timeInterval(created_at) AS time, miner_id, sum(points) AS points
            FROM kibotos.points_ledger FINAL
            WHERE $__timeFilter(created_at) AND {MINERS}
            GROUP BY time, miner_id ORDER BY time
        """, bars=True, stacked=True),
        tabular("bargauge", "Balance (all time)", f"""
            SELECT miner_id, sum(points) AS balance
            FROM kibotos.points_ledger FINAL
            WHERE {MINERS}
            GROUP BY miner_id ORDER BY balance DESC LIMIT 50
        """, w=8),
        tabular("stat", "Points credited to the selected miners", f"""
            SELECT sum(points) AS points FROM kibotos.points_ledger FINAL
            WHERE $__timeFilter(created_at) AND {MINERS}
        """, w=4, decimals=0),
        ts("Mean score per miner", f"""
            SELECT $__timeInterval(decided_at) AS time, miner_id, avg(score) AS mean_score
            FROM kibotos.verification_reports FINAL
            WHERE $__timeFilter(decided_at) AND {MINERS} AND score IS NOT NULL
            GROUP BY time, miner_id ORDER BY time
        """, minimum=0, maximum=1),
        table("Rejection reasons per miner", f"""
            SELECT miner_id, ifNull(failed_gate, 'unknown') AS gate, ifNull(reason_code, 'unknown') AS reason_code,
                   count() AS rejections
            FROM kibotos.verification_reports FINAL
            WHERE $__timeFilter(decided_at) AND verdict = 'rejected' AND {MINERS}
            GROUP BY miner_id, gate, reason_code ORDER BY miner_id, rejections DESC
        """, w=24, h=10),
    ], [MINER_VAR])


COMPONENT_COLUMNS = ("s_pose", "s_retarget", "s_align", "s_task", "s_object", "s_novel")
SCORED = f"$__timeFilter(decided_at) AND score IS NOT NULL AND {MINERS}"
REPORTS = "kibotos.verification_reports FINAL"


def scores() -> dict:
    mean_components = ", ".join(f"avg({c}) AS {c[2:]}" for c in COMPONENT_COLUMNS)
    missing = ", ".join(f"countIf({c} IS NULL) / count() AS {c[2:]}" for c in COMPONENT_COLUMNS)
    per_miner = ", ".join(f"round(avg({c}), 3) AS {c[2:]}" for c in COMPONENT_COLUMNS)
    edges = [round(0.1 * k, 1) for k in range(11)]
    buckets = ", ".join(f"countIf(score >= {lo} AND score < {hi if hi < 1 else 1.0001}) AS `{hi}`"
                        for lo, hi in zip(edges, edges[1:]))
    return dashboard("kibotos-scores", "Kibotos · Scores", "Final score S, its components and rewards.", [
        tabular("stat", "Scored submissions", f"SELECT count() AS scored FROM {REPORTS} WHERE {SCORED}", w=6, h=4),
        tabular("stat", "Median S", f"SELECT median(score) AS median_s FROM {REPORTS} WHERE {SCORED}",
                w=6, h=4, decimals=3),
        tabular("stat", "Mean reward", f"SELECT avg(reward) AS mean_reward FROM {REPORTS} WHERE {SCORED}",
                w=6, h=4, decimals=2),
        tabular("stat", "Reward paid", f"SELECT sum(reward) AS reward_paid FROM {REPORTS} WHERE {SCORED}",
                w=6, h=4, decimals=0),
        tabular("histogram", "Final score S", f"""
            SELECT assumeNotNull(score) AS S FROM kibotos.verification_reports FINAL WHERE {SCORED}
        """, minimum=0, maximum=1),
        panel("heatmap", "S over time (bucket upper bound)", [sql_target(f"""
            SELECT $__timeInterval(decided_at) AS time, {buckets}
            FROM kibotos.verification_reports FINAL
            WHERE {SCORED}
            GROUP BY time ORDER BY time
        """, "timeseries")]),
        ts("Score components (mean)", f"""
            SELECT $__timeInterval(decided_at) AS time, {mean_components}
            FROM kibotos.verification_reports FINAL
            WHERE {SCORED}
            GROUP BY time ORDER BY time
        """, minimum=0, maximum=1, description="A missing component (no evidence) is left out of its mean."),
        ts("Mean S and reward", f"""
            SELECT $__timeInterval(decided_at) AS time, avg(score) AS S, avg(reward) AS mean_reward
            FROM kibotos.verification_reports FINAL
            WHERE {SCORED}
            GROUP BY time ORDER BY time
        """),
        tabular("histogram", "Reward", f"""
            SELECT reward FROM kibotos.verification_reports FINAL WHERE {SCORED}
        """),
        tabular("bargauge", "Components missing (no evidence)", f"""
            SELECT {missing} FROM kibotos.verification_reports FINAL WHERE {SCORED}
        """, unit="percentunit", minimum=0, maximum=1),
        table("Components per miner (mean)", f"""
            SELECT miner_id, count() AS scored, round(avg(score), 3) AS S, {per_miner}, round(avg(reward), 2) AS mean_reward
            FROM kibotos.verification_reports FINAL
            WHERE {SCORED}
            GROUP BY miner_id ORDER BY S DESC
        """, w=24, h=9),
    ], [MINER_VAR])


NOVELTY = "$__timeFilter(decided_at) AND gate = 'novelty'"
# reason codes and flags of the novelty stage (kibotos/novelty/checker.py)
DUPLICATE = "reason_code = 'duplicate_submission'"
ARTIFACTS = "reason_code = 'synthetic_artifacts'"
NEAR_DUPLICATE = "hasAny(flags, ['same_miner_near_duplicate', 'cross_miner_near_duplicate'])"


def novelty() -> dict:
    return dashboard("kibotos-novelty", "Kibotos · Novelty and duplicates", "The novelty stage and its index.", [
        tabular("stat", "Duplicates rejected", f"""
            SELECT countIf({DUPLICATE}) AS duplicates FROM kibotos.gate_results FINAL WHERE {NOVELTY}
        """, w=5, h=4),
        tabular("stat", "Duplicate rate", f"""
            SELECT countIf({DUPLICATE}) / greatest(count(), 1) AS duplicate_rate
            FROM kibotos.gate_results FINAL WHERE {NOVELTY}
        """, w=5, h=4, unit="percentunit", decimals=1),
        tabular("stat", "Synthetic artifacts rejected", f"""
            SELECT countIf({ARTIFACTS}) AS artifacts FROM kibotos.gate_results FINAL WHERE {NOVELTY}
        """, w=5, h=4),
        tabular("stat", "Mean S_novel", """
            SELECT avg(s_novel) AS mean_s_novel FROM kibotos.verification_reports FINAL
            WHERE $__timeFilter(decided_at) AND s_novel IS NOT NULL
        """, w=4, h=4, decimals=3),
        tabular("stat", "Indexed submissions (all time)", """
            SELECT uniqExact(submission_id) AS indexed FROM kibotos.novelty_index
        """, w=5, h=4),
        panel("timeseries", "Duplicate and near-duplicate rate", [
            sql_target(f"""
                SELECT $__timeInterval(decided_at) AS time,
                       countIf({DUPLICATE}) / count() AS duplicate_rejected,
                       countIf(has(flags, 'same_miner_near_duplicate')) / count() AS same_miner_near_duplicate,
                       countIf(has(flags, 'cross_miner_near_duplicate')) / count() AS cross_miner_near_duplicate
                FROM kibotos.gate_results FINAL
                WHERE {NOVELTY}
                GROUP BY time ORDER BY time
            """, "timeseries", "A"),
            sql_target("""
                SELECT $__timeInterval(decided_at) AS time, countIf(s_novel < 0.5) / count() AS low_s_novel
                FROM kibotos.verification_reports FINAL
                WHERE $__timeFilter(decided_at) AND s_novel IS NOT NULL
                GROUP BY time ORDER BY time
            """, "timeseries", "B"),
        ], unit="percentunit", minimum=0, maximum=1,
            description="Of the submissions the novelty stage checked: rejected as a same-miner duplicate, "
                        "flagged as a near-duplicate (soft: lowers S_novel); and scored with S_novel < 0.5."),
        tabular("histogram", "S_novel distribution", """
            SELECT assumeNotNull(s_novel) AS S_novel FROM kibotos.verification_reports FINAL
            WHERE $__timeFilter(decided_at) AND s_novel IS NOT NULL
        """, minimum=0, maximum=1),
        ts("Novelty index growth", """
            SELECT $__timeInterval(created_at) AS time, uniqExact(submission_id) AS indexed
            FROM kibotos.novelty_index
            WHERE $__timeFilter(created_at)
            GROUP BY time ORDER BY time
        """, bars=True),
        tabular("bargauge", "Novelty flags", f"""
            SELECT arrayJoin(flags) AS flag, count() AS results
            FROM kibotos.gate_results FINAL
            WHERE {NOVELTY}
            GROUP BY flag ORDER BY results DESC LIMIT 20
        """),
        table("Miners by duplicate rate", f"""
            SELECT miner_id, count() AS checked, countIf({DUPLICATE}) AS duplicates,
                   countIf({NEAR_DUPLICATE}) AS near_duplicates, round(duplicates / checked, 4) AS duplicate_rate,
                   round(near_duplicates / checked, 4) AS near_duplicate_rate
            FROM kibotos.gate_results FINAL
            WHERE {NOVELTY}
            GROUP BY miner_id ORDER BY duplicate_rate DESC, near_duplicate_rate DESC, checked DESC LIMIT 100
        """, w=24, h=9),
    ])


EVIDENCE = f"$__timeFilter(decided_at) AND gate IN {EVIDENCE_IN}"


def gpu_jobs() -> dict:
    return dashboard("kibotos-gpu-jobs", "Kibotos · GPU evidence jobs",
                     "Queue depth and throughput of the GPU consumer group (pose, IK, playback, ...).", [
        tabular("stat", "Undecided now", UNDECIDED_NOW, w=6, h=4,
                description="Received without a verdict: mostly waiting for (or running) evidence jobs, "
                            "since the CPU gates take milliseconds."),
        tabular("stat", "Oldest undecided", """
            SELECT if(count() = 0, 0, dateDiff('second', min(received_at), now())) AS oldest_s
            FROM kibotos.submissions FINAL
            WHERE submission_id NOT IN (SELECT submission_id FROM kibotos.verification_reports)
        """, w=6, h=4, unit="s"),
        tabular("stat", "Evidence jobs completed", f"""
            SELECT count() AS jobs FROM kibotos.gate_results FINAL WHERE {EVIDENCE}
        """, w=6, h=4),
        tabular("stat", "Jobs parked for replay", f"""
            SELECT count() AS parked FROM kibotos.dead_letters FINAL
            WHERE $__timeFilter(failed_at) AND error_code IN {PARKED_IN}
        """, w=6, h=4, description="Records that failed their retries for the validator's own reasons "
                                   "(dead.letters; verdict pending)."),
        ts("Verification backlog (received, no verdict yet)", """
            SELECT toDateTime(t) AS time, count() AS undecided
            FROM
            (
                SELECT arrayJoin(range(
                    toUInt32(greatest(intDiv(toUInt32(toDateTime(s.received_at)) + $__interval_s - 1, $__interval_s),
                                      intDiv(toUInt32($__fromTime) + $__interval_s - 1, $__interval_s)) * $__interval_s),
                    toUInt32(least(if(r.submission_id = '', now(), toDateTime(r.decided_at)), $__toTime)),
                    $__interval_s)) AS t
                FROM kibotos.submissions AS s FINAL
                LEFT JOIN (SELECT submission_id, decided_at FROM kibotos.verification_reports FINAL) AS r
                    ON s.submission_id = r.submission_id
                WHERE s.received_at <= $__toTime
            )
            GROUP BY time
            ORDER BY time WITH FILL
                FROM toDateTime(intDiv(toUInt32($__fromTime) + $__interval_s - 1, $__interval_s) * $__interval_s)
                TO $__toTime STEP $__interval_s
        """, description="At each instant: submissions received and not yet decided. The exact per-kind "
                         "queue is the job topics' lag (Prometheus panel)."),
        panel("timeseries", "GPU job queue (Kafka lag of the job topics)", [
            prom_target('sum by (topic) (kibotos_consumer_lag{processor="gpu_jobs"})', "{{topic}}", "A"),
        ]),
        panel("timeseries", "Jobs running on actors", [
            prom_target("sum by (kind) (kibotos_jobs_in_flight)", "{{kind}}", "A"),
        ]),
        ts("Evidence jobs completed per minute", f"""
            SELECT $__timeInterval(decided_at) AS time, gate, count() * 60 / $__interval_s AS jobs_per_min
            FROM kibotos.gate_results FINAL
            WHERE {EVIDENCE}
            GROUP BY time, gate ORDER BY time
        """, description="Counted when the submission's verdict lands."),
        ts("Evidence job wall time p95", f"""
            SELECT $__timeInterval(decided_at) AS time, gate, quantile(0.95)(wall_ms) / 1000 AS p95_s
            FROM kibotos.gate_results FINAL
            WHERE {EVIDENCE} AND wall_ms IS NOT NULL
            GROUP BY time, gate ORDER BY time
        """, unit="s"),
        ts("Evidence failures by reason code", f"""
            SELECT $__timeInterval(decided_at) AS time, ifNull(reason_code, 'unknown') AS reason_code, count() AS failures
            FROM kibotos.gate_results FINAL
            WHERE {EVIDENCE} AND NOT passed
            GROUP BY time, reason_code ORDER BY time
        """, bars=True, stacked=True),
        table("Evidence stages", f"""
            SELECT gate, count() AS jobs, round(countIf(passed) / jobs, 4) AS pass_rate,
                   round(quantile(0.5)(wall_ms) / 1000, 2) AS p50_s, round(quantile(0.95)(wall_ms) / 1000, 2) AS p95_s,
                   round(sum(wall_ms) / 1000 / 3600, 3) AS busy_hours
            FROM kibotos.gate_results FINAL
            WHERE {EVIDENCE}
            GROUP BY gate ORDER BY gate
        """),
    ])


def xgen() -> dict:
    return dashboard("kibotos-xgen", "Kibotos · XGen data factory",
                     "Human demonstrations turned into G1 clips: requests and clips through each stage "
                     "(pose, retarget, interaction, augment, export + quality), refusals by reason code.", [
        tabular("stat", "XGen requests", """
            SELECT count() AS requests FROM kibotos.xgen_requests FINAL WHERE $__timeFilter(requested_at)
        """, w=6, h=4),
        tabular("stat", "Requests refused", """
            SELECT uniqExact(request_id) AS refused FROM kibotos.xgen_stage_results FINAL
            WHERE $__timeFilter(at) AND clip_index = -1 AND NOT passed
        """, w=6, h=4, description="Refused by a request-level stage (xgen.rejected): see the reason codes."),
        tabular("stat", "Clips exported", """
            SELECT count() AS clips FROM kibotos.xgen_clips FINAL WHERE $__timeFilter(created_at)
        """, w=6, h=4),
        tabular("stat", "Clips verified", """
            SELECT countIf(verified) AS verified FROM kibotos.xgen_clips FINAL WHERE $__timeFilter(created_at)
        """, w=6, h=4, description="Passed the verifier's chain as submission bundles: they join datasets."),
        ts("XGen stage results per minute", """
            SELECT $__timeInterval(at) AS time, stage, count() * 60 / $__interval_s AS per_min
            FROM kibotos.xgen_stage_results FINAL
            WHERE $__timeFilter(at)
            GROUP BY time, stage ORDER BY time
        """, description="Requests finishing pose / retarget / interaction / augment, and clips finishing "
                         "export (one per clip)."),
        ts("XGen refusals by stage and reason", """
            SELECT $__timeInterval(at) AS time, concat(stage, ': ', ifNull(reason_code, 'unknown')) AS reason,
                   count() AS refusals
            FROM kibotos.xgen_stage_results FINAL
            WHERE $__timeFilter(at) AND NOT passed
            GROUP BY time, reason ORDER BY time
        """, bars=True, stacked=True),
        table("XGen stages", """
            SELECT stage, count() AS runs, round(countIf(passed) / runs, 4) AS pass_rate,
                   round(quantile(0.5)(wall_ms) / 1000, 2) AS p50_s, round(quantile(0.95)(wall_ms) / 1000, 2) AS p95_s
            FROM kibotos.xgen_stage_results FINAL
            WHERE $__timeFilter(at)
            GROUP BY stage ORDER BY indexOf(['pose', 'retarget', 'interaction', 'augment', 'export'], stage)
        """),
        tabular("piechart", "Clips by quality outcome", """
            SELECT if(verified, 'verified', ifNull(quality_reason_code, quality_verdict)) AS outcome, count() AS clips
            FROM kibotos.xgen_clips FINAL
            WHERE $__timeFilter(created_at)
            GROUP BY outcome ORDER BY clips DESC
        """),
        table("Recent XGen requests", """
            SELECT r.request_id AS request_id, r.uploader AS uploader, r.source_kind AS source_kind,
                   r.requested_at AS requested_at, s.refused_at AS refused_at, s.clip_count AS clip_count,
                   c.exported AS exported, c.verified AS verified
            FROM kibotos.xgen_requests AS r FINAL
            LEFT JOIN
            (
                SELECT request_id, anyIf(concat(stage, ': ', ifNull(reason_code, '')), NOT passed AND clip_index = -1)
                       AS refused_at, max(clip_count) AS clip_count
                FROM kibotos.xgen_stage_results FINAL GROUP BY request_id
            ) AS s ON r.request_id = s.request_id
            LEFT JOIN
            (
                SELECT request_id, count() AS exported, countIf(verified) AS verified
                FROM kibotos.xgen_clips FINAL GROUP BY request_id
            ) AS c ON r.request_id = c.request_id
            WHERE $__timeFilter(r.requested_at)
            ORDER BY r.requested_at DESC LIMIT 50
        """, w=24),
    ])


def datasets() -> dict:
    current = "removed_in_version = 0"  # an episode a later version removed is no longer in its dataset
    return dashboard("kibotos-datasets", "Kibotos · Datasets and attribution",
                     "Published dataset versions (immutable, content-hashed), the episodes they hold, their "
                     "quality, and the attribution points paid to the miners behind them.", [
        tabular("stat", "Datasets", """
            SELECT count() AS datasets FROM kibotos.datasets FINAL
        """, w=6, h=4),
        tabular("stat", "Episodes in datasets", f"""
            SELECT count() AS episodes FROM kibotos.dataset_episodes FINAL WHERE {current}
        """, w=6, h=4, description="Distinct (dataset, episode) pairs in the latest versions."),
        tabular("stat", "Versions published", """
            SELECT count() AS versions FROM kibotos.dataset_versions FINAL WHERE $__timeFilter(created_at)
        """, w=6, h=4),
        tabular("stat", "Attribution points paid", """
            SELECT sum(points) AS points FROM kibotos.attributions FINAL WHERE $__timeFilter(created_at)
        """, w=6, h=4, decimals=1, description="Dataset publications and policies that passed evaluation."),
        ts("Episodes per dataset", """
            SELECT $__timeInterval(created_at) AS time, dataset, max(episodes) AS episodes
            FROM kibotos.dataset_versions FINAL
            WHERE $__timeFilter(created_at)
            GROUP BY time, dataset ORDER BY time
        """, description="The size of each version when it was published."),
        ts("Attribution points per miner", """
            SELECT $__timeInterval(created_at) AS time, miner_id, sum(points) AS points
            FROM kibotos.attributions FINAL
            WHERE $__timeFilter(created_at)
            GROUP BY time, miner_id ORDER BY time
        """, bars=True, stacked=True),
        tabular("bargauge", "Attribution share per miner (all time)", """
            SELECT miner_id, round(sum(points) / (SELECT sum(points) FROM kibotos.attributions FINAL), 4) AS share
            FROM kibotos.attributions FINAL
            GROUP BY miner_id ORDER BY share DESC LIMIT 50
        """, w=8),
        tabular("histogram", "S of dataset episodes", f"""
            SELECT score FROM kibotos.dataset_episodes FINAL WHERE {current} AND score IS NOT NULL
        """, w=8),
        tabular("piechart", "Dataset episodes by robot", f"""
            SELECT ifNull(robot_model_id, 'unknown') AS robot, count() AS episodes
            FROM kibotos.dataset_episodes FINAL WHERE {current}
            GROUP BY robot ORDER BY episodes DESC
        """, w=8),
        table("Dataset versions", """
            SELECT dataset, version, episodes, added, removed, substring(content_hash, 1, 16) AS content_hash,
                   rule_version, round(attribution_points, 3) AS attribution_points, created_at
            FROM kibotos.dataset_versions FINAL
            WHERE $__timeFilter(created_at)
            ORDER BY created_at DESC, dataset LIMIT 100
        """, w=24),
        table("Attribution by kind", """
            SELECT kind, count() AS entries, uniqExact(miner_id) AS miners, round(sum(points), 3) AS points,
                   any(rule_version) AS rule_version
            FROM kibotos.attributions FINAL
            GROUP BY kind ORDER BY kind
        """),
        table("Coverage: episodes per task and robot", f"""
            SELECT ifNull(task_id, '(none)') AS task, ifNull(robot_model_id, '(none)') AS robot,
                   count() AS episodes, round(avg(score), 3) AS mean_s, uniqExact(miner_id) AS miners
            FROM kibotos.dataset_episodes FINAL WHERE {current}
            GROUP BY task, robot ORDER BY episodes DESC
        """),
    ])


# the latest evaluation of each policy (a rerun replaces its rows; a new dataset or config is a new eval id)
LATEST_EVAL = """(policy_id, eval_id) IN (
                SELECT policy_id, argMax(eval_id, created_at) FROM kibotos.policy_evals FINAL GROUP BY policy_id)"""


def training() -> dict:
    return dashboard("kibotos-training", "Kibotos · XMimic training runs",
                     "Teacher and student policies trained from XGen clips (migration 0011): runs by state, "
                     "training SR over the iterations, and each policy's evaluation (SR on the training clips, "
                     "GSR on held-out variants, the open-loop reference).", [
        tabular("stat", "Training runs", """
            SELECT count() AS runs FROM kibotos.training_runs FINAL WHERE $__timeFilter(updated_at)
        """, w=6, h=4),
        tabular("stat", "Runs in progress", """
            SELECT countIf(state IN ('queued', 'running', 'checkpointed')) AS in_progress
            FROM kibotos.training_runs FINAL WHERE $__timeFilter(updated_at)
        """, w=6, h=4),
        tabular("stat", "Policies", """
            SELECT count() AS policies FROM kibotos.policies FINAL WHERE $__timeFilter(created_at)
        """, w=6, h=4),
        tabular("stat", "Policies evaluated", """
            SELECT uniqExact(policy_id) AS evaluated FROM kibotos.policy_evals FINAL WHERE $__timeFilter(created_at)
        """, w=6, h=4),
        tabular("piechart", "Runs by state", """
            SELECT state, count() AS runs FROM kibotos.training_runs FINAL
            WHERE $__timeFilter(updated_at)
            GROUP BY state ORDER BY runs DESC
        """, w=8),
        ts("Training SR per run", """
            SELECT $__timeInterval(at) AS time, run_id, avg(success_rate) AS training_sr
            FROM kibotos.training_progress FINAL
            WHERE $__timeFilter(at) AND success_rate IS NOT NULL
            GROUP BY time, run_id ORDER BY time
        """, w=16, minimum=0, maximum=1,
           description="The success rate of the training episodes that ended in each iteration (DI/DR on), "
                       "as the iterations advance; the evaluation SR below is the clean measure."),
        table("Training SR by iteration", """
            SELECT run_id, iteration, iterations, env_steps, round(success_rate, 3) AS training_sr,
                   round(JSONExtractFloat(reward_terms_json, 'total'), 4) AS reward_total
            FROM kibotos.training_progress FINAL
            WHERE $__timeFilter(at)
            ORDER BY run_id, iteration DESC LIMIT 500
        """, w=12, h=10),
        table("Runs", """
            SELECT run_id, role, task, state, iteration, iterations, env_steps, round(success_rate, 3) AS training_sr,
                   arrayStringConcat(dataset_versions, ', ') AS dataset_versions, policy_id, reason_code, updated_at
            FROM kibotos.training_runs FINAL
            WHERE $__timeFilter(updated_at)
            ORDER BY updated_at DESC LIMIT 100
        """, w=12, h=10),
        tabular("bargauge", "Eval SR per policy (latest evaluation)", f"""
            SELECT policy_id, avgIf(success_rate, split = 'train') AS SR
            FROM kibotos.policy_evals FINAL
            WHERE {LATEST_EVAL}
            GROUP BY policy_id ORDER BY SR DESC, policy_id LIMIT 50
        """, w=8, minimum=0, maximum=1, unit="percentunit"),
        tabular("bargauge", "Eval GSR per policy (latest evaluation)", f"""
            SELECT policy_id, avgIf(success_rate, split = 'heldout') AS GSR
            FROM kibotos.policy_evals FINAL
            WHERE {LATEST_EVAL} AND policy_id IN (SELECT policy_id FROM kibotos.policy_evals WHERE split = 'heldout')
            GROUP BY policy_id ORDER BY GSR DESC, policy_id LIMIT 50
        """, w=8, minimum=0, maximum=1, unit="percentunit"),
        table("Evaluations (latest per policy)", f"""
            SELECT policy_id, any(dataset) AS dataset, round(avgIf(success_rate, split = 'train'), 3) AS SR,
                   round(avgIf(success_rate, split = 'heldout'), 3) AS GSR,
                   round(avgIf(baseline_success_rate, split = 'train'), 3) AS reference_SR,
                   countIf(split = 'train') AS train_clips, countIf(split = 'heldout') AS heldout_clips,
                   round(avg(tracking_error_m) * 100, 2) AS hand_box_error_cm, any(config_version) AS config_version,
                   max(created_at) AS evaluated_at
            FROM kibotos.policy_evals FINAL
            WHERE {LATEST_EVAL}
            GROUP BY policy_id ORDER BY evaluated_at DESC LIMIT 100
        """, w=8, h=8),
    ])


DASHBOARDS = {"overview": overview, "rejections": rejections, "gate-latency": gate_latency, "miners": miners,
              "scores": scores, "novelty": novelty, "gpu-jobs": gpu_jobs, "xgen": xgen,
              "datasets": datasets, "training": training}


def render() -> dict[str, str]:
    """``{file name: JSON text}`` of every dashboard."""
    return {f"kibotos-{name}.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
            for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if dashboards/json/ is not up to date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = JSON_DIR / name
        if not path.is_file() or path.read_text() != text:
            stale.append(name)
            if not args.check:
                JSON_DIR.mkdir(exist_ok=True)
                path.write_text(text)
    if args.check and stale:
        print(f"stale: {', '.join(stale)} (run python -m dashboards.build)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
