"""Vectorized signal helpers shared by the gates (no Python loop over frames)."""

from __future__ import annotations

import math

import numpy as np


def savgol_coeffs(window: int, polyorder: int, deriv: int) -> np.ndarray:
    """Savitzky-Golay coefficients for the ``deriv``-th derivative at the window centre
    (unit sample spacing), applied as ``sum(c[k] * x[i - m + k])``."""
    m = window // 2
    x = np.arange(-m, m + 1, dtype=np.float64)
    design = np.vander(x, polyorder + 1, increasing=True)
    return math.factorial(deriv) * np.linalg.pinv(design)[deriv]


def savgol_derivatives(q: np.ndarray, dt: float, window: int, polyorder: int = 3) -> tuple[np.ndarray, ...]:
    """Velocity, acceleration and jerk of (T, J) ``q`` sampled every ``dt`` seconds.

    Returns three (T - window + 1, J) arrays (valid part only: no edge extrapolation).
    """
    window = max(5, window | 1)
    if q.shape[0] < window:
        empty = np.zeros((0, q.shape[1]))
        return empty, empty, empty
    windows = np.lib.stride_tricks.sliding_window_view(q.astype(np.float64), window, axis=0)  # (T-w+1, J, w)
    out = []
    for d in (1, 2, 3):
        out.append(windows @ savgol_coeffs(window, polyorder, d) / dt**d)
    return tuple(out)


def savgol(x: np.ndarray, dt: float, window: int, deriv: int = 0, polyorder: int = 3) -> np.ndarray:
    """One Savitzky-Golay output (smoothed value or derivative) of (T, J) ``x``, valid part."""
    window = max(5, window | 1)
    if x.shape[0] < window:
        return np.zeros((0, x.shape[1]))
    windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), window, axis=0)
    return windows @ savgol_coeffs(window, polyorder, deriv) / dt**deriv


def window_samples(window_ms: float, dt_ms: float) -> int:
    return max(5, int(round(window_ms / max(dt_ms, 1e-6))) | 1)


def resample(t: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    return np.interp(grid, t, y, left=np.nan, right=np.nan)


def zscore(x: np.ndarray) -> np.ndarray:
    s = np.nanstd(x)
    return (x - np.nanmean(x)) / (s if s > 1e-12 else 1.0)


def lag_correlation(s: np.ndarray, e: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of ``s`` (length K) with ``e`` shifted by each of ``steps``:
    for lag ``d`` the pairs ``(s[k], e[k + d])`` with ``k + d`` inside ``e``. Returns
    (corr, n) per lag, ``n`` the number of pairs (corr is nan or inf where ``n`` is 0).

    The window sums come from cumulative sums and the cross term from one FFT
    cross-correlation, O((K + V) log(K + V)) instead of a (lags x K) matrix; the two agree
    to ~1e-12 (``lag_correlation_direct``, the reference, tested). Non-finite input takes
    the direct path."""
    s = np.asarray(s, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    if not (np.isfinite(s).all() and np.isfinite(e).all()) or s.size == 0 or e.size == 0:
        return lag_correlation_direct(s, e, steps)
    # centred first: the correlation does not change, the sums' cancellation does (a
    # constant stream gives exactly 0, as the direct path does)
    s, e = s - s.mean(), e - e.mean()
    k_len, v_len = s.size, e.size
    steps = np.asarray(steps, dtype=np.int64)
    k_lo = np.clip(-steps, 0, k_len)  # first kinematic index with a partner, per lag
    k_hi = np.clip(v_len - steps, 0, k_len)  # one past the last
    k_hi = np.maximum(k_hi, k_lo)
    n = (k_hi - k_lo).astype(np.float64)

    def window(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        c = np.concatenate([[0.0], np.cumsum(x)])
        return c[hi] - c[lo]

    sum_s, sum_ss = window(s, k_lo, k_hi), window(s * s, k_lo, k_hi)
    e_lo, e_hi = np.clip(k_lo + steps, 0, v_len), np.clip(k_hi + steps, 0, v_len)  # equal where no pair
    sum_e, sum_ee = window(e, e_lo, e_hi), window(e * e, e_lo, e_hi)
    pad = int(np.abs(steps).max()) if steps.size else 0
    size = 1 << int(np.ceil(np.log2(max(k_len + v_len + 2 * pad, 2))))
    # r[m] = sum_k e[k + m] s[k] (circular; the padding keeps the lags asked for apart)
    r = np.fft.irfft(np.fft.rfft(e, size) * np.conj(np.fft.rfft(s, size)), size)
    cross = r[steps % size]
    with np.errstate(invalid="ignore", divide="ignore"):
        me, ms = sum_e / n, sum_s / n
        cov = cross / n - me * ms
        ve = sum_ee / n - me**2
        vs = sum_ss / n - ms**2
        corr = cov / np.sqrt(np.clip(ve, 1e-12, None) * np.clip(vs, 1e-12, None))
    return corr, n


def lag_correlation_direct(s: np.ndarray, e: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``lag_correlation`` as a (lags x K) matrix of pairs: the reference (and the path for
    non-finite input)."""
    idx = np.arange(s.size)[None, :] + np.asarray(steps)[:, None]  # e's index for each (lag, k)
    valid = (idx >= 0) & (idx < e.size)
    ev = np.where(valid, e[np.clip(idx, 0, max(e.size - 1, 0))], 0.0) if e.size else np.zeros(valid.shape)
    sv = np.where(valid, s[None, :], 0.0)
    n = valid.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        me, ms = ev.sum(1) / n, sv.sum(1) / n
        cov = (ev * sv).sum(1) / n - me * ms
        ve = (ev**2).sum(1) / n - me**2
        vs = (sv**2).sum(1) / n - ms**2
        corr = cov / np.sqrt(np.clip(ve, 1e-12, None) * np.clip(vs, 1e-12, None))
    return corr, n
