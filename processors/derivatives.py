"""Joint-stream derivatives on the real, non-uniform timestamps, and the white-noise level.

Real recordings drop samples and jitter by a few milliseconds; a derivative filter that
assumes one fixed ``dt`` reads every late or missing sample as motion (a dropped sample at
50 Hz, taken as 20 ms apart instead of 40, doubles the local speed and throws jerk far past
any bound). Here every window is fitted on its own time offsets:

- :func:`local_derivatives` — a local polynomial (cubic by default) least-squares fit over
  the time span of ``window_samples`` samples centred on each sample, on the sample times
  themselves (Savitzky–Golay when the spacing is uniform). For every window it also
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

import functools
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
    # rows fitted with their own estimator (sorted); every other row has the typical
    # window's (the same gains). None: not known, every row may differ
    irregular: np.ndarray | None = None

    def of(self, deriv: int) -> np.ndarray:
        return (self.smooth, self.vel, self.acc, self.jerk)[deriv]

    def columns(self, cols: slice) -> "Derivatives":
        """The same rows for the columns ``cols`` only (views)."""
        return Derivatives(self.window, self.centre, self.smooth[:, cols], self.vel[:, cols], self.acc[:, cols],
                           self.jerk[:, cols], self.gain, self.irregular)


def joint_derivatives(view, ts: np.ndarray, q: np.ndarray, window: int) -> Derivatives:
    """``local_derivatives(ts, q, window)`` of the view's joint positions (``ts``, ``q``: its
    timestamps and ``joint_pos`` as float64), computed once per view: gates A and E fit the
    same window."""
    return _memo(view, ("local_derivatives", window), lambda: local_derivatives(ts, q, window))


def joint_noise_sigma(view, ts: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``noise_sigma(ts, q)`` of the view's joint positions, computed once per view."""
    return _memo(view, ("noise_sigma",), lambda: noise_sigma(ts, q))


def joint_and_velocity(view, ts: np.ndarray, q: np.ndarray, v: np.ndarray,
                       window: int) -> tuple[Derivatives, Derivatives, np.ndarray, np.ndarray]:
    """``(dq, dv, sigma_q, sigma_v)``: ``local_derivatives`` and ``noise_sigma`` of the joint
    positions ``q`` and of the recorded velocity ``v`` (same clock ``ts``), both streams
    side by side through one fit and one noise estimate (the estimators, the window
    comparison and the medians made once; every column is its own computation, so each
    equals its separate call to rounding). The joint positions' results are the view's
    (``joint_derivatives`` / ``joint_noise_sigma``): gate E reads them."""
    J = q.shape[1]
    both: dict[str, tuple] = {}

    def fit() -> tuple:
        if not both:
            qv = np.concatenate([np.asarray(q, dtype=np.float64), np.asarray(v, dtype=np.float64)], axis=1)
            d, sigma = local_derivatives(ts, qv, window), noise_sigma(ts, qv)
            both["d"] = (d.columns(slice(0, J)), d.columns(slice(J, None)))
            both["sigma"] = (sigma[:J], sigma[J:])
        return both["d"][0], both["sigma"][0]

    dq = _memo(view, ("local_derivatives", window), lambda: fit()[0])
    sigma_q = _memo(view, ("noise_sigma",), lambda: fit()[1])
    if not both:  # the view had the positions' already: the velocity alone
        return dq, local_derivatives(ts, v, window), sigma_q, noise_sigma(ts, v)
    return dq, both["d"][1], sigma_q, both["sigma"][1]


def _memo(view, key: tuple, compute):
    memo = getattr(view, "memo", None)  # a BundleView; anything else computes every time
    return memo(("joint_pos",) + key, compute) if callable(memo) else compute()


def window_samples(window_ms: float, dt_ms: float) -> int:
    """Odd sample count covering ``window_ms`` at spacing ``dt_ms`` (at least 5)."""
    return max(5, int(round(window_ms / max(dt_ms, 1e-6))) | 1)


