"""``kibotos bench xgen`` runs every XGen job stage and reports what it measured (a smoke
run: 3 s of motion, quality skipped; no timing is asserted)."""

from __future__ import annotations

from benchmarks.xgen import run_xgen_bench
from topics.catalogue import XGEN_STAGES


def test_xgen_bench_reports_every_stage():
    result = run_xgen_bench(duration_s=3.0, fps=30.0, quality=False)
    assert [r["stage"] for r in result["stages"]] == list(XGEN_STAGES)
    assert result["frames"] == 90 and result["fk_pass_ms"] > 0
    export = result["stages"][-1]
    assert export["jobs"] == result["clips"] >= 10 and result["clips_verified"] == 0  # unjudged
    assert all(r["seconds"] > 0 and r["vs_fk_pass"] > 0 for r in result["stages"])
    assert result["clips_per_minute"] > 0
