"""A dataset version as one self-contained HTML page, like the report pages
(``kibotos.reports.html``: same CSS, every string escaped, no network fetch).

Sections: headline cards (episodes, mean S, miners, attribution points, content hash),
the S distribution as an SVG bar chart (the card's histogram), coverage per task / robot /
miner with each miner's attribution share, the changelog counts, download links (card,
episode list, exports when given) and the episode table (first ``max_episodes``; each
row links to the episode's verification report page).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from kibotos.datasets.episode import Episode
from kibotos.reports.html import CSS, _e

HEADER_COLOUR = "#174ea6"
BAR_COLOUR = "#e37400"  # not the share bars' blue: the browser test tells them apart
EXTRA_CSS = """
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:12px}
.card{background:#fff;border:1px solid #dadce0;border-radius:8px;padding:12px 16px}
.card .k{color:#5f6368;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:26px;font-weight:700;word-break:break-all}
.card .v.small{font-size:13px;font-weight:400}
a{color:#1a73e8}
"""


def histogram_svg(edges: list[float], counts: list[int], width: int = 640, height: int = 220) -> str:
    """Bars of ``counts`` over the bins ``edges`` (S in [0, 1]); each bar carries its count."""
    pad_l, pad_b, pad_t = 36, 28, 12
    n = len(counts)
    top = max(counts) if counts and max(counts) > 0 else 1
    bw = (width - pad_l - 8) / max(n, 1)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
             f"aria-label='S distribution' id='s-distribution'>",
             f"<line x1='{pad_l}' y1='{height - pad_b}' x2='{width - 8}' y2='{height - pad_b}' stroke='#5f6368'/>"]
    for i, c in enumerate(counts):
        h = (height - pad_b - pad_t) * c / top
        x = pad_l + i * bw
        parts.append(f"<rect class='sbin' data-count='{c}' x='{x + 2:.1f}' y='{height - pad_b - h:.1f}' "
                     f"width='{bw - 4:.1f}' height='{h:.1f}' fill='{BAR_COLOUR}'><title>S in [{edges[i]:.1f}, "
                     f"{edges[i + 1]:.1f}): {c}</title></rect>")
        if c:
            parts.append(f"<text x='{x + bw / 2:.1f}' y='{height - pad_b - h - 3:.1f}' font-size='11' "
                         f"text-anchor='middle' fill='#202124'>{c}</text>")
    for i in range(0, n + 1, max(1, n // 5)):
        parts.append(f"<text x='{pad_l + i * bw:.1f}' y='{height - 10}' font-size='11' text-anchor='middle' "
                     f"fill='#5f6368'>{edges[i]:.1f}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _coverage_table(axis: str, rows: dict[str, dict[str, Any]], shares: dict[str, float] | None) -> str:
    head = "<tr><th>" + _e(axis) + "</th><th>episodes</th><th>mean S</th><th>reward</th><th>attribution pts</th>"
    head += "<th>share</th></tr>" if shares is not None else "</tr>"
    body = []
    for k, v in rows.items():
        ms = "–" if v["mean_score"] is None else f"{v['mean_score']:.3f}"
        cells = (f"<td class='mono'>{_e(k)}</td><td class='num'>{v['episodes']}</td><td class='num'>{ms}</td>"
                 f"<td class='num'>{v['reward']:.2f}</td><td class='num'>{v['attribution_points']:.3f}</td>")
        if shares is not None:
            s = shares.get(k, 0.0)
            cells += (f"<td><div class='bar' title='{100 * s:.1f}%'><span style='width:{100 * s:.1f}%'></span></div>"
                      f"<span class='muted'>{100 * s:.1f}%</span></td>")
        body.append(f"<tr class='cov-{_e(axis)}'>{cells}</tr>")
    return f"<h3>{_e(axis)}</h3><table>{head}{''.join(body)}</table>"


def _episode_rows(episodes: Iterable[Episode], report_href, max_episodes: int) -> tuple[str, int]:
    rows, n = [], 0
    for ep in episodes:
        n += 1
        if n > max_episodes:
            continue
        s = "–" if ep.score is None else f"{ep.score:.3f}"
        href = report_href(ep.submission_id)
        link = f"<a href='{_e(href)}'>{_e(ep.submission_id[:8])}</a>" if href else _e(ep.submission_id[:8])
        rows.append(f"<tr class='episode'><td class='mono'>{link}</td><td class='mono'>{_e(ep.miner_id)}</td>"
                    f"<td>{_e(ep.robot_model_id or '–')}</td><td>{_e(ep.task_id or '–')}</td>"
                    f"<td class='num'>{s}</td><td class='num'>{ep.reward:.2f}</td>"
                    f"<td class='num'>{ep.attribution_points:.3f}</td><td class='mono'>{_e(', '.join(ep.soft_flags))}</td>"
                    f"<td class='num'>{len(ep.evidence_uris)}</td></tr>")
    return "".join(rows), n


def render_dataset_html(card: dict[str, Any], info: dict[str, Any], episodes, shares: list[dict], *,
                        downloads: dict[str, str] | None = None, report_href=None, max_episodes: int = 500) -> str:
    """The page of one version: ``card`` / ``info`` as stored (card.json, version.json),
    ``episodes`` an iterable (streamed; the first ``max_episodes`` rows are shown),
    ``shares`` from ``kibotos.datasets.attribution.shares``, ``downloads`` {label: href},
    ``report_href(submission_id)`` the link of an episode's report page (None: no link)."""
    report_href = report_href or (lambda sid: f"/reports/{quote(sid)}.html")
    name, version = card["dataset"], card["version"]
    s = card["score"]
    mean = "–" if s["mean"] is None else f"{s['mean']:.3f}"
    cards = [("episodes", str(card["episodes"])), ("mean S", mean), ("miners", str(len(card["coverage"]["miner"]))),
             ("attribution points", f"{card['attribution']['points']:.2f}"),
             ("changes", f"+{card['changelog']['added']} / −{card['changelog']['removed']} / "
                         f"~{card['changelog'].get('revised', 0)}")]
    cards_html = "".join(f"<div class='card'><div class='k'>{_e(k)}</div><div class='v'>{_e(v)}</div></div>"
                         for k, v in cards)
    cards_html += (f"<div class='card'><div class='k'>content hash</div><div class='v small mono'>"
                   f"{_e(card['content_hash'])}</div></div>")
    share_map = {r["miner_id"]: r["share"] for r in shares}
    coverage = "".join(_coverage_table(axis, card["coverage"][axis], share_map if axis == "miner" else None)
                       for axis in ("task", "robot", "miner"))
    rows, total = _episode_rows(episodes, report_href, max_episodes)
    more = f"<p class='muted'>… and {total - max_episodes} more (episodes.jsonl)</p>" if total > max_episodes else ""
    links = "".join(f"<li><a href='{_e(href)}'>{_e(label)}</a></li>" for label, href in (downloads or {}).items())
    flags = "".join(f"<tr><td class='mono'>{_e(k)}</td><td class='num'>{v}</td></tr>"
                    for k, v in card.get("soft_flags", {}).items())
    facts = [("dataset", name), ("version", version), ("created", card["created_at"]),
             ("parent hash", card.get("parent_hash") or "none"), ("spec hash", card["spec_hash"]),
             ("attribution rule", card["attribution"]["rule_version"])]
    summary = "".join(f"<dt>{_e(k)}</dt><dd class='mono'>{_e(v)}</dd>" for k, v in facts)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_e(name)} v{version} · Kibotos dataset</title><style>{CSS}{EXTRA_CSS}</style></head><body>"
        f"<header style='background:{HEADER_COLOUR}'><h1>{_e(name)} v{version}</h1>"
        f"<div class='sub'>{_e(card.get('description') or '')}</div></header><main>"
        f"<section id='cards'><div class='cards'>{cards_html}</div></section>"
        f"<section id='summary'><h2>Version</h2><dl class='kv'>{summary}</dl></section>"
        f"<section id='quality'><h2>S distribution</h2>{histogram_svg(s['histogram']['edges'], s['histogram']['counts'])}"
        f"<p class='muted'>min {s['min'] if s['min'] is not None else '–'} · mean {mean} · "
        f"max {s['max'] if s['max'] is not None else '–'} · unscored {s['unscored']}</p></section>"
        f"<section id='coverage'><h2>Coverage and attribution</h2>{coverage}</section>"
        + (f"<section id='flags'><h2>Soft flags</h2><table><tr><th>flag</th><th>episodes</th></tr>{flags}</table>"
           "</section>" if flags else "")
        + f"<section id='downloads'><h2>Downloads</h2><ul>{links or '<li class=muted>none</li>'}</ul></section>"
        f"<section id='episodes'><h2>Episodes</h2><table><tr><th>submission</th><th>miner</th><th>robot</th>"
        f"<th>task</th><th>S</th><th>reward</th><th>attribution</th><th>soft flags</th><th>evidence</th></tr>"
        f"{rows}</table>{more}</section></main>"
        "<footer>Kibotos dataset card · the version's files are immutable; the content hash is the SHA-256 of "
        "episodes.jsonl</footer></body></html>"
    )


def render_version_page(store, name: str, version: int, *, downloads=None, report_href=None,
                        max_episodes: int = 500) -> str:
    from kibotos.datasets.attribution import shares

    return render_dataset_html(store.card(name, version), store.info(name, version), store.episodes(name, version),
                               shares(store.episodes(name, version)), downloads=downloads, report_href=report_href,
                               max_episodes=max_episodes)
