"""Gate E's shortcuts give what the sample-by-sample forms give (issue 17): the noise
allowance computed once for the rows fitted with the typical window, and the teleport
masks skipped when no step or residual is above ``teleport_min_rad`` plus its noise."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from processors.derivatives import local_derivatives
from processors.gate_e_plausibility import _noise_allowance, _teleports

CFG = SimpleNamespace(noise_z=3.0, teleport_min_rad=0.15, teleport_vel_factor=1.5, teleport_acc_factor=3.0)


def _teleports_direct(ts, q, sigma, vmax, amax, cfg):
    step = np.diff(q, axis=0)
    gap = np.diff(ts).astype(np.float64)[:, None] / 1000.0
    z = cfg.noise_z * sigma[None, :]
    by_speed = (np.abs(step) > cfg.teleport_min_rad + np.sqrt(2.0) * z) & \
               (np.abs(step) > cfg.teleport_vel_factor * vmax * gap + np.sqrt(2.0) * z)
    jump = np.zeros_like(step)
    if step.shape[0] >= 3:
        speed = step / gap
        jump[1:-1] = step[1:-1] - gap[1:-1] * 0.5 * (speed[:-2] + speed[2:])
    a = np.abs(jump)
    peak = np.ones_like(a, dtype=bool)
    peak[1:] &= a[1:] >= a[:-1]
    peak[:-1] &= a[:-1] >= a[1:]
    by_acc = peak & (a > cfg.teleport_min_rad + np.sqrt(5.0) * z) & \
        (a > cfg.teleport_acc_factor * amax * gap**2 + np.sqrt(5.0) * z)
    return by_speed | by_acc, a, np.abs(step)


@pytest.mark.parametrize("event", ["none", "teleport", "splice", "nan"])
def test_teleport_masks_equal_the_direct_form(event):
    rng = np.random.default_rng(8)
    for _ in range(40):
        T, J = int(rng.integers(2, 300)), int(rng.integers(1, 6))
        ts = np.cumsum(rng.integers(18, 23, T)).astype(np.int64)
        q = np.cumsum(rng.normal(0.0, 0.01, (T, J)), axis=0)
        if event == "teleport" and T > 4:
            q[T // 2:, rng.integers(J)] += rng.uniform(0.1, 0.5)  # near the threshold and beyond
        elif event == "splice" and T > 4:
            q[T // 2:, rng.integers(J)] += 0.4 * np.arange(T - T // 2) * 0.02
        elif event == "nan":
            q[rng.integers(T), rng.integers(J)] = np.nan
        sigma, vmax, amax = rng.uniform(0.0, 0.01, J), rng.uniform(0.5, 3.0, J), rng.uniform(5.0, 20.0, J)
        for ours, ref in zip(_teleports(ts, q, sigma, vmax, amax, CFG), _teleports_direct(ts, q, sigma, vmax, amax, CFG)):
            np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("clock", ["uniform", "jitter"])
def test_noise_allowance_equals_the_row_by_row_form(clock):
    rng = np.random.default_rng(9)
    t = np.arange(400) * 20.0
    if clock == "jitter":
        t = np.sort(t + rng.integers(-3, 4, t.size))
    d = local_derivatives(t, np.cumsum(rng.normal(size=(t.size, 5)), axis=0), 13)
    assert (d.irregular.size > 6) == (clock == "jitter")  # the 6 end windows on any clock
    z_sigma, bound = 3.0 * rng.uniform(0.0, 0.02, (1, 5)), rng.uniform(0.5, 3.0, 5)
    for order in (1, 2, 3):
        np.testing.assert_array_equal(_noise_allowance(d, order, z_sigma, bound),
                                      z_sigma * d.gain[:, order, None] / bound)
