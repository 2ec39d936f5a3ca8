"""A verification report as one self-contained HTML page.

``render_report_html(report, store)`` takes a report dict as stored
(``kibotos.warehouse.get_report``: the ``VerificationReport`` fields, plus ``scores``,
``decided_at`` and ``bundle_uri`` when present) and returns a page with everything
inline — CSS in a ``<style>``, the sync plot as SVG, keyframe images as ``data:`` URIs —
so it can be mailed, archived or opened offline. A Content-Security-Policy forbids any
network fetch. Sections:

* the verdict (header colour: green accepted, red rejected), reason code and failing gate;
* every gate: passed or not, reason code, wall time, flags, and its metrics next to the
  thresholds they are judged against (``max_x`` / ``x_max`` bounds ``x``, ``min_x`` /
  ``x_min`` likewise, also ``x_<suffix>`` and ``<prefix>_x`` metrics);
* sync: claimed vs estimated offset on one axis, the tolerance band around the estimate,
  and the confidence against the level above which a disagreement rejects (gate C);
* score components, S and the reward, when the report was scored;
* the playback keyframes: real and simulated frame side by side, read from the object
  store (``gpu_consumers.playback`` stores the PNG pairs and their URIs in the metrics of
  gate ``playback``). An image that cannot be read is named, never a failure of the page.

Every string from the report is HTML-escaped: reason codes, metrics and error messages
can carry text a miner controlled.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable
from typing import Any

from gpu_consumers.registry import EVIDENCE_GATES

VERDICT_COLOURS = {"accepted": "#1b7f3b", "rejected": "#b3261e"}
OTHER_COLOUR = "#5f6368"
MAX_KEYFRAMES = 24
MAX_IMAGE_BYTES = 4 << 20
SYNC_GATE = "gate_c_sync"
PLAYBACK_GATE = EVIDENCE_GATES["playback"]
_IMAGE_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))

CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#202124;background:#f6f7f9}
header{padding:22px 32px;color:#fff}
header h1{margin:0;font-size:34px;letter-spacing:.06em;text-transform:uppercase}
header .sub{opacity:.92;font-size:15px;margin-top:4px;word-break:break-all}
main{padding:8px 32px 32px}
section{background:#fff;border:1px solid #dadce0;border-radius:8px;margin:16px 0;padding:16px 20px}
h2{font-size:17px;margin:0 0 12px}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:0}
dl.kv dt{color:#5f6368}dl.kv dd{margin:0;word-break:break-all}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eceff1;vertical-align:top}
th{font-weight:600;color:#5f6368;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
tr.gate>td{border-top:2px solid #dadce0;font-weight:600}
tr.fail>td{background:#fce8e6}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;min-width:64px;text-align:center;border-radius:12px;padding:1px 10px;color:#fff;font-size:12px}
.ok{background:#1b7f3b}.ko{background:#b3261e}.na{background:#9aa0a6}
.within{color:#1b7f3b}.beyond{color:#b3261e;font-weight:600}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.muted{color:#5f6368}
.bar{height:10px;background:#e8eaed;border-radius:5px;min-width:120px}
.bar>span{display:block;height:10px;border-radius:5px;background:#1a73e8}
.frames{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:14px}
figure{margin:0;border:1px solid #dadce0;border-radius:6px;padding:8px;background:#fafafa}
figure .pair{display:grid;grid-template-columns:1fr 1fr;gap:6px}
figure img{width:100%;height:auto;display:block;image-rendering:pixelated;background:#000}
figure .missing{display:flex;align-items:center;justify-content:center;min-height:120px;background:#eceff1;
  color:#5f6368;font-size:12px;text-align:center;padding:8px}
figcaption{font-size:12px;color:#5f6368;margin-top:6px}
.score{font-size:28px;font-weight:700}
footer{color:#5f6368;font-size:12px;padding:0 32px 24px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def fmt(value: Any, limit: int = 160) -> str:
    """A metric value as short text: numbers to 4 significant digits, structures as JSON."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- metrics vs thresholds ---------------------------------------------------------------

def _bound(key: str) -> tuple[str, str] | None:
    """``("max", base)`` for ``max_base`` / ``base_max``, ``("min", base)`` likewise."""
    for kind in ("max", "min"):
        if key.startswith(kind + "_"):
            return kind, key[len(kind) + 1:]
        if key.endswith("_" + kind):
            return kind, key[: -len(kind) - 1]
    return None


