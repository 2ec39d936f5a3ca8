"""Plain numpy statements of what the novelty SQL computes (``kibotos.novelty.index``),
to check the SQL against and to state invariances in unit tests."""

from __future__ import annotations

import numpy as np


def overlaps(len_a: int, len_b: int, max_lag: int, min_samples: int, min_fraction: float):
    """``(lag, offset_a, offset_b, n)`` of every lag whose overlap is long enough."""
    need = max(min_samples, int(np.ceil(min_fraction * min(len_a, len_b))))
    for lag in range(-max_lag, max_lag + 1):
        oa, ob = max(lag, 0), max(-lag, 0)
        n = min(len_a - oa, len_b - ob)
        if n >= need and n > 0:
            yield lag, oa, ob, n


def trajectory_corr(a: np.ndarray, b: np.ndarray, max_lag: int, min_samples: int, min_fraction: float) -> float:
    """Best-lag locally centred correlation of joint-major fingerprints ``(J, L)``."""
    best = -np.inf
    for _, oa, ob, n in overlaps(a.shape[1], b.shape[1], max_lag, min_samples, min_fraction):
        x = a[:, oa: oa + n].astype(np.float64)
        y = b[:, ob: ob + n].astype(np.float64)
        x = x - x.mean(axis=1, keepdims=True)
        y = y - y.mean(axis=1, keepdims=True)
        den = np.sqrt((x * x).sum() * (y * y).sum())
        best = max(best, (x * y).sum() / den if den > 1e-9 else 0.0)
    return float(best)


def _cosine(x: np.ndarray, y: np.ndarray) -> float:
    den = np.linalg.norm(x) * np.linalg.norm(y)
    return float(x @ y / den) if den > 0 else -1.0


def motion_corr(a: np.ndarray, b: np.ndarray, max_lag: int, min_samples: int, min_fraction: float,
                offsets: list[int] = ()) -> float:
    """Best cosine of time-major motion signatures ``(L, P)``: over lags, then over flat
    spatial ``offsets`` at the best lag (the first best, as SQL's ``indexOf``)."""
    p = a.shape[1]
    fa, fb = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    best, where = -1.0, None
    for _, oa, ob, n in overlaps(len(a), len(b), max_lag, min_samples, min_fraction):
        c = _cosine(fa[oa * p: (oa + n) * p], fb[ob * p: (ob + n) * p])
        if where is None or c > best:
            best, where = c, (oa, ob, n)
    if where is None:
        return -1.0
    oa, ob, n = where
    for off in offsets:
        x = fa[oa * p + max(off, 0): (oa + n) * p - max(-off, 0)]
        y = fb[ob * p + max(-off, 0): (ob + n) * p - max(off, 0)]
        best = max(best, _cosine(x, y))
    return best
