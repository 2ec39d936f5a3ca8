"""The candidate query's answers on a populated index (synthetic rows: unrelated
episodes and near-copies, ``synthetic_index.py``) against answers recorded from the query
as it was before its cost was cut (README "Novelty and duplication": one expression per
comparison, heavy arrays as subquery columns). Every field of every scope's best candidate
must agree: ids, counts and flags exactly, scores within 1e-9.

Re-record (only when the *meaning* of the query changes, with a config version bump):
``python -m tests.kibotos.novelty.test_candidate_query``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from infra.migrate import apply_migrations
from kibotos.novelty import index, load_novelty_config
from kibotos.warehouse import open_client
from tests.kibotos.novelty.synthetic_index import insert_rows, make_rows

pytestmark = pytest.mark.integration

RECORDED = Path(__file__).parent / "data" / "candidate_query_recorded.json"
ROWS, SEED = 120, 17
CFG = load_novelty_config().novelty


def queries(rows):
    """Rows spread over the index, each compared with all the rows before it."""
    return rows[6::9] + rows[-2:]


def answers(client, rows, find=index.find_candidates) -> dict:
    out = {}
    for r in queries(rows):
        best = find(client, r["submission_id"], r["created_at_ms"], r["fingerprint"].motion_variants, CFG)
        out[r["submission_id"]] = {scope: None if c is None else dataclasses.asdict(c) for scope, c in best.items()}
    return out


def seeded_index(path):
    client = open_client(f"chdb://{path}")
    apply_migrations(client)
    rows = make_rows(ROWS, CFG, seed=SEED)
    insert_rows(client, rows)
    return client, rows


def _differences(got: dict, want: dict) -> list[str]:
    out = []
    for sid in sorted(set(got) | set(want)):
        for scope in sorted(set(got.get(sid, {})) | set(want.get(sid, {}))):
            g, w = got.get(sid, {}).get(scope), want.get(sid, {}).get(scope)
            if (g is None) != (w is None):
                out.append(f"{sid} {scope}: {g} != {w}")
                continue
            for key in sorted(set(g or {}) | set(w or {})):
                a, b = (g or {}).get(key), (w or {}).get(key)
                same = (math.isclose(a, b, rel_tol=0, abs_tol=1e-9)
                        if isinstance(a, float) and isinstance(b, float) else a == b)
                if not same:
                    out.append(f"{sid} {scope}.{key}: {a!r} != {b!r}")
    return out


def test_recorded_answers_cover_what_the_query_decides():
    """The recording exercises every part of the query (else agreeing with it says little)."""
    best = [c for scopes in json.loads(RECORDED.read_text()).values() for c in scopes.values() if c]
    assert {c["trajectory_scale"] for c in best} - {1.0, None}, "a time-scaled best match"
    assert any(c["near_exact"] for c in best) and any(not c["near_exact"] for c in best)
    assert any(c["motion_corr"] is not None for c in best) and any(c["motion_corr"] is None for c in best)
    assert any(c["match"] >= 0.99 for c in best) and any(c["match"] <= 0.01 for c in best)
    assert any(0.01 < c[k] < 0.99 for c in best for k in ("match", "visual", "trajectory")), "between ramp ends"
    assert any(c["trajectory_corr"] is None for c in best), "pairs whose trajectories are not compared"
    assert {c["motion_variant"] for c in best if c["motion_variant"]} >= {"identity"}
    assert {s for scopes in json.loads(RECORDED.read_text()).values() for s, c in scopes.items() if c} == {
        "same_miner", "cross_miner", "cross_miner_later"}


def test_candidate_query_gives_the_recorded_answers(tmp_path):
    client, rows = seeded_index(tmp_path / "chdb")
    try:
        got = answers(client, rows)
    finally:
        client.close()
    want = json.loads(RECORDED.read_text())
    assert not _differences(json.loads(json.dumps(got)), want)


if __name__ == "__main__":  # record
    import tempfile

    client, rows = seeded_index(Path(tempfile.mkdtemp()) / "chdb")
    RECORDED.write_text(json.dumps(answers(client, rows), indent=1, sort_keys=True) + "\n")
    client.close()
