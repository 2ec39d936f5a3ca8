"""Attribution: who contributed what to a dataset version or a policy, and the points it
earns them (rule in ``kibotos/config/datasets.yaml``; its ``config_version`` is the rule
version every entry records).

Rule ``attribution-2026.12.2``:

* **publication** of dataset version ``v`` pays, per miner, ``points_per_episode * S``
  summed over the episodes ``v`` *adds* (an episode is paid once per dataset: later
  versions carry it without paying again), less what the episodes ``v`` *removes* had
  earned (a verdict revised to rejected), plus the difference ``points_per_episode *
  (S_new - S_old)`` for the episodes ``v`` *revises* (a verdict revised to accepted with
  another S, e.g. after reconciliation). An episode's attribution in a dataset thus always
  sums to what its current S earns, and what an earlier version paid is never rewritten
  (versions and their entries are immutable). One entry per (dataset, version, miner).
* a **policy that passes evaluation** shares ``policy_pass_pool`` among the miners of the
  distinct episodes of the dataset versions it trained on, in proportion to their S sum.
  One entry per (policy, miner); a failed evaluation pays nothing.

Entry ids are uuid5 of the dataset/version/miner (or policy/miner) in the ledger's
namespace, so a republished version or a replayed evaluation writes the same ids: the
ledger (a ReplacingMergeTree keyed by ``entry_id``) stores each payment once. An unscored
episode (S unknown) weighs 0.5, the neutral value.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from kibotos.datasets.config import DatasetsConfig, default_config
from kibotos.datasets.episode import Episode

# the ledger's id namespace (streams.stages.LEDGER_NAMESPACE): one id space for payments
LEDGER_NAMESPACE = uuid.UUID("6f1d3c52-7a0e-4b8e-9a57-0c1f9d8e2b41")
UNSCORED_WEIGHT = 0.5
LEDGER_KIND = "attribution"


def weight(ep: Episode) -> float:
    return UNSCORED_WEIGHT if ep.score is None else float(ep.score)


def episode_points(ep: Episode, cfg: DatasetsConfig | None = None) -> float:
    """What publication pays for one added episode."""
    cfg = cfg or default_config()
    return round(cfg.attribution.points_per_episode * weight(ep), 6)


def publication_entry_id(dataset: str, version: int, miner_id: str) -> str:
    return str(uuid.uuid5(LEDGER_NAMESPACE, f"attribution:dataset:{dataset}:v{version}:{miner_id}"))


def policy_entry_id(policy_id: str, miner_id: str) -> str:
    return str(uuid.uuid5(LEDGER_NAMESPACE, f"attribution:policy:{policy_id}:{miner_id}"))


@dataclass
class MinerShare:
    miner_id: str
    episodes: int = 0
    score_sum: float = 0.0
    reward: float = 0.0
    points: float = 0.0  # attribution points

    def as_dict(self, total_weight: float) -> dict:
        return {"miner_id": self.miner_id, "episodes": self.episodes, "score_sum": round(self.score_sum, 6),
                "share": round(self.score_sum / total_weight, 6) if total_weight else 0.0,
                "reward": round(self.reward, 6), "attribution_points": round(self.points, 6)}


def shares(episodes: Iterable[Episode]) -> list[dict]:
    """Each miner's share of ``episodes`` (S-weighted), highest first; streams."""
    by: dict[str, MinerShare] = {}
    seen: set[str] = set()
    for ep in episodes:
        if ep.submission_id in seen:
            continue
        seen.add(ep.submission_id)
        m = by.setdefault(ep.miner_id, MinerShare(ep.miner_id))
        m.episodes += 1
        m.score_sum += weight(ep)
        m.reward += ep.reward
        m.points += ep.attribution_points
    total = sum(m.score_sum for m in by.values())
    return sorted((m.as_dict(total) for m in by.values()), key=lambda d: (-d["share"], d["miner_id"]))


