"""Human-readable rendering of reports for the terminal."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from kibotos.reports.model import VerificationReport


def _short(d: dict, limit: int = 110) -> str:
    text = json.dumps({k: v for k, v in d.items() if k != "trace"}, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_report(console: Console, report: VerificationReport) -> None:
    colour = "green" if report.verdict == "accepted" else "red"
    console.print(f"submission [bold]{report.submission_id}[/bold]  miner {report.miner_id or '-'}  "
                  f"robot {report.robot_model_id or '-'}@{report.robot_model_revision or '-'}")
    console.print(f"verdict [{colour}]{report.verdict}[/{colour}]"
                  + (f"  reason [bold]{report.reason_code}[/bold] at {report.failed_gate}" if report.reason_code else "")
                  + f"  config {report.config_version}" + (f"  points {report.points:g}" if report.points else ""))
    table = Table("gate", "pass", "reason", "ms", "metrics")
    for g in report.gates:
        table.add_row(g.gate, "✔" if g.passed else "✘", g.reason_code or "", f"{g.metrics.get('wall_ms', 0):.1f}",
                      _short({k: v for k, v in g.metrics.items() if k != "wall_ms"}))
    console.print(table)
    s = report.sync
    if s.claimed_offset_ms is not None:
        console.print(f"sync: claimed {s.claimed_offset_ms} ms, estimated {s.estimated_offset_ms} ms, "
                      f"confidence {s.sync_confidence}")