def local_derivatives(t_ms: np.ndarray, q: np.ndarray, window: int, order: int = 3) -> Derivatives:
    """Local polynomial fit of degree ``order`` around each sample on the real times
    ``t_ms`` (strictly increasing, ms) of (T, J) ``q``. A window spans the *time* of
    ``window`` samples at the median spacing (``±(window // 2 + 1/2) x dt``): a dropped
    sample leaves one sample fewer in the same span, not a longer window, and a jittered
    one stays in. Rows for centres ``window // 2 .. T - 1 - window // 2`` (no extrapolation
    at the ends): ``T - window + 1`` rows, empty when ``T < window``.

    Windows spaced like the typical one share one estimator, applied to every row at once
    as a correlation over a strided view of ``q`` (no copy of the windows); the others
    (around a dropped or jittered sample, at the ends) get their own least-squares
    estimator. Equal to ``local_derivatives_direct`` (each window selected and solved as
    one batch) to rounding (tested)."""
    window = max(order + 2, window | 1)
    q = np.asarray(q, dtype=np.float64)
    if q.ndim == 1:
        q = q[:, None]
    T, J = q.shape
    n = T - window + 1
    if n <= 0:
        return _empty(window, J)
    if not np.isfinite(q).all():  # the zero taps would carry NaN / inf along: as the reference does
        return local_derivatives_direct(t_ms, q, window, order)
    t = (np.asarray(t_ms, dtype=np.float64) - float(t_ms[0])) / 1000.0
    m = window // 2
    gaps = np.diff(t)
    dt = float(np.median(gaps))
    span = (m + 0.5) * dt  # half-span of a window, seconds
    half = m + max(2, m // 2)  # room for the samples a dropped one lets in
    K = 2 * half + 1
    nd = min(3, order) + 1
    typical = (np.arange(K) - half) * dt
    H0 = _estimators_cached(typical[None], span, order, nd)[0]  # (K, nd)
    # the padded (n, K) time windows and (n, J, K) position windows, as strided views
    tw, qw = _padded_windows(t, q, m, half, n)
    irregular = _irregular_rows(t, gaps, dt, tw, typical, m, half, n)
    # every row through the typical estimator: only its 2m + 1 middle taps are non-zero
    # (the samples within the span), so the unpadded windows of ``q`` serve
    taps = H0[half - m:half + m + 1]
    if np.any(H0[:half - m]) or np.any(H0[half + m + 1:]):  # a degenerate spacing (dt <= 0)
        core = qw @ H0  # (n, J, nd)
    else:
        core = np.lib.stride_tricks.sliding_window_view(q, window, axis=0) @ taps
    if nd < 4:
        core = np.concatenate([core, np.zeros((n, J, 4 - nd))], axis=2)
    gain = np.zeros((n, 4))
    gain[:, :nd] = np.sqrt((H0**2).sum(axis=0))
    for a in range(0, irregular.size, _CHUNK):
        r = irregular[a:a + _CHUNK]
        H = _estimators_cached(tw[r] - tw[r, half:half + 1], span, order, nd)  # (c, K, nd)
        core[r, :, :nd] = qw[r] @ H  # (c, J, nd)
        gain[r, :nd] = np.sqrt((H**2).sum(axis=1))
    out = np.moveaxis(core, 2, 0)  # (4, n, J) views
    return Derivatives(window, np.arange(m, m + n), out[0], out[1], out[2], out[3], gain, irregular)


def local_derivatives_direct(t_ms: np.ndarray, q: np.ndarray, window: int, order: int = 3) -> Derivatives:
    """``local_derivatives`` with every window compared with the typical spacing offset by
    offset and gathered (copied) before the estimators are applied: the reference."""
    window = max(order + 2, window | 1)
    q = np.asarray(q, dtype=np.float64)
    if q.ndim == 1:
        q = q[:, None]
    T, J = q.shape
    n = T - window + 1
    if n <= 0:
        return _empty(window, J)
    t = (np.asarray(t_ms, dtype=np.float64) - float(t_ms[0])) / 1000.0
    m = window // 2
    dt = float(np.median(np.diff(t)))
    span = (m + 0.5) * dt
    half = m + max(2, m // 2)
    K = 2 * half + 1
    tw, qw = _padded_windows(t, q, m, half, n)
    off = tw - tw[:, half:half + 1]
    out = np.zeros((4, n, J))
    gain = np.zeros((n, 4))
    nd = min(3, order) + 1
    typical = (np.arange(K) - half) * dt
    shared = np.all(np.abs(off - typical) < 1e-7, axis=1)
    H0 = _estimators(typical[None], span, order, nd)[0]  # (K, nd)
    rows = np.flatnonzero(shared)
    for a in range(0, rows.size, _CHUNK):
        r = rows[a:a + _CHUNK]
        out[:nd, r] = np.moveaxis(qw[r] @ H0, 2, 0)
    gain[rows, :nd] = np.sqrt((H0**2).sum(axis=0))
    rows = np.flatnonzero(~shared)
    for a in range(0, rows.size, _CHUNK):
        r = rows[a:a + _CHUNK]
        H = _estimators(off[r], span, order, nd)  # (c, K, nd)
        out[:nd, r] = np.moveaxis(qw[r] @ H, 2, 0)  # (c, J, nd) -> (nd, c, J)
        gain[r, :nd] = np.sqrt((H**2).sum(axis=1))
    return Derivatives(window, np.arange(m, m + n), out[0], out[1], out[2], out[3], gain, rows)


def _empty(window: int, J: int) -> Derivatives:
    empty = np.zeros((0, J))
    return Derivatives(window, np.zeros(0, np.int64), empty, empty, empty, empty, np.zeros((0, 4)), np.zeros(0, np.int64))


def _padded_windows(t: np.ndarray, q: np.ndarray, m: int, half: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tw, qw)``: (n, K) times and (n, J, K) positions of the ``K = 2 half + 1`` samples
    around each centre ``m + r``, padded at both ends (times far outside any window)."""
    J = q.shape[1]
    far = 1e6 + abs(float(t[-1]))  # padding: never inside a window
    tp = np.concatenate([np.full(half, -far), t, np.full(half, far)])
    qp = np.concatenate([np.zeros((half, J)), q, np.zeros((half, J))])
    # row r: centre sample m + r, i.e. padded index m + r + half, window starting at m + r
    K = 2 * half + 1
    tw = np.lib.stride_tricks.sliding_window_view(tp, K)[m:m + n]  # (n, K)
    qw = np.lib.stride_tricks.sliding_window_view(qp, K, axis=0)[m:m + n]  # (n, J, K)
    return tw, qw


def _irregular_rows(t: np.ndarray, gaps: np.ndarray, dt: float, tw: np.ndarray, typical: np.ndarray,
                    m: int, half: int, n: int) -> np.ndarray:
    """Rows whose window is not spaced like the typical one: some offset from the centre
    more than 1e-7 s from ``typical`` (``local_derivatives_direct``'s test). A window wholly
    inside the stream whose every gap is within ``tol = 1e-8 / half`` s of ``dt`` passes
    that test without being compared (its offsets are sums of at most ``half`` gaps: within
    ``half x tol`` plus rounding, far under 1e-7), so only the other windows (the ends, and
    those around a dropped or jittered sample) are compared offset by offset."""
    T = t.size
    tol = 1e-8 / half
    centre = np.arange(m, m + n)
    lo, hi = centre - half, centre + half  # the window's first and last sample
    sure = (lo >= 0) & (hi <= T - 1)
    if 0.0 < dt < 1e3:  # else (a degenerate or absurd spacing) every window is compared
        bad = np.concatenate([[0], np.cumsum(~(np.abs(gaps - dt) <= tol))])  # NaN counts as bad
        sure &= bad[np.clip(hi, 0, T - 1)] == bad[np.clip(lo, 0, T - 1)]
    else:
        sure[:] = False
    check = np.flatnonzero(~sure)
    if check.size == 0:
        return check
    off = tw[check] - tw[check, half:half + 1]
    return check[~np.all(np.abs(off - typical) < 1e-7, axis=1)]


def _estimators(off: np.ndarray, span: float, order: int, nd: int) -> np.ndarray:
    """(c, K, nd): for windows with time offsets ``off`` (c, K) from their centre (s), the
    least-squares estimators of derivatives 0..nd-1 at the centre (polynomial of ``order``)
    from the samples within ``±span`` (zero weight on the others)."""
    inside = np.abs(off) <= span * (1 + 1e-9)
    scale = np.maximum(np.where(inside, np.abs(off), 0.0).max(axis=1), 1e-9)  # to [-1, 1]: well conditioned
    V = np.where(inside, off / scale[:, None], 0.0)[:, :, None] ** np.arange(order + 1) * inside[:, :, None]
    Vt = np.swapaxes(V, 1, 2)
    gram = Vt @ V + 1e-12 * np.eye(order + 1)  # a window too sparse to fit stays finite
    coef = np.linalg.solve(gram, Vt)[:, :nd, :]  # (c, nd, K)
    fact = np.array([math.factorial(d) for d in range(nd)], dtype=np.float64)
    return np.swapaxes(coef * (fact[:, None] / scale[:, None, None] ** np.arange(nd)[:, None]), 1, 2)


_CACHED_ROWS = 32  # estimators of at most this many windows at once are kept (the typical
# one, a stream's end windows); a jittered stream's many distinct windows are solved each time


def _estimators_cached(off: np.ndarray, span: float, order: int, nd: int) -> np.ndarray:
    """``_estimators(off, span, order, nd)``, kept for the next episode when ``off`` has
    few rows: every stream on the same clock fits the same typical window and the same
    end windows, and solving them costs more than applying them to a short episode. The
    key is the offsets inside the span (the others, padding included, do not enter the
    estimator): the same numbers in, the same estimator out, bit for bit. Read-only."""
    if off.shape[0] > _CACHED_ROWS:
        return _estimators(off, span, order, nd)
    inside = np.abs(off) <= span * (1 + 1e-9)
    masked = np.where(inside, off, np.inf)  # outside: excluded by _estimators as before
    return _estimators_by_key(masked.tobytes(), masked.shape, float(span), order, nd)


@functools.lru_cache(maxsize=256)
def _estimators_by_key(offsets: bytes, shape: tuple[int, int], span: float, order: int, nd: int) -> np.ndarray:
    H = _estimators(np.frombuffer(offsets, dtype=np.float64).reshape(shape), span, order, nd)
    H.setflags(write=False)
    return H


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
    gaps = np.diff(t)
    dt = float(np.median(gaps)) or 1.0
    # on a uniform clock of whole numbers (every gap the same: the pairwise differences in
    # every window are the same exact integers) every window has the same weights: computed
    # once, bit for bit what each window would compute
    uniform = bool(np.all(gaps == gaps[0])) and bool(np.all(t == np.round(t))) and float(np.abs(t).max()) < 2.0**52
    w = _divided_difference_weights(tw[:1] if uniform else tw, dt)
    qw = np.lib.stride_tricks.sliding_window_view(q, k, axis=0)  # (n, J, k)
    r = np.einsum("nk,njk->nj", np.broadcast_to(w, (qw.shape[0], k)) if uniform else w, qw)
    return _MAD_TO_SIGMA * np.median(np.abs(r, out=r), axis=0)


def _divided_difference_weights(tw: np.ndarray, dt: float) -> np.ndarray:
    """(n, k) weights of the ``k - 1``-th divided difference of each window of times
    ``tw`` (n, k), scaled to unit gain: white noise of sigma in, sigma out."""
    k = tw.shape[1]
    diff = (tw[:, :, None] - tw[:, None, :]) / dt  # in units of the usual spacing: no overflow
    idx = np.arange(k)
    diff[:, idx, idx] = 1.0
    w = 1.0 / diff.prod(axis=2)  # (n, k) divided-difference weights
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))  # unit gain: white noise sigma -> sigma
    return w
