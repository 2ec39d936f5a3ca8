"""Derivatives on the real timestamps and the white-noise estimate (processors.derivatives)."""

from __future__ import annotations

import numpy as np
import pytest

from processors.derivatives import (
    _divided_difference_weights,
    local_derivatives,
    local_derivatives_direct,
    noise_sigma,
    window_samples,
)
from processors.signals import savgol_derivatives


def _irregular_times(n: int, rng: np.random.Generator, dt_ms: float = 20.0, jitter_ms: int = 3,
                     drop: float = 0.05) -> np.ndarray:
    t = np.arange(n) * dt_ms + rng.integers(-jitter_ms, jitter_ms + 1, n)
    keep = np.ones(n, dtype=bool)
    keep[rng.choice(np.arange(2, n - 2, 3), int(drop * n), replace=False)] = False
    return np.sort(t[keep]).astype(np.float64)


def test_exact_on_cubics_at_irregular_times():
    """A cubic's derivatives come out exact whatever the spacing (dropped samples, jitter)."""
    rng = np.random.default_rng(0)
    t = _irregular_times(400, rng)
    s = t / 1000.0
    c = rng.normal(size=(4, 3))
    q = c[0] + c[1] * s[:, None] + c[2] * s[:, None] ** 2 + c[3] * s[:, None] ** 3
    d = local_derivatives(t, q, 13)
    sc = s[d.centre][:, None]
    np.testing.assert_allclose(d.vel, c[1] + 2 * c[2] * sc + 3 * c[3] * sc**2, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(d.acc, 2 * c[2] + 6 * c[3] * sc, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d.jerk, np.broadcast_to(6 * c[3], d.jerk.shape), rtol=1e-5)


def test_window_spans_time_not_samples():
    """A window covers ±(window // 2 + 1/2) x dt: a dropped sample leaves one sample fewer in
    it (a higher noise gain), not a longer window."""
    t = np.arange(100) * 20.0
    t = np.delete(t, 50)
    d = local_derivatives(t, np.zeros((t.size, 1)), 13)
    row = int(np.flatnonzero(d.centre == 47)[0])  # 20 ms before the hole
    assert d.gain[row, 1] > d.gain[0, 1]
    assert d.gain[0, 1] == pytest.approx(d.gain[-1, 1])


def test_uniform_spacing_is_savitzky_golay():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(200, 4))
    d = local_derivatives(np.arange(200) * 20.0, q, 13)
    for ours, theirs in zip((d.vel, d.acc, d.jerk), savgol_derivatives(q, 0.02, 13)):
        np.testing.assert_allclose(ours, theirs, atol=1e-8)


def test_dropped_samples_and_jitter_change_nothing():
    """The same smooth motion sampled on a clean grid and on an irregular one (5 % dropped,
    ±3 ms jitter): jerk within 10 % of its range (RMS 3 %; what is left is the cubic fit's
    own bias on this fast signal, shifted by where a drop falls); a fixed-dt filter is off by
    several times the range."""
    rng = np.random.default_rng(2)
    f = lambda s: np.sin(2 * np.pi * 0.7 * s) + 0.3 * np.sin(2 * np.pi * 1.3 * s)  # noqa: E731
    t0 = np.arange(400) * 20.0
    t1 = _irregular_times(400, rng)
    jerk0 = local_derivatives(t0, f(t0 / 1000.0)[:, None], 13)
    d1 = local_derivatives(t1, f(t1 / 1000.0)[:, None], 13)
    ref = np.interp(t1[d1.centre], t0[jerk0.centre], jerk0.jerk[:, 0])
    scale = np.abs(jerk0.jerk).max()
    err = d1.jerk[:, 0] - ref
    assert np.abs(err).max() < 0.10 * scale and np.sqrt(np.mean(err**2)) < 0.03 * scale
    _, _, fixed = savgol_derivatives(f(t1 / 1000.0)[:, None], 0.02, 13)
    assert np.abs(fixed[:, 0] - ref).max() > 2 * scale


def test_noise_gain_predicts_the_derivative_noise():
    """White noise of sigma on the positions puts sigma x gain on each derivative."""
    rng = np.random.default_rng(3)
    t = _irregular_times(4000, rng)
    d = local_derivatives(t, rng.normal(0.0, 0.02, (t.size, 8)), 13)
    for k, values in enumerate((d.smooth, d.vel, d.acc, d.jerk)):
        predicted = 0.02 * np.sqrt(np.mean(d.gain[:, k] ** 2))
        assert np.std(values) == pytest.approx(predicted, rel=0.1), k


