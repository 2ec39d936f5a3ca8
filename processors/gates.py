"""Imports every gate module so that each registers itself, and names their order.

``GATE_ORDER`` is the one statement of the cheapest-first order of gates A–E: the stream
chain, ``kibotos verify`` and reports follow it (``processors.base.gates``)."""

from processors import (
    gate_a_integrity,
    gate_b_timestamps,
    gate_c_sync,
    gate_d_limits,
    gate_e_plausibility,
)

GATE_ORDER: tuple[str, ...] = (
    gate_a_integrity.GATE_ID,
    gate_b_timestamps.GATE_ID,
    gate_c_sync.GATE_ID,
    gate_d_limits.GATE_ID,
    gate_e_plausibility.GATE_ID,
)
