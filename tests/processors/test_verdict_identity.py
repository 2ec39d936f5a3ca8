"""Verdicts and metrics of gates A-E on the sample set stay what they were before gate C
was optimised (issue 17): same passed / reason code / flags per gate, metrics within
the tolerances of ``tests.processors.verdict_identity`` (time estimates ±1 ms, other
floats 1e-6 relative). The fixture was generated from the code before any optimisation;
regenerate it only for an intended change (``python -m tests.processors.verdict_identity
--write``)."""

from __future__ import annotations

import copy
import json

import pytest

from tests.processors.verdict_identity import FIXTURE, compute, differences


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def actual() -> dict:
    return compute()


def test_the_sample_set_is_the_one_the_fixture_was_made_from(expected, actual):
    assert set(actual) == set(expected)
    changed = [d for name in expected for d in differences(expected[name]["digest"], actual[name]["digest"], name)]
    assert not changed, ("the sample generator makes other episodes, the verdicts cannot be compared "
                         "(regenerate the fixture from the code before the gate change):\n" + "\n".join(changed))


def test_every_verdict_and_metric_is_unchanged(expected, actual):
    diffs = [d for name in expected for d in differences(expected[name], actual[name], name)
             if not d.startswith(f"{name}.digest")]
    assert not diffs, "\n".join(diffs[:40])


def test_the_comparison_catches_a_changed_metric_or_verdict(expected):
    # a time estimate past 1 ms, a float past 1e-6 relative, a reason code, a flag
    tampered = copy.deepcopy(expected)
    case = next(n for n, v in tampered.items() if v["verdict"] == "accepted")
    gate_c = tampered[case]["gates"]["gate_c_sync"]
    gate_c["metrics"]["estimated_offset_ms"] += 1.5
    gate_c["metrics"]["sync_confidence"] *= 1 + 1e-5
    gate_c["flags"] = [*gate_c["flags"], "made_up"]
    tampered[case]["gates"]["gate_a_integrity"]["reason_code"] = "shape_mismatch"
    diffs = differences(expected, tampered)
    assert len(diffs) == 4, diffs
    for key in ("estimated_offset_ms", "sync_confidence", "flags", "reason_code"):
        assert any(key in d for d in diffs), (key, diffs)
    # within the tolerances: no difference
    close = copy.deepcopy(expected)
    close[case]["gates"]["gate_c_sync"]["metrics"]["estimated_offset_ms"] += 0.9
    close[case]["gates"]["gate_c_sync"]["metrics"]["sync_confidence"] *= 1 + 1e-7
    assert differences(expected, close) == []