def _entry(entry_id: str, *, dataset: str | None, version: int, policy_id: str | None, miner: MinerShare,
           kind: str, share: float, points: float, rule: str, created_at: int) -> dict:
    return {"entry_id": entry_id, "dataset": dataset, "version": version, "policy_id": policy_id,
            "miner_id": miner.miner_id, "kind": kind, "episodes": miner.episodes,
            "score_sum": round(miner.score_sum, 6), "share": round(share, 6), "points": round(points, 6),
            "rule_version": rule, "created_at": created_at}


def publication_entries(dataset: str, version: int, added: Iterable[Episode], removed: Iterable[Episode],
                        created_at: int, cfg: DatasetsConfig | None = None,
                        revised: Iterable[tuple[Episode, Episode]] = ()) -> list[dict]:
    """The attribution entries of publishing ``version``: ``added`` carry the points they
    were assigned (``attribution_points``), ``removed`` give theirs back, ``revised``
    (old, new) pairs pay or take back the difference."""
    cfg = cfg or default_config()
    by: dict[str, MinerShare] = {}
    for ep, sign in [*((e, 1) for e in added), *((e, -1) for e in removed)]:
        m = by.setdefault(ep.miner_id, MinerShare(ep.miner_id))
        m.episodes += sign
        m.score_sum += sign * weight(ep)
        m.points += sign * ep.attribution_points
    for old, new in revised:
        m = by.setdefault(new.miner_id, MinerShare(new.miner_id))
        m.score_sum += weight(new) - weight(old)
        m.points += new.attribution_points - old.attribution_points
    total = sum(max(0.0, m.score_sum) for m in by.values())
    return [_entry(publication_entry_id(dataset, version, m.miner_id), dataset=dataset, version=version,
                   policy_id=None, miner=m, kind="dataset_publication",
                   share=(m.score_sum / total) if total else 0.0, points=m.points, rule=cfg.config_version,
                   created_at=created_at)
            for m in sorted(by.values(), key=lambda m: m.miner_id)
            if abs(m.points) >= cfg.attribution.min_entry_points]


def policy_entries(policy_id: str, episodes: Iterable[Episode], passed: bool, created_at: int,
                   cfg: DatasetsConfig | None = None) -> list[dict]:
    """The attribution entries of a policy's evaluation: the pool split by S share over
    the distinct episodes it trained on; none when it did not pass."""
    cfg = cfg or default_config()
    if not passed:
        return []
    rows = shares(episodes)
    pool = cfg.attribution.policy_pass_pool
    out = []
    for r in rows:
        points = pool * r["share"]
        if points < cfg.attribution.min_entry_points:
            continue
        m = MinerShare(r["miner_id"], r["episodes"], r["score_sum"])
        out.append(_entry(policy_entry_id(policy_id, r["miner_id"]), dataset=None, version=0, policy_id=policy_id,
                          miner=m, kind="policy_evaluation", share=r["share"], points=points,
                          rule=cfg.config_version, created_at=created_at))
    return out


def ledger_entry(entry: dict) -> dict:
    """The ``ledger.entries`` record of an attribution entry (kind ``attribution``);
    ``submission_id`` names what was attributed: ``dataset:<name>@v<n>`` or ``policy:<id>``."""
    ref = f"policy:{entry['policy_id']}" if entry["policy_id"] else f"dataset:{entry['dataset']}@v{entry['version']}"
    return {"entry_id": entry["entry_id"], "miner_id": entry["miner_id"], "submission_id": ref, "kind": LEDGER_KIND,
            "points": entry["points"], "config_version": entry["rule_version"], "created_at": entry["created_at"],
            "score": None, "weights_json": None,
            "components_json": json.dumps({"attribution": entry["kind"], "episodes": entry["episodes"],
                                           "share": entry["share"], "score_sum": entry["score_sum"]}, sort_keys=True)}
