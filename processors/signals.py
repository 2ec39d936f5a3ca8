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
