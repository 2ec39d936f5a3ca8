"""Imports every gate module so that each registers itself, in cheapest-first order."""

from processors import (  # noqa: F401
    gate_a_integrity,
    gate_b_timestamps,
    gate_c_sync,
    gate_d_limits,
    gate_e_plausibility,
)