def _matches(metric: str, base: str) -> bool:
    return metric == base or metric.startswith(base + "_") or metric.endswith("_" + base)


def pair_thresholds(metrics: dict[str, Any], thresholds: dict[str, Any]) -> tuple[dict[str, list], dict[str, Any]]:
    """``({metric: [(kind, threshold key, threshold value), ...]}, {unpaired threshold: value})``."""
    paired: dict[str, list] = {}
    unpaired = {}
    for key, limit in thresholds.items():
        bound = _bound(key)
        hits = [m for m in metrics if _matches(m, bound[1])] if bound and _number(limit) is not None else []
        for m in hits:
            paired.setdefault(m, []).append((bound[0] if bound else "", key, limit))
        if not hits:
            unpaired[key] = limit
    return paired, unpaired


def _judged(value: Any, bounds: list) -> tuple[str, str]:
    """(threshold text, css class) of a metric against its bounds."""
    parts, verdicts = [], []
    v = _number(value)
    for kind, key, limit in bounds:
        parts.append(f"{'≤' if kind == 'max' else '≥'} {fmt(limit)} <span class='muted mono'>{_e(key)}</span>")
        if v is not None:
            verdicts.append(v <= limit if kind == "max" else v >= limit)
    css = "" if not verdicts else ("within" if all(verdicts) else "beyond")
    return "<br>".join(parts), css


def _gate_rows(gate: dict[str, Any]) -> str:
    metrics = {k: v for k, v in (gate.get("metrics") or {}).items() if k != "wall_ms"}
    thresholds = gate.get("thresholds") or {}
    passed = bool(gate.get("passed"))
    wall = _number((gate.get("metrics") or {}).get("wall_ms"))
    flags = ", ".join(str(f) for f in gate.get("flags") or [])
    rows = [
        f"<tr class='gate{'' if passed else ' fail'}'><td><span class='badge {'ok' if passed else 'ko'}'>"
        f"{'passed' if passed else 'failed'}</span></td><td class='mono'>{_e(gate.get('gate'))}</td>"
        f"<td class='mono'>{_e(gate.get('reason_code') or '')}</td>"
        f"<td class='num'>{'' if wall is None else f'{wall:.1f} ms'}</td>"
        f"<td class='muted'>{_e(flags)}</td></tr>"
    ]
    paired, unpaired = pair_thresholds(metrics, thresholds)
    for name, value in metrics.items():
        if gate.get("gate") == PLAYBACK_GATE and name == "keyframes":
            value = f"{len(value)} keyframes (below)" if isinstance(value, list) else value
        limit, css = _judged(value, paired.get(name, []))
        rows.append(f"<tr><td></td><td class='mono'>{_e(name)}</td><td class='num {css}'>{_e(fmt(value))}</td>"
                    f"<td class='num' colspan='2'>{limit}</td></tr>")
    if unpaired:
        text = ", ".join(f"{k} = {fmt(v, 60)}" for k, v in unpaired.items())
        rows.append(f"<tr><td></td><td class='muted' colspan='4'>other thresholds: <span class='mono'>"
                    f"{_e(text)}</span></td></tr>")
    return "".join(rows)


def _gates_section(gates: list[dict[str, Any]]) -> str:
    if not gates:
        return "<section><h2>Gates</h2><p class='muted'>no gate results</p></section>"
    body = "".join(_gate_rows(g) for g in gates)
    return ("<section id='gates'><h2>Gates</h2><table><thead><tr><th>result</th><th>gate · metric</th>"
            "<th>reason · value</th><th colspan='2'>wall time · threshold</th></tr></thead>"
            f"<tbody>{body}</tbody></table></section>")


# --- sync plot ---------------------------------------------------------------------------

def _gate(report: dict[str, Any], gate_id: str) -> dict[str, Any] | None:
    return next((g for g in report.get("gates") or [] if g.get("gate") == gate_id), None)


