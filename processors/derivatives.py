"""Joint-stream derivatives on the real, non-uniform timestamps, and the white-noise level.

Real recordings drop samples and jitter by a few milliseconds; a derivative filter that
assumes one fixed ``dt`` reads every late or missing sample as motion (a dropped sample at
50 Hz, taken as 20 ms apart instead of 40, doubles the local speed and throws jerk far past
any bound). Here every window is fitted on its own time offsets:

- :func:`local_derivatives` — a local polynomial (cubic by default) least-squares fit over
  a window of ``window_samples`` consecutive samples centred on each sample, on the sample
  times themselves (Savitzky–Golay when the spacing is uniform). For every window it also
  returns the *noise gain* of each derivative, ``||h_d||`` of that window's estimator row
  ``h_d``: white noise of standard deviation ``sigma`` on the positions becomes noise of
  standard deviation ``sigma * ||h_d||`` on the ``d``-th derivative.
- :func:`noise_sigma` — each joint's white-noise standard deviation, estimated from
  fourth-order divided differences on the sample times (zero for any cubic, so smooth
  motion hardly registers), normalised to unit gain for white noise, and taken robustly
  (1.4826 x median absolute value: a teleport or a few glitches do not move it).

Gates use both to tell measurement noise from motion: a derivative is only evidence of an
implausible motion where it exceeds its bound by more than the noise it can carry
(``processors.gate_e_plausibility``, ``processors.gate_a_integrity``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NOISE_ORDER = 4  # divided-difference order of the noise estimate (5 samples)
_MAD_TO_SIGMA = 1.4826
_CHUNK = 4096  # windows solved at once (bounds memory at high sampling rates)


@dataclass(frozen=True)
class Derivatives:
    """Derivatives at the centre sample of every full window (``centre`` indexes them)."""

    window: int  # samples per window (odd)
    centre: np.ndarray  # (N,) sample index of each window's centre
    smooth: np.ndarray  # (N, J) fitted value (derivative 0)
    vel: np.ndarray  # (N, J)
    acc: np.ndarray  # (N, J)
    jerk: np.ndarray  # (N, J)
    gain: np.ndarray  # (N, 4) noise gain of derivatives 0..3 per window

    def of(self, deriv: int) -> np.ndarray:
        return (self.smooth, self.vel, self.acc, self.jerk)[deriv]


def window_samples(window_ms: float, dt_ms: float) -> int:
    """Odd sample count covering ``window_ms`` at spacing ``dt_ms`` (at least 5)."""
    return max(5, int(round(window_ms / max(dt_ms, 1e-6))) | 1)


def local_derivatives(t_ms: np.ndarray, q: np.ndarray, window: int, order: int = 3) -> Derivatives:
    """Local polynomial fit of degree ``order`` over ``window`` samples around each sample,
    on the real times ``t_ms`` (strictly increasing, ms) of (T, J) ``q``. Only full windows
    (no edge extrapolation): ``T - window + 1`` rows, empty when ``T < window``."""
    window = max(order + 2, window | 1)
    q = np.asarray(q, dtype=np.float64)
    if q.ndim == 1:
        q = q[:, None]
    T, J = q.shape
    n = T - window + 1
    if n <= 0:
        empty = np.zeros((0, J))
        return Derivatives(window, np.zeros(0, np.int64), empty, empty, empty, empty, np.zeros((0, 4)))
    t = (np.asarray(t_ms, dtype=np.float64) - float(t_ms[0])) / 1000.0
    m = window // 2
    tw = np.lib.stride_tricks.sliding_window_view(t, window)  # (n, w)
    qw = np.lib.stride_tricks.sliding_window_view(q, window, axis=0)  # (n, J, w)
    out = np.zeros((4, n, J))
    gain = np.zeros((n, 4))
    nd = min(3, order) + 1
    # windows spaced exactly like the typical one share one estimator (one matrix product);
    # the others (around a dropped or jittered sample) get their own
    dt = float(np.median(np.diff(t)))
    typical = (np.arange(window) - m) * dt
    shared = np.all(np.abs((tw - tw[:, m:m + 1]) - typical) < 1e-7, axis=1)
    H0 = _estimators(typical[None], order, nd)[0]  # (w, nd)
    rows = np.flatnonzero(shared)
    for a in range(0, rows.size, _CHUNK):
        r = rows[a:a + _CHUNK]
        out[:nd, r] = np.moveaxis(qw[r] @ H0, 2, 0)
    gain[rows, :nd] = np.sqrt((H0**2).sum(axis=0))
    rows = np.flatnonzero(~shared)
    for a in range(0, rows.size, _CHUNK):
        r = rows[a:a + _CHUNK]
        H = _estimators(tw[r] - tw[r, m:m + 1], order, nd)  # (c, w, nd)
        out[:nd, r] = np.moveaxis(qw[r] @ H, 2, 0)  # (c, J, nd) -> (nd, c, J)
        gain[r, :nd] = np.sqrt((H**2).sum(axis=1))
    return Derivatives(window, np.arange(m, m + n), out[0], out[1], out[2], out[3], gain)


def _estimators(off: np.ndarray, order: int, nd: int) -> np.ndarray:
    """(c, w, nd): for windows with time offsets ``off`` (c, w) from their centre (s), the
    least-squares estimators of derivatives 0..nd-1 at the centre (polynomial of ``order``)."""
    scale = np.maximum(np.abs(off).max(axis=1), 1e-9)  # offsets to [-1, 1]: well conditioned
    V = (off / scale[:, None])[:, :, None] ** np.arange(order + 1)  # (c, w, order+1)
    Vt = np.swapaxes(V, 1, 2)
    coef = np.linalg.solve(Vt @ V, Vt)[:, :nd, :]  # (c, nd, w)
    fact = np.array([math.factorial(d) for d in range(nd)], dtype=np.float64)
    return np.swapaxes(coef * (fact[:, None] / scale[:, None, None] ** np.arange(nd)[:, None]), 1, 2)


def noise_sigma(t_ms: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(J,) white-noise standard deviation of each joint of (T, J) ``q`` sampled at the
    strictly increasing times ``t_ms``: the median absolute ``NOISE_ORDER``-th divided
    difference, each scaled to unit gain for white noise, times 1.4826. Zeros when there
    are too few samples."""
    q = np.asarray(q, dtype=np.float64)
    if q.ndim == 1:
        q = q[:, None]
    k = NOISE_ORDER + 1
    if q.shape[0] < k:
        return np.zeros(q.shape[1])
    t = np.asarray(t_ms, dtype=np.float64)
    tw = np.lib.stride_tricks.sliding_window_view(t, k)  # (n, k)
    dt = float(np.median(np.diff(t))) or 1.0
    diff = (tw[:, :, None] - tw[:, None, :]) / dt  # in units of the usual spacing: no overflow
    idx = np.arange(k)
    diff[:, idx, idx] = 1.0
    w = 1.0 / diff.prod(axis=2)  # (n, k) divided-difference weights
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))  # unit gain: white noise sigma -> sigma
    qw = np.lib.stride_tricks.sliding_window_view(q, k, axis=0)  # (n, J, k)
    r = np.einsum("nk,njk->nj", w, qw)
    return _MAD_TO_SIGMA * np.median(np.abs(r), axis=0)
