"""``kibotos bench export`` on a few episodes: every stage measured, nothing skipped."""

from __future__ import annotations

from typer.testing import CliRunner

from benchmarks.export import run_export_bench
from kibotos.cli.main import app


def test_small_export_bench(tmp_path):
    res = run_export_bench(episodes=10, pool=2, work=tmp_path, progress=lambda m: None)
    stages = res["stages"]
    assert set(stages) == {"publish", "read", "export", "export_1"}
    assert all(s["episodes_per_s"] > 0 for s in stages.values())
    assert stages["export"]["skipped"] == 0 and stages["export"]["files"] > 10
    r = res["ratios"]["export_over_read_throughput"]
    assert r == round(stages["export"]["episodes_per_s"] / stages["read"]["episodes_per_s"], 3)
    assert (tmp_path / "exports" / "bench" / "v000001" / "export.json").is_file()


def test_cli_registers_the_bench():
    assert "--episodes" in CliRunner().invoke(app, ["bench", "export", "--help"]).output
