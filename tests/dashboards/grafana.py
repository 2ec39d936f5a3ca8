"""What the dashboard tests need of Grafana: a model of the dashboard JSON fields Grafana
reads, and the query interpolation Grafana + the ClickHouse plugin do before a query
reaches ClickHouse.

Interpolation happens in two steps, as in Grafana:

1. **Template variables** (Grafana's front end): ``${name:singlequote}`` /
   ``${name:sqlstring}`` -> ``'v1','v2'`` (quotes escaped with a backslash resp. doubled),
   ``${name:csv}`` -> ``v1,v2``, and ``${name}`` / ``$name`` / ``[[name]]`` -> the value
   (a single value only: a multi-value variable without a format is an error here,
   because Grafana's default would not produce valid SQL). Unknown variables are errors.
2. **Plugin macros** (``grafana-clickhouse-datasource`` v4 backend, ``pkg/macros``),
   with the panel's time range ``[from, to]`` and interval:

   ==========================  ===================================================================
   ``$__timeFilter(c)``        ``c >= toDateTime(<from s>) AND c <= toDateTime(<to s>)``
   ``$__timeFilter_ms(c)``     ``c >= fromUnixTimestamp64Milli(<from ms>) AND c <= ...(<to ms>)``
   ``$__dateFilter(c)``        ``c >= toDate('<from>') AND c <= toDate('<to>')``
   ``$__fromTime``             ``toDateTime(<from s>)``; ``$__toTime`` likewise
   ``$__fromTime_ms``          ``fromUnixTimestamp64Milli(<from ms>)``; ``$__toTime_ms`` likewise
   ``$__timeInterval(c)``      ``toStartOfInterval(toDateTime(c), INTERVAL <interval s> second)``
   ``$__timeInterval_ms(c)``   ``toStartOfInterval(toDateTime64(c, 3), INTERVAL <ms> millisecond)``
   ``$__interval_s``           ``<interval s>`` (at least 1)
   ==========================  ===================================================================

   Macro arguments may hold nested parentheses; any other ``$__name`` is an error.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PANEL_TYPES = ("timeseries", "stat", "piechart", "bargauge", "table", "histogram", "heatmap", "gauge", "text", "row")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")  # Grafana keeps many more fields; these are the ones it needs


class DatasourceRef(_Model):
    type: str
    uid: str


class GridPos(_Model):
    h: int = Field(ge=1)
    w: int = Field(ge=1, le=24)
    x: int = Field(ge=0, le=23)
    y: int = Field(ge=0)

    @model_validator(mode="after")
    def _inside(self) -> "GridPos":
        if self.x + self.w > 24:
            raise ValueError(f"panel overflows the 24-column grid: x={self.x} w={self.w}")
        return self


class Target(_Model):
    refId: str = Field(min_length=1)
    datasource: DatasourceRef
    rawSql: str | None = None  # ClickHouse
    expr: str | None = None  # Prometheus
    format: int | None = None
    queryType: str | None = None
    editorType: str | None = None

    @model_validator(mode="after")
    def _one_query(self) -> "Target":
        if bool(self.rawSql) == bool(self.expr):
            raise ValueError(f"target {self.refId}: exactly one of rawSql (ClickHouse) or expr (Prometheus)")
        if self.rawSql is not None:
            if self.editorType != "sql":
                raise ValueError(f"target {self.refId}: raw SQL needs editorType 'sql'")
            expected = {"timeseries": 0, "table": 1}.get(self.queryType or "")
            if expected is None or self.format != expected:
                raise ValueError(f"target {self.refId}: queryType {self.queryType!r} with format {self.format!r}")
        return self


class Panel(_Model):
    id: int = Field(ge=1)
    type: Literal[PANEL_TYPES]  # type: ignore[valid-type]
    title: str = Field(min_length=1)
    gridPos: GridPos
    datasource: DatasourceRef
    targets: list[Target] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_refs(self) -> "Panel":
        refs = [t.refId for t in self.targets]
        if len(refs) != len(set(refs)):
            raise ValueError(f"panel {self.title!r}: duplicate refIds {refs}")
        return self


class Variable(_Model):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: Literal["query", "custom", "constant", "interval", "textbox", "datasource"]
    datasource: DatasourceRef | None = None
    query: str | dict[str, Any]
    multi: bool = False
    includeAll: bool = False


class Templating(_Model):
    variables: list[Variable] = Field(default_factory=list, alias="list")


class TimeRange(_Model):
    from_: str = Field(alias="from")
    to: str


class Dashboard(_Model):
    uid: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")  # Grafana's uid limit
    title: str = Field(min_length=1)
    schemaVersion: int = Field(ge=36)
    panels: list[Panel] = Field(min_length=1)
    templating: Templating
    time: TimeRange
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _layout(self) -> "Dashboard":
        for what in ("id", "title"):
            values = [getattr(p, what) for p in self.panels]
            if len(values) != len(set(values)):
                raise ValueError(f"duplicate panel {what}s {values}")
        cells: dict[tuple[int, int], str] = {}
        for p in self.panels:
            g = p.gridPos
            for x in range(g.x, g.x + g.w):
                for y in range(g.y, g.y + g.h):
                    if (x, y) in cells:
                        raise ValueError(f"panels {cells[(x, y)]!r} and {p.title!r} overlap")
                    cells[(x, y)] = p.title
        names = [v.name for v in self.templating.variables]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate variables {names}")
        return self


# --- interpolation ----------------------------------------------------------------------

@dataclass(frozen=True)
class QueryContext:
    """A panel's time range, interval and variable values (lists: every variable may be multi)."""

    time_from: dt.datetime
    time_to: dt.datetime
    interval_s: int = 60
    variables: dict[str, list[str]] = field(default_factory=dict)
    multi: frozenset[str] = frozenset()


