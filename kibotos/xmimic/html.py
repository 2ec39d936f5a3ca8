"""A policy's evaluation page: one self-contained HTML document like the report and
dataset pages (same CSS, every string escaped, nothing fetched; a rollout preview is
inlined as a ``data:`` video).

Sections: metric cards (SR, GSR, the open-loop reference's SR, the pass verdict under the
current rule, iterations, env-steps), SR/GSR per clip (each row beside the reference on
the same clip), training curves as inline SVG (training SR and every reward term over the
iterations, from ``training_progress``), the dataset versions it trained on (links to
their dataset pages), the checkpoint download link and earlier evaluations.
"""

from __future__ import annotations

import base64
import math
from typing import Any
from urllib.parse import quote

from kibotos.datasets.html import EXTRA_CSS
from kibotos.reports.html import CSS, _e

HEADER_COLOUR = "#0b8043"  # not the dataset page's blue nor the report's verdict colours
CURVE_COLOUR = "#c5221f"
POLICY_CSS = """
.curves{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.curves figure{background:#fff}
video{max-width:100%;border:1px solid #dadce0;border-radius:6px;background:#000}
"""


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return fmt.format(v)


def curve_svg(name: str, xs: list[float], ys: list[float | None], width: int = 300, height: int = 150) -> str:
    """A line of ``ys`` over ``xs`` (points with no value are skipped); the polyline
    carries ``data-points`` (how many were drawn) for the tests."""
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None and not (isinstance(y, float) and math.isnan(y))]
    pad_l, pad_r, pad_t, pad_b = 40, 8, 10, 22
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
             f"aria-label='{_e(name)}' id='curve-{_e(name)}' class='curve'>",
             f"<line x1='{pad_l}' y1='{height - pad_b}' x2='{width - pad_r}' y2='{height - pad_b}' stroke='#5f6368'/>",
             f"<line x1='{pad_l}' y1='{pad_t}' x2='{pad_l}' y2='{height - pad_b}' stroke='#5f6368'/>"]
    if pts:
        x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
        y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
        if y1 - y0 < 1e-12:
            y0, y1 = y0 - 0.5, y1 + 0.5
        sx = (width - pad_l - pad_r) / max(x1 - x0, 1)
        sy = (height - pad_t - pad_b) / (y1 - y0)
        coords = " ".join(f"{pad_l + (x - x0) * sx:.1f},{height - pad_b - (y - y0) * sy:.1f}" for x, y in pts)
        parts.append(f"<polyline data-points='{len(pts)}' points='{coords}' fill='none' stroke='{CURVE_COLOUR}' "
                     "stroke-width='2'/>")
        for val, y in ((y1, pad_t + 8), (y0, height - pad_b)):
            parts.append(f"<text x='{pad_l - 4}' y='{y}' font-size='10' text-anchor='end' fill='#5f6368'>"
                         f"{val:.3g}</text>")
        parts.append(f"<text x='{width - pad_r}' y='{height - 6}' font-size='10' text-anchor='end' fill='#5f6368'>"
                     f"iteration {x1:g}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _curves(progress: list[dict]) -> str:
    if not progress:
        return "<p class='muted'>no training progress recorded for this policy's run</p>"
    xs = [p["iteration"] for p in progress]
    figs = [("success_rate", [p.get("success_rate") for p in progress])]
    terms = sorted({k for p in progress for k in (p.get("reward_terms") or {})}, key=lambda k: (k != "total", k))
    figs += [(t, [(p.get("reward_terms") or {}).get(t) for p in progress]) for t in terms]
    return "<div class='curves'>" + "".join(
        f"<figure>{curve_svg(name, xs, ys)}<figcaption>{_e('training SR' if name == 'success_rate' else name)}"
        "</figcaption></figure>" for name, ys in figs) + "</div>"


def _clip_table(ev: dict | None) -> str:
    if not ev:
        return "<p class='muted'>not evaluated yet: <code>kibotos eval POLICY --dataset ID</code></p>"
    rows = []
    for r in ev["rows"]:
        ok = r["successes"] > 0
        ref = r["baseline_success_rate"]
        ref_cell = "–" if ref is None or ref != ref else ("<span class='badge ok'>lifted</span>" if ref >= 1 else
                                                          "<span class='badge ko'>failed</span>")
        rows.append(f"<tr class='clip {'pass' if ok else 'fail'}' data-split='{_e(r['split'])}'>"
                    f"<td>{_e(r['split'])}</td><td class='mono'>{_e(r['clip_id'])}</td>"
                    f"<td><span class='badge {'ok' if ok else 'ko'}'>{'success' if ok else 'failure'}</span></td>"
                    f"<td>{ref_cell}</td><td class='num'>{_num(r['tracking_error_m'] * 100, '{:.1f}')} cm</td>"
                    f"<td class='num'>{_num(r['final_height_error_m'] * 100, '{:.1f}')} cm</td></tr>")
    return ("<table><tr><th>split</th><th>clip</th><th>policy</th><th>reference (open loop)</th>"
            "<th>hand–box error</th><th>final height error</th></tr>" + "".join(rows) + "</table>")


def render_policy_html(doc: dict[str, Any], *, verdict: dict | None = None, dataset_href=None,
                       checkpoint_href: str | None = None, preview_mp4: bytes | None = None,
                       preview_href: str | None = None) -> str:
    """The page of one policy document (``kibotos.xmimic.policy_reads``). ``verdict``: the
    pass rule's judgement of its latest evaluation; ``dataset_href(ref)``: a dataset
    version's page; ``checkpoint_href``: where its checkpoint downloads; ``preview_href``:
    where its rollout video is served (the read API), or ``preview_mp4``: the video to
    inline (a page written to a file)."""
    dataset_href = dataset_href or (lambda ref: f"/datasets/{quote(ref, safe='@')}.html")
    ev = doc.get("eval")
    pid = doc["policy_id"]
    verdict_text = "–" if verdict is None else ("passes" if verdict["passed"] else "fails")
    cards = [("SR", _num(doc.get("sr"), "{:.2f}")), ("GSR", _num(doc.get("gsr"), "{:.2f}")),
             ("reference SR", _num(ev.get("reference_sr") if ev else None, "{:.2f}")),
             ("reference GSR", _num(ev.get("reference_gsr") if ev else None, "{:.2f}")),
             ("pass rule", verdict_text),
             ("iterations", _num(doc.get("iterations"), "{:d}") if isinstance(doc.get("iterations"), int) else "–"),
             ("env-steps", f"{doc['env_steps']:,}" if isinstance(doc.get("env_steps"), int) else "–")]
    cards_html = "".join(f"<div class='card' id='card-{_e(k.replace(' ', '-'))}'><div class='k'>{_e(k)}</div>"
                         f"<div class='v'>{_e(v)}</div></div>" for k, v in cards)
    reasons = ""
    if verdict is not None:
        reasons = (f"<p class='muted' id='pass-reasons'>rule {_e(doc.get('rule_version') or '')}: "
                   + ", ".join(f"{_e(k)} {_e(v)}" for k, v in verdict["rule"].items())
                   + (f" · missed: {_e(', '.join(verdict['reasons']))}" if verdict["reasons"] else "") + "</p>")
    datasets = "".join(f"<li><a class='dataset' href='{_e(dataset_href(ref))}'>{_e(ref)}</a></li>"
                       for ref in doc.get("dataset_versions") or [])
    facts = [("policy", pid), ("role", doc.get("role")), ("task", doc.get("task")), ("run", doc.get("run_id")),
             ("config version", doc.get("config_version")), ("created", doc.get("created_at")),
             ("evaluated on", ev.get("dataset") if ev else None), ("eval id", ev.get("eval_id") if ev else None),
             ("eval config", ev.get("config_version") if ev else None), ("source", doc.get("source"))]
    summary = "".join(f"<dt>{_e(k)}</dt><dd class='mono'>{_e(v if v is not None else '–')}</dd>" for k, v in facts)
    ckpt = (f"<a id='checkpoint' href='{_e(checkpoint_href)}' download>checkpoint (model.pt)</a>"
            if checkpoint_href else "<span class='muted'>no stored checkpoint</span>")
    earlier = "".join(f"<tr><td class='mono'>{_e(e['eval_id'][:8])}</td><td class='mono'>{_e(e['dataset'])}</td>"
                      f"<td class='num'>{_num(e['sr'], '{:.2f}')}</td><td class='num'>{_num(e['gsr'], '{:.2f}')}</td>"
                      f"<td>{_e(e['created_at'])}</td></tr>" for e in doc.get("evals") or [])
    video = ""
    if preview_href:  # served beside the page: same origin, nothing from elsewhere
        video = (f"<section id='preview'><h2>Rollout preview</h2><video id='preview-video' controls muted loop "
                 f"preload='auto' src='{_e(preview_href)}'></video></section>")
    elif preview_mp4:
        video = ("<section id='preview'><h2>Rollout preview</h2><video id='preview-video' controls muted loop "
                 "src='data:video/mp4;base64," + base64.b64encode(preview_mp4).decode() + "'></video></section>")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; media-src data: 'self'; "
        "style-src 'unsafe-inline'\">"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(pid)} · Kibotos policy</title><style>{CSS}{EXTRA_CSS}{POLICY_CSS}</style></head><body>"
        f"<header style='background:{HEADER_COLOUR}'><h1>{_e(pid)}</h1>"
        f"<div class='sub'>XMimic {_e(doc.get('role') or 'policy')} · {_e(doc.get('task') or '')}</div></header><main>"
        f"<section id='cards'><div class='cards'>{cards_html}</div>{reasons}</section>"
        f"<section id='clips'><h2>SR / GSR per clip</h2>{_clip_table(ev)}</section>"
        f"<section id='curves'><h2>Training</h2>{_curves(doc.get('progress') or [])}</section>"
        + video
        + f"<section id='summary'><h2>Policy</h2><dl class='kv'>{summary}</dl></section>"
        f"<section id='datasets'><h2>Trained on</h2><ul>{datasets or '<li class=muted>no dataset version named</li>'}"
        f"</ul></section>"
        f"<section id='downloads'><h2>Downloads</h2>{ckpt}</section>"
        + (f"<section id='evals'><h2>Evaluations</h2><table><tr><th>eval</th><th>dataset</th><th>SR</th><th>GSR</th>"
           f"<th>at</th></tr>{earlier}</table></section>" if earlier else "")
        + "</main><footer>Kibotos policy page · success: the box within the configured height and plane tolerance "
        "of the reference at the end of carry, hands on the box while it is held (README \"XMimic: metrics\")"
        "</footer></body></html>"
    )


def page_for(doc: dict, *, checkpoint_href=None, dataset_href=None, preview_mp4: bytes | None = None,
             preview_href: str | None = None) -> str:
    """The page with the current pass rule's verdict on the latest evaluation."""
    from kibotos.xmimic.config import load_xmimic_config
    from kibotos.xmimic.evals import Summary, judge

    cfg = load_xmimic_config()
    ev = doc.get("eval")
    verdict = None
    if ev:
        verdict = judge(Summary(ev["eval_id"], ev["sr"], ev["gsr"], ev["reference_sr"], ev["reference_gsr"]),
                        cfg.eval.pass_rule).as_dict()
    return render_policy_html({**doc, "rule_version": cfg.config_version}, verdict=verdict, dataset_href=dataset_href,
                              checkpoint_href=checkpoint_href, preview_mp4=preview_mp4, preview_href=preview_href)
