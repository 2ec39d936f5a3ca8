"""The dataset card of a version: statistics gathered in one pass over its episodes
(``CardStats.add`` per episode, constant memory in the number of episodes), written as
``card.json`` and ``card.md`` next to ``episodes.jsonl``.

``card.json``::

    {"dataset", "version", "content_hash", "episodes", "description", "spec",
     "score": {"min", "max", "mean", "unscored", "histogram": {"edges": [...], "counts": [...]}},
     "coverage": {"task": {id: {"episodes", "mean_score", "reward"}}, "robot": {...}, "miner": {...}},
     "sources": {...}, "soft_flags": {code: count}, "changelog": {"added", "removed"},
     "attribution": {"rule_version", "points"}}
"""

from __future__ import annotations

from typing import Any

from kibotos.datasets.episode import Episode

NONE_KEY = "(none)"


class CardStats:
    def __init__(self, bins: int):
        self.bins = bins
        self.n = 0
        self.unscored = 0
        self.s_sum = 0.0
        self.s_min: float | None = None
        self.s_max: float | None = None
        self.counts = [0] * bins
        self.coverage: dict[str, dict[str, dict[str, float]]] = {"task": {}, "robot": {}, "miner": {}}
        self.sources: dict[str, int] = {}
        self.flags: dict[str, int] = {}

    def add(self, ep: Episode) -> None:
        self.n += 1
        s = ep.score
        if s is None:
            self.unscored += 1
        else:
            self.s_sum += s
            self.s_min = s if self.s_min is None else min(self.s_min, s)
            self.s_max = s if self.s_max is None else max(self.s_max, s)
            self.counts[min(self.bins - 1, max(0, int(s * self.bins)))] += 1
        for axis, key in (("task", ep.task_id), ("robot", ep.robot_model_id), ("miner", ep.miner_id)):
            c = self.coverage[axis].setdefault(key or NONE_KEY, {"episodes": 0, "score_sum": 0.0, "scored": 0,
                                                                   "reward": 0.0, "attribution_points": 0.0})
            c["episodes"] += 1
            c["reward"] += ep.reward
            c["attribution_points"] += ep.attribution_points
            if s is not None:
                c["score_sum"] += s
                c["scored"] += 1
        self.sources[ep.source] = self.sources.get(ep.source, 0) + 1
        for f in ep.soft_flags:
            self.flags[f] = self.flags.get(f, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        scored = self.n - self.unscored
        cov = {axis: {k: {"episodes": int(v["episodes"]),
                          "mean_score": round(v["score_sum"] / v["scored"], 4) if v["scored"] else None,
                          "reward": round(v["reward"], 4), "attribution_points": round(v["attribution_points"], 4)}
                      for k, v in sorted(items.items())}
               for axis, items in self.coverage.items()}
        return {"episodes": self.n,
                "score": {"min": self.s_min, "max": self.s_max,
                          "mean": round(self.s_sum / scored, 4) if scored else None, "unscored": self.unscored,
                          "histogram": {"edges": [round(i / self.bins, 4) for i in range(self.bins + 1)],
                                        "counts": list(self.counts)}},
                "coverage": cov, "sources": dict(sorted(self.sources.items())),
                "soft_flags": dict(sorted(self.flags.items()))}


def _table(title: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    out = [f"### {title}", "", "| value | episodes | mean S | reward | attribution points |", "|---|---:|---:|---:|---:|"]
    for k, v in rows.items():
        ms = "-" if v["mean_score"] is None else f"{v['mean_score']:.3f}"
        out.append(f"| {k} | {v['episodes']} | {ms} | {v['reward']:.2f} | {v['attribution_points']:.3f} |")
    return out + [""]


def card_markdown(card: dict[str, Any]) -> str:
    """The Markdown card of ``card.json``."""
    s = card["score"]
    lines = [f"# Dataset `{card['dataset']}` v{card['version']}", ""]
    if card.get("description"):
        lines += [card["description"], ""]
    lines += [f"- content hash: `{card['content_hash']}`", f"- parent: {card.get('parent_hash') or 'none'}",
              f"- episodes: {card['episodes']} (+{card['changelog']['added']} / -{card['changelog']['removed']} "
              f"/ ~{card['changelog'].get('revised', 0)} revised since the previous version)", f"- created: {card['created_at']}",
              f"- spec hash: `{card['spec_hash']}`", f"- attribution rule: `{card['attribution']['rule_version']}` "
              f"({card['attribution']['points']:.3f} points paid by this version)", "",
              "## Quality (S from each episode's verification report)", ""]
    if s["mean"] is None:
        lines.append("no scored episodes")
    else:
        lines.append(f"min {s['min']:.3f} · mean {s['mean']:.3f} · max {s['max']:.3f} · unscored {s['unscored']}")
    lines += ["", "| S bin | episodes |", "|---|---:|"]
    edges, counts = s["histogram"]["edges"], s["histogram"]["counts"]
    lines += [f"| [{edges[i]:.1f}, {edges[i + 1]:.1f}) | {counts[i]} |" for i in range(len(counts))]
    lines += ["", "## Coverage", ""]
    for axis in ("task", "robot", "miner"):
        lines += _table(axis, card["coverage"][axis])
    if card["soft_flags"]:
        lines += ["## Soft flags (passed gates' reason codes)", "", "| flag | episodes |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in card["soft_flags"].items()] + [""]
    lines += ["## Spec", "", "```json", card["spec_json"], "```", ""]
    return "\n".join(lines)