@pytest.mark.parametrize("sigma", [0.0005, 0.01, 0.03, 0.25])
def test_noise_sigma_on_motion_dropped_samples_and_jitter(sigma):
    """Recovers the white-noise level under fast smooth motion on an irregular clock, and a
    teleport (a step of 1 rad) and a few glitches do not move it."""
    rng = np.random.default_rng(4)
    t = _irregular_times(600, rng)
    s = t[:, None] / 1000.0
    q = 0.8 * np.sin(2 * np.pi * 0.5 * s + np.arange(3)) + rng.normal(0.0, sigma, (t.size, 3))
    q[300:, 1] += 1.0
    q[[100, 200], 2] += 0.5
    assert noise_sigma(t, q) == pytest.approx(np.full(3, sigma), rel=0.15, abs=2e-4)


def test_short_streams():
    assert local_derivatives(np.arange(10) * 20.0, np.zeros((10, 2)), 13).vel.shape == (0, 2)
    assert noise_sigma(np.arange(3) * 20.0, np.zeros((3, 2))).tolist() == [0.0, 0.0]
    assert window_samples(240, 20) == 13 and window_samples(240, 2) == 121 and window_samples(10, 20) == 5


@pytest.mark.parametrize("clock", ["uniform", "jitter", "dropped", "sub_ns_noise", "late_start"])
def test_shared_estimator_path_equals_the_direct_one(clock):
    """``local_derivatives`` (typical windows through one strided correlation, only the
    others compared and solved) against ``local_derivatives_direct`` (every window compared
    offset by offset, gathered, solved): the same gains bit for bit, the same rows, values
    equal to rounding, NaN where the reference has NaN; windows 5 to 25, orders 2 and 3."""
    rng = np.random.default_rng(5)
    for trial in range(12):
        n, J = int(rng.integers(5, 300)), int(rng.integers(1, 5))
        t = np.arange(n) * float(rng.choice([2.0, 20.0, 33.3]))
        if clock == "jitter":
            t = np.sort(t + rng.integers(-3, 4, n))
        elif clock == "dropped":
            t = np.delete(t, rng.choice(n, n // 10, replace=False))
        elif clock == "sub_ns_noise":  # below the 1e-7 s spacing tolerance
            t = t + rng.normal(0.0, 1e-6, n)
        elif clock == "late_start":
            t = t + 1.7e9
        q = np.cumsum(rng.normal(size=(t.size, J)), axis=0)
        if trial == 3 and t.size > 2:
            q[t.size // 2, 0] = np.nan
        for window in (5, 13, 25):
            for order in (2, 3):
                a, b = local_derivatives(t, q, window, order), local_derivatives_direct(t, q, window, order)
                assert a.window == b.window and np.array_equal(a.centre, b.centre)
                np.testing.assert_array_equal(a.gain, b.gain)
                np.testing.assert_array_equal(a.irregular, b.irregular)
                for ours, ref in zip((a.smooth, a.vel, a.acc, a.jerk), (b.smooth, b.vel, b.acc, b.jerk)):
                    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
                    scale = max(float(np.nanmax(np.abs(ref), initial=0.0)), 1e-300)
                    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12 * scale)


def test_noise_sigma_on_a_uniform_clock_uses_each_windows_weights():
    """The uniform-clock path (one set of divided-difference weights for every window)
    gives what each window's own weights give, and a clock off by one sample takes the
    general path with the same answer away from it."""
    rng = np.random.default_rng(6)
    t = np.arange(500) * 20.0 + 123_000.0
    q = np.cumsum(rng.normal(size=(t.size, 3)), axis=0) * 0.01 + rng.normal(0.0, 0.01, (t.size, 3))
    tw = np.lib.stride_tricks.sliding_window_view(t, 5)
    w = _divided_difference_weights(tw, 20.0)
    r = np.einsum("nk,njk->nj", w, np.lib.stride_tricks.sliding_window_view(q, 5, axis=0))
    np.testing.assert_allclose(noise_sigma(t, q), 1.4826 * np.median(np.abs(r), axis=0), rtol=1e-13)
    shifted = t.copy()
    shifted[250] += 0.5
    assert noise_sigma(shifted, q) == pytest.approx(noise_sigma(t, q), rel=0.02)
