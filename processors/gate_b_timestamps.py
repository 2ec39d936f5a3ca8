"""Gate B — timestamps (design §5.2 B; cheap).

Strictly increasing; median dt close to ``1000 / sampling_rate_hz``; reject on any
non-positive dt, a gap over 200 ms, or more than 5 % missing samples (estimated from the
duration and the nominal rate).
"""

from __future__ import annotations

import numpy as np

from kibotos.bundle.reader import TIMESTAMPS, BundleView
from kibotos.config.gates import GateConfig
from kibotos.reports.model import GateResult
from processors.base import register_gate, result

GATE_ID = "gate_b_timestamps"


@register_gate(GATE_ID, letter="b", order=2, title="timestamp monotonicity, gaps, rate")
def check(view: BundleView, config: GateConfig) -> GateResult:
    cfg = config.gate_b
    ts = view.read(TIMESTAMPS).astype(np.int64)
    nominal = 1000.0 / view.manifest.sampling_rate_hz
    thresholds = cfg.model_dump() | {"nominal_dt_ms": round(nominal, 4)}
    dt = np.diff(ts)
    expected = int(round((ts[-1] - ts[0]) / nominal)) + 1 if ts.size else 0
    missing = max(0, expected - ts.size) / max(expected, 1)
    metrics = {
        "samples": int(ts.size),
        "min_dt_ms": int(dt.min()),
        "max_dt_ms": int(dt.max()),
        "median_dt_ms": float(np.median(dt)),
        "non_positive_dt": int(np.count_nonzero(dt <= 0)),
        "expected_samples": expected,
        "missing_fraction": round(float(missing), 4),
    }
    if metrics["non_positive_dt"]:
        return result(GATE_ID, False, metrics, thresholds, "timestamps_not_increasing")
    if metrics["max_dt_ms"] > cfg.max_gap_ms:
        return result(GATE_ID, False, metrics, thresholds, "timestamp_gap")
    # a wrong declared rate first: otherwise a slow stream reads as missing samples
    deviation = abs(metrics["median_dt_ms"] - nominal) / nominal
    metrics["rate_deviation"] = round(deviation, 4)
    if deviation > cfg.max_rate_deviation:
        return result(GATE_ID, False, metrics, thresholds, "sampling_rate_mismatch")
    if missing > cfg.max_missing_fraction:
        return result(GATE_ID, False, metrics, thresholds, "missing_samples")
    return result(GATE_ID, True, metrics, thresholds)