def sync_svg(claimed: float | None, estimated: float | None, confidence: float | None,
             tolerance_ms: float = 250.0, high_confidence: float = 0.5, max_lag_ms: float = 2000.0) -> str:
    """Claimed vs estimated offset on one axis (with the tolerance band around the
    estimate) and the estimate's confidence as a bar; inline SVG."""
    w, h, left, right = 900, 210, 40, 40
    points = [x for x in (claimed, estimated) if x is not None]
    half = max([max_lag_ms] + [abs(x) + tolerance_ms + 100 for x in points])
    step = 10 ** math.floor(math.log10(half)) if half > 0 else 1
    step = step * (5 if half / step > 6 else 2 if half / step > 3 else 1) / 2
    half = math.ceil(half / step) * step

    def x(ms: float) -> float:
        return left + (ms + half) / (2 * half) * (w - left - right)

    axis_y = 70
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='100%' style='max-width:{w}px' viewBox='0 0 {w} {h}' "
           f"role='img' aria-label='sync offsets'><title>claimed vs estimated sync offset</title>"
           f"<style>text{{font:12px system-ui,sans-serif;fill:#202124}}.t{{fill:#5f6368}}</style>"]
    confident = confidence is not None and confidence >= high_confidence
    if estimated is not None:
        x0, x1 = x(estimated - tolerance_ms), x(estimated + tolerance_ms)
        out.append(f"<rect x='{x0:.1f}' y='{axis_y - 30}' width='{x1 - x0:.1f}' height='60' rx='4' "
                   f"fill='{'#1b7f3b' if confident else '#9aa0a6'}' fill-opacity='0.16'/>"
                   f"<text class='t' x='{(x0 + x1) / 2:.1f}' y='{axis_y - 36}' text-anchor='middle'>"
                   f"estimate ± {fmt(tolerance_ms)} ms</text>")
    out.append(f"<line x1='{left}' y1='{axis_y}' x2='{w - right}' y2='{axis_y}' stroke='#5f6368'/>")
    tick = -half
    while tick <= half + 1e-9:
        out.append(f"<line x1='{x(tick):.1f}' y1='{axis_y - 4}' x2='{x(tick):.1f}' y2='{axis_y + 4}' stroke='#5f6368'/>"
                   f"<text class='t' x='{x(tick):.1f}' y='{axis_y + 20}' text-anchor='middle'>{tick:g}</text>")
        tick += step
    out.append(f"<text class='t' x='{w - right}' y='{axis_y + 36}' text-anchor='end'>offset (ms): "
               f"t_video = t_kin + offset</text>")
    if claimed is not None and estimated is not None:
        out.append(f"<line x1='{x(claimed):.1f}' y1='{axis_y - 12}' x2='{x(estimated):.1f}' y2='{axis_y - 12}' "
                   f"stroke='#202124' stroke-dasharray='3 3'/>"
                   f"<text x='{(x(claimed) + x(estimated)) / 2:.1f}' y='{axis_y - 16}' text-anchor='middle'>"
                   f"Δ {abs(claimed - estimated):.0f} ms</text>")
    if estimated is not None:
        out.append(f"<circle cx='{x(estimated):.1f}' cy='{axis_y}' r='7' fill='#1a73e8'><title>estimated "
                   f"{estimated:g} ms</title></circle>")
    if claimed is not None:
        cx = x(claimed)
        out.append(f"<polygon points='{cx:.1f},{axis_y - 9} {cx + 9:.1f},{axis_y} {cx:.1f},{axis_y + 9} "
                   f"{cx - 9:.1f},{axis_y}' fill='#e37400'><title>claimed {claimed:g} ms</title></polygon>")
    legend_y = 128
    out.append(f"<polygon points='{left + 6},{legend_y - 6} {left + 12},{legend_y} {left + 6},{legend_y + 6} "
               f"{left},{legend_y}' fill='#e37400'/><text x='{left + 18}' y='{legend_y + 4}'>claimed "
               f"{'–' if claimed is None else f'{claimed:g} ms'}</text>"
               f"<circle cx='{left + 186}' cy='{legend_y}' r='6' fill='#1a73e8'/><text x='{left + 198}' "
               f"y='{legend_y + 4}'>estimated {'–' if estimated is None else f'{estimated:g} ms'}</text>")
    bar_y, bar_x, bar_w = 160, left + 90, 300
    out.append(f"<text x='{left}' y='{bar_y + 10}'>confidence</text>"
               f"<rect x='{bar_x}' y='{bar_y}' width='{bar_w}' height='12' rx='6' fill='#e8eaed'/>")
    if confidence is not None:
        c = min(max(confidence, 0.0), 1.0)
        out.append(f"<rect x='{bar_x}' y='{bar_y}' width='{bar_w * c:.1f}' height='12' rx='6' "
                   f"fill='{'#1b7f3b' if confident else '#9aa0a6'}'/>")
    hx = bar_x + bar_w * min(max(high_confidence, 0.0), 1.0)
    note = ("no estimate" if confidence is None else
            "confident: a disagreement beyond the band rejects" if confident else
            "low: the claim is not contradicted")
    out.append(f"<line x1='{hx:.1f}' y1='{bar_y - 4}' x2='{hx:.1f}' y2='{bar_y + 16}' stroke='#202124'/>"
               f"<text x='{bar_x + bar_w + 10}' y='{bar_y + 10}'>{'–' if confidence is None else f'{confidence:.2f}'}"
               f" (threshold {high_confidence:g})</text>"
               f"<text class='t' x='{bar_x}' y='{bar_y + 34}'>{_e(note)}</text></svg>")
    return "".join(out)


