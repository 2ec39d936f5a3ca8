"""Physical measurements the XGen tests assert on."""

from __future__ import annotations

import numpy as np


def planted_drift(feet_xy: np.ndarray, planted: np.ndarray) -> float:
    """Largest horizontal distance (m) a foot moves from where it was planted while it
    stays planted. feet_xy (T, 2, 2), planted (T, 2)."""
    worst = 0.0
    for k in range(feet_xy.shape[1]):
        start = None
        for t in range(len(feet_xy)):
            if planted[t, k]:
                start = feet_xy[t, k] if start is None else start
                worst = max(worst, float(np.linalg.norm(feet_xy[t, k] - start)))
            else:
                start = None
    return worst
