"""SR / GSR (README "XMimic: metrics").

An episode replays one clip from its first frame (no DI, DR, pushes or early termination)
up to the end of carry. It succeeds when, at the last frame, the box is within
``final_height_tolerance_m`` of the reference box's height (HumanX's cargo-pickup
criterion) and within ``max_final_box_xy_error_m`` of it in the plane, and the palms'
mean position error in the box frame over the frames the reference holds the box is below
``max_mean_hand_box_error_m`` — against the clip's hand-box relation or against where the
reference body puts the palms, the closer of the two (they differ only on a held-out
variant, whose box moves while its reference body does not).

SR: the success rate on the training clips. GSR: on held-out variants of them (box sizes,
positions and yaws outside XGen's augmentation ranges, config ``eval.heldout``). Every
report carries the baselines: the reference replayed open-loop by PD (zero residual) and
zero torque (every actuator off)."""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rsl_rl.models import MLPModel

from kibotos.xmimic.clips import Clip, XMimicError, heldout_variants
from kibotos.xmimic.config import XMimicConfig
from kibotos.xmimic.env import XMimicEnv
from kibotos.xmimic.train import read_checkpoint

BASELINES = ("reference_pd", "zero_torque")


@dataclass
class ClipResult:
    clip: str
    success: bool
    final_height_error_m: float
    final_xy_error_m: float
    mean_hand_box_error_m: float


@dataclass
class SetResult:
    rate: float
    clips: list[ClipResult] = field(default_factory=list)


@dataclass
class EvalReport:
    policy: str
    config_version: str
    sr: SetResult
    gsr: SetResult | None
    baselines: dict[str, dict[str, float | None]] = field(default_factory=dict)
    # per-clip outcomes of each baseline: {baseline: {"sr": [ClipResult], "gsr": [...]}}
    # (the eval rows carry the reference's outcome on the same clip next to the policy's)
    baseline_clips: dict[str, dict[str, list[ClipResult]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def load_policy(path: Path, env: XMimicEnv) -> tuple[MLPModel, dict]:
    """The actor of a checkpoint written by ``kibotos.xmimic.train`` (deterministic mean)."""
    try:
        saved, infos = read_checkpoint(path, map_location=env.device)
        groups = infos["obs_groups"]
        state = saved["actor_state_dict"]
    except (OSError, KeyError, TypeError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise XMimicError(f"{path}: not an XMimic checkpoint ({exc!r})", reason_code="xmimic_checkpoint_invalid") from exc
    if infos.get("num_actions") != env.num_actions:
        raise XMimicError(f"{path}: policy for {infos.get('num_actions')} joints, task has {env.num_actions}",
                          reason_code="xmimic_checkpoint_mismatch")
    hidden = [state[k].shape[0] for k in sorted(state, key=_layer_order) if k.startswith("mlp.") and k.endswith(".weight")][:-1]
    actor = MLPModel(env.get_observations(), {"actor": groups}, "actor", env.num_actions, hidden_dims=hidden,
                     activation="elu", obs_normalization=True,
                     distribution_cfg={"class_name": "GaussianDistribution", "init_std": 1.0})
    actor.load_state_dict(state)
    actor.eval()
    return actor.to(env.device), infos


def _layer_order(key: str) -> int:
    parts = key.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0


def run_episodes(clips: list[Clip], cfg: XMimicConfig, *, policy_path: Path | None = None, baseline: str | None = None,
                 task: str | None = None, device: str = "cpu", backend: str | None = None) -> SetResult:
    """One episode per clip (batched), with the policy at ``policy_path`` or a baseline."""
    if not clips:
        return SetResult(rate=float("nan"))
    env = XMimicEnv(clips, cfg, task=task, num_envs=len(clips), device=device, backend=backend, training=False)
    actor = None
    if policy_path is not None:
        actor, _ = load_policy(policy_path, env)
    elif baseline == "zero_torque":
        env.sim.set_torque_enabled(False)
    elif baseline != "reference_pd":
        raise XMimicError(f"unknown baseline {baseline!r}", reason_code="xmimic_baseline_invalid")
    results: dict[int, ClipResult] = {}
    obs = env.get_observations()
    with torch.inference_mode():
        for _ in range(env.max_episode_length + 1):
            act = actor(obs) if actor is not None else torch.zeros(env.num_envs, env.num_actions, device=device)
            obs, _, _, extras = env.step(act)
            out = extras.get("episode_outcome")
            if out is not None:
                for j, e in enumerate(out["env"].tolist()):
                    results[e] = ClipResult(clip=clips[e].name, success=bool(out["success"][j]),
                                            final_height_error_m=float(out["final_height_error_m"][j]),
                                            final_xy_error_m=float(out["final_xy_error_m"][j]),
                                            mean_hand_box_error_m=float(out["mean_hand_box_error_m"][j]))
            if len(results) == len(clips):
                break
    rows = [results[i] for i in sorted(results)]
    return SetResult(rate=sum(r.success for r in rows) / len(clips), clips=rows)


def evaluate(clips: list[Clip], cfg: XMimicConfig, *, policy_path: Path | None = None, task: str | None = None,
             device: str = "cpu", backend: str | None = None, heldout: bool = True,
             baselines: tuple[str, ...] = BASELINES) -> EvalReport:
    kw: dict[str, Any] = dict(task=task, device=device, backend=backend)
    variants = heldout_variants(clips, cfg.eval.heldout) if heldout else []
    name = str(policy_path) if policy_path else "reference_pd"
    sr = run_episodes(clips, cfg, policy_path=policy_path, baseline=None if policy_path else "reference_pd", **kw)
    gsr = run_episodes(variants, cfg, policy_path=policy_path, baseline=None if policy_path else "reference_pd",
                       **kw) if variants else None
    base, base_clips = {}, {}
    for b in baselines:
        if b == "reference_pd" and policy_path is None:
            base[b] = {"sr": sr.rate, "gsr": gsr.rate if gsr else None}
            base_clips[b] = {"sr": sr.clips, "gsr": gsr.clips if gsr else []}
            continue
        b_sr = run_episodes(clips, cfg, baseline=b, **kw)
        b_gsr = run_episodes(variants, cfg, baseline=b, **kw) if variants and b == "reference_pd" else None
        base[b] = {"sr": b_sr.rate, "gsr": b_gsr.rate if b_gsr else None}
        base_clips[b] = {"sr": b_sr.clips, "gsr": b_gsr.clips if b_gsr else []}
    return EvalReport(policy=name, config_version=cfg.config_version, sr=sr, gsr=gsr, baselines=base,
                      baseline_clips=base_clips)


def write_report(report: EvalReport, path: Path) -> None:
    Path(path).write_text(json.dumps(report.to_dict(), indent=2))