def _sync_section(report: dict[str, Any]) -> str:
    sync = dict(report.get("sync") or {})
    gate_c = _gate(report, SYNC_GATE) or {}
    metrics, thresholds = gate_c.get("metrics") or {}, gate_c.get("thresholds") or {}
    for key in ("claimed_offset_ms", "estimated_offset_ms", "sync_confidence"):
        if sync.get(key) is None:
            sync[key] = metrics.get(key)
    claimed, estimated, confidence = (_number(sync.get(k)) for k in
                                      ("claimed_offset_ms", "estimated_offset_ms", "sync_confidence"))
    if claimed is None and estimated is None:
        return "<section id='sync'><h2>Sync</h2><p class='muted'>no sync estimate in this report</p></section>"
    svg = sync_svg(claimed, estimated, confidence,
                   tolerance_ms=_number(thresholds.get("max_sync_disagreement_ms")) or 250.0,
                   high_confidence=_number(thresholds.get("high_confidence")) or 0.5,
                   max_lag_ms=_number(thresholds.get("max_lag_ms")) or 2000.0)
    return f"<section id='sync'><h2>Sync</h2>{svg}</section>"


# --- scores ------------------------------------------------------------------------------

def score_components(scores: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{name, value, weight, note}]`` from either shape a report may carry:
    ``components`` as ``{name: {value, weight, ...} | number}`` or as a list of
    ``{name, value, inputs, missing}`` with ``weights_used`` beside it."""
    comps = scores.get("components") or {}
    weights = scores.get("weights_used") or scores.get("weights") or {}
    items: Iterable[tuple[Any, Any]]  # a malformed list may hold components without a name
    if isinstance(comps, dict):
        items = comps.items()
    else:
        items = ((c.get("name"), c) for c in comps if isinstance(c, dict))
    out = []
    for name, c in items:
        c = c if isinstance(c, dict) else {"value": c}
        inputs = c["inputs"] if isinstance(c.get("inputs"), dict) else {}
        note = c.get("missing") if isinstance(c.get("missing"), str) else inputs.get("missing")
        out.append({"name": str(name), "value": _number(c.get("value")),
                    "weight": _number(c.get("weight", weights.get(name))), "note": note})
    return out


def _scores_section(report: dict[str, Any]) -> str:
    scores = report.get("scores")
    if not isinstance(scores, dict):
        return ""
    s = _number(scores.get("S", scores.get("score")))
    reward = _number(scores.get("reward"))
    rows = []
    for c in score_components(scores):
        v, wgt = c["value"], c["weight"]
        bar = (f"<div class='bar'><span style='width:{100 * min(max(v, 0), 1):.1f}%'></span></div>"
               if v is not None else "")
        rows.append(f"<tr><td class='mono'>S_{_e(c['name'])}</td><td class='num'>{fmt(v)}</td><td>{bar}</td>"
                    f"<td class='num'>{fmt(wgt)}</td><td class='muted'>{_e(c['note'] or '')}</td></tr>")
    extra = " · ".join(f"{label} {fmt(_number(scores.get(key)))}" for key, label in
                       (("curve", "f(S)"), ("angle_multiplier", "angle multiplier")) if scores.get(key) is not None)
    return ("<section id='scores'><h2>Score</h2>"
            f"<p><span class='score'>S = {fmt(s)}</span> &nbsp; reward <b>{fmt(reward)}</b>"
            f"{' · ' + _e(extra) if extra else ''} <span class='muted'>"
            f"({_e(scores.get('config_version') or 'scoring config unknown')})</span></p>"
            "<table><thead><tr><th>component</th><th>value</th><th></th><th>weight</th><th>note</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></section>")


# --- keyframes ---------------------------------------------------------------------------

def data_uri(store, uri: str | None, max_bytes: int = MAX_IMAGE_BYTES) -> tuple[str | None, str | None]:
    """``(data: URI, None)`` for a PNG/JPEG in the object store, else ``(None, why)``."""
    if not uri:
        return None, "no frame stored"
    if store is None:
        return None, "no object store configured"
    try:
        data = store.read_bytes(uri, max_bytes)
    except Exception as exc:  # a missing or unreadable artifact is shown, never raised
        return None, f"not readable: {getattr(exc, 'reason_code', type(exc).__name__)}"
    mime = next((m for magic, m in _IMAGE_TYPES if data.startswith(magic)), None)
    if mime is None:
        return None, "not a PNG or JPEG image"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}", None


def _image(store, uri: str | None, label: str) -> str:
    src, why = data_uri(store, uri)
    if src is None:
        return f"<div class='missing'>{_e(label)}: {_e(why)}<br><span class='mono'>{_e(uri or '')}</span></div>"
    return f"<img src='{src}' alt='{_e(label)}' title='{_e(uri)}'>"


def _keyframes_section(report: dict[str, Any], store, limit: int) -> str:
    gate = _gate(report, PLAYBACK_GATE)
    frames = ((gate or {}).get("metrics") or {}).get("keyframes")
    if not isinstance(frames, list) or not frames:
        return ""
    figures = []
    for kf in frames[:limit]:
        if not isinstance(kf, dict):
            continue
        caption = " · ".join(part for part in (
            f"frame {fmt(kf.get('frame'))}", str(kf.get("strategy") or ""),
            f"t_kin {fmt(_number(kf.get('kin_time_ms')))} ms",
            f"silhouette IoU {fmt(_number(kf.get('silhouette_iou')))}") if part)
        figures.append(f"<figure><div class='pair'>{_image(store, kf.get('real_uri'), 'real')}"
                       f"{_image(store, kf.get('sim_uri'), 'simulated')}</div>"
                       f"<figcaption>real | simulated — {_e(caption)}</figcaption></figure>")
    more = f"<p class='muted'>{len(frames) - limit} more keyframes not shown</p>" if len(frames) > limit else ""
    return (f"<section id='keyframes'><h2>Playback keyframes</h2><div class='frames'>{''.join(figures)}</div>"
            f"{more}</section>")


# --- page --------------------------------------------------------------------------------

def render_report_html(report: dict[str, Any], store=None, *, max_keyframes: int = MAX_KEYFRAMES) -> str:
    """The report as a self-contained HTML page.

    :param report: a stored report (``kibotos.warehouse.get_report``).
    :param store: object store (``kibotos.objectstore``) the keyframe images are read
        from; ``None`` renders the page with the images named but not embedded.
    :param max_keyframes: most keyframe pairs embedded (each image at most 4 MiB).
    """
    verdict = str(report.get("verdict") or "unknown")
    colour = VERDICT_COLOURS.get(verdict, OTHER_COLOUR)
    sid = report.get("submission_id") or "?"
    reason = ""
    if report.get("reason_code"):
        reason = f" — <span class='mono'>{_e(report['reason_code'])}</span> at {_e(report.get('failed_gate') or '?')}"
    robot = "@".join(str(x) for x in (report.get("robot_model_id"), report.get("robot_model_revision")) if x)
    facts = [("submission", sid), ("miner", report.get("miner_id")), ("robot", robot or None),
             ("decided at", report.get("decided_at")), ("gate config", report.get("config_version")),
             ("points", fmt(_number(report.get("points")))), ("bundle", report.get("bundle_uri"))]
    summary = "".join(f"<dt>{_e(k)}</dt><dd class='mono'>{_e(v if v is not None else '–')}</dd>" for k, v in facts)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(verdict)} · {_e(sid)} · Kibotos report</title><style>{CSS}</style></head><body>"
        f"<header class='verdict {_e(verdict)}' style='background:{colour}'><h1>{_e(verdict)}</h1>"
        f"<div class='sub'>{_e(sid)}{reason}</div></header><main>"
        f"<section id='summary'><h2>Submission</h2><dl class='kv'>{summary}</dl></section>"
        f"{_scores_section(report)}{_gates_section(list(report.get('gates') or []))}{_sync_section(report)}"
        f"{_keyframes_section(report, store, max_keyframes)}</main>"
        "<footer>Kibotos verification report · self-contained page: every image is embedded</footer>"
        "</body></html>"
    )
