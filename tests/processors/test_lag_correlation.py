"""Gate C's lag correlation (FFT and cumulative sums) equals the direct (lags x samples)
computation, and finds a known shift."""

from __future__ import annotations

import numpy as np
import pytest

from processors.signals import lag_correlation, lag_correlation_direct


@pytest.mark.parametrize("k, v", [(6000, 6150), (500, 430), (30, 12), (12, 300), (1, 5), (5, 1)])
def test_equals_the_direct_computation(k, v):
    rng = np.random.default_rng(k * 7 + v)
    s = rng.normal(size=k)
    e = np.convolve(rng.normal(size=v), np.ones(5) / 5, "same") + 3.0  # an offset: the variance path matters
    steps = np.arange(-200, 201)
    corr, n = lag_correlation(s, e, steps)
    ref, n_ref = lag_correlation_direct(s, e, steps)
    np.testing.assert_array_equal(n, n_ref)
    both = (n_ref > 1) & np.isfinite(ref)
    np.testing.assert_allclose(corr[both], ref[both], rtol=0, atol=1e-9)


def test_finds_a_known_shift_and_takes_the_direct_path_for_nan():
    rng = np.random.default_rng(1)
    e = np.convolve(rng.normal(size=3000), np.ones(9) / 9, "same")
    s = e[37:37 + 2500]  # s[k] = e[k + 37]
    steps = np.arange(-100, 101)
    corr, _ = lag_correlation(s, e, steps)
    assert steps[int(np.nanargmax(corr))] == 37
    assert corr[steps == 37][0] == pytest.approx(1.0, abs=1e-9)
    s_nan = s.copy()
    s_nan[5] = np.nan
    got, _ = lag_correlation(s_nan, e, steps)
    want, _ = lag_correlation_direct(s_nan, e, steps)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
