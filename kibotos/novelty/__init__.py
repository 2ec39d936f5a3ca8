"""Novelty and duplication (design §8) and synthetic-artifact detection (design §11).

::

    bundle ──scan (one video pass)──► fingerprint ──record──► kibotos.novelty_index (ClickHouse)
       │                                  │                         │
       │                                  └──── candidate SQL ◄─────┘ same-miner / global windows
       └──► artifact heuristics ─────────────────┐
                                                  ▼
                               GateResult(gate="novelty", metrics.s_novel, ...)

``NoveltyChecker(client, config).check(view, submission_id, miner_id, now_ms)`` is the
whole stage; ``fingerprint`` / ``index`` / ``artifacts`` are its parts.
"""

from kibotos.novelty.artifacts import analyze_artifacts
from kibotos.novelty.checker import GATE_ID, REASON_ARTIFACTS, REASON_COPIED, REASON_DUPLICATE, NoveltyChecker
from kibotos.novelty.config import NoveltyConfig, load_novelty_config, parse_novelty_config
from kibotos.novelty.fingerprint import Fingerprint, fingerprint_bundle

__all__ = ["GATE_ID", "REASON_ARTIFACTS", "REASON_COPIED", "REASON_DUPLICATE", "Fingerprint", "NoveltyChecker", "NoveltyConfig",
           "analyze_artifacts", "fingerprint_bundle", "load_novelty_config", "parse_novelty_config"]