class InterpolationError(ValueError):
    pass


_VAR = re.compile(r"\$\{(?P<braced>\w+)(?::(?P<fmt>\w+))?\}|\[\[(?P<old>\w+)\]\]|\$(?P<bare>[A-Za-z_]\w*)")
_MACRO = re.compile(r"\$__(\w+)")


def variable_names(sql: str) -> set[str]:
    """Template variables referenced in ``sql`` (macros and Grafana globals ``$__*`` left out)."""
    names = set()
    for m in _VAR.finditer(sql):
        name = m.group("braced") or m.group("old") or m.group("bare")
        if not name.startswith("__"):
            names.add(name)
    return names


def interpolate_variables(sql: str, ctx: QueryContext) -> str:
    def one(m: re.Match) -> str:
        name = m.group("braced") or m.group("old") or m.group("bare")
        if name.startswith("__"):
            return m.group(0)  # a macro: step 2
        if name not in ctx.variables:
            raise InterpolationError(f"unknown variable ${name}")
        values, fmt = ctx.variables[name], m.group("fmt")
        if fmt in ("singlequote", "sqlstring"):
            quote = (lambda v: v.replace("'", "\\'")) if fmt == "singlequote" else (lambda v: v.replace("'", "''"))
            return ",".join(f"'{quote(v)}'" for v in values)
        if fmt == "csv":
            return ",".join(values)
        if fmt not in (None, "raw"):
            raise InterpolationError(f"unsupported variable format {fmt!r}")
        if name in ctx.multi:
            raise InterpolationError(f"multi-value ${name} needs a format such as ${{{name}:singlequote}}")
        return values[0]

    return _VAR.sub(one, sql)


def _args(sql: str, start: int) -> tuple[list[str], int]:
    """Comma-separated arguments of the parenthesis opening at ``start``; returns the end."""
    depth, args, current, i = 0, [], [], start
    while i < len(sql):
        ch = sql[i]
        if ch == "(":
            depth += 1
            if depth > 1:
                current.append(ch)
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(current).strip())
                return args, i + 1
            current.append(ch)
        elif ch == "," and depth == 1:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    raise InterpolationError("unbalanced parentheses in a macro call")


def expand_macros(sql: str, ctx: QueryContext) -> str:
    f_s, t_s = int(ctx.time_from.timestamp()), int(ctx.time_to.timestamp())
    f_ms, t_ms = int(ctx.time_from.timestamp() * 1000), int(ctx.time_to.timestamp() * 1000)
    interval = max(int(ctx.interval_s), 1)
    no_args = {
        "fromTime": f"toDateTime({f_s})", "toTime": f"toDateTime({t_s})",
        "fromTime_ms": f"fromUnixTimestamp64Milli({f_ms})", "toTime_ms": f"fromUnixTimestamp64Milli({t_ms})",
        "interval_s": str(interval),
    }
    one_arg = {
        "timeFilter": lambda c: f"{c} >= toDateTime({f_s}) AND {c} <= toDateTime({t_s})",
        "timeFilter_ms": lambda c: f"{c} >= fromUnixTimestamp64Milli({f_ms}) AND {c} <= fromUnixTimestamp64Milli({t_ms})",
        "dateFilter": lambda c: (f"{c} >= toDate('{ctx.time_from:%Y-%m-%d}') AND "
                                 f"{c} <= toDate('{ctx.time_to:%Y-%m-%d}')"),
        "timeInterval": lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {interval} second)",
        "timeInterval_ms": lambda c: f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {interval * 1000} millisecond)",
    }
    out, pos = [], 0
    while (m := _MACRO.search(sql, pos)) is not None:
        out.append(sql[pos:m.start()])
        name = m.group(1)
        if name in one_arg:
            if m.end() >= len(sql) or sql[m.end()] != "(":
                raise InterpolationError(f"$__{name} needs one argument")
            args, end = _args(sql, m.end())
            if len(args) != 1 or not args[0]:
                raise InterpolationError(f"$__{name} takes one argument, got {args}")
            out.append(one_arg[name](expand_macros(args[0], ctx)))
            pos = end
        elif name in no_args:
            out.append(no_args[name])
            pos = m.end()
        else:
            raise InterpolationError(f"unknown macro $__{name}")
    out.append(sql[pos:])
    return "".join(out)


def render_sql(sql: str, ctx: QueryContext) -> str:
    """``sql`` as ClickHouse receives it from Grafana for ``ctx``."""
    return expand_macros(interpolate_variables(sql, ctx), ctx)
