"""Training: the teacher is rsl-rl's PPO on privileged observations; the students are
PPO plus a DAgger-style behaviour-cloning loss towards the frozen teacher (``PPOBC``: the
student acts, the teacher labels the states the student visits), in NEP or MoCap
observation mode. rsl-rl's own ``Distillation`` is pure BC without PPO's loss, so the
student subclasses its PPO instead.

Checkpoints: every ``checkpoint.every_iterations`` to ``<run>/checkpoints/model_<it>.pt``
(atomic rename) and, with an object store, under ``xmimic/<run id>/``; a run restarted
on the same directory resumes from its last checkpoint."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from rsl_rl.algorithms import PPO
from rsl_rl.models import MLPModel
from rsl_rl.runners import OnPolicyRunner

from kibotos.xmimic.clips import Clip, XMimicError
from kibotos.xmimic.config import XMimicConfig
from kibotos.xmimic.env import XMimicEnv

OBS_GROUPS = {
    "teacher": ["proprio", "reference", "privileged"],
    "nep": ["proprio", "reference"],
    "mocap": ["proprio", "reference", "mocap"],
}
ROLES = ("teacher", "nep", "mocap")


class PPOBC(PPO):
    """PPO with an added behaviour-cloning loss towards a frozen teacher on the student's
    own rollouts (DAgger)."""

    def __init__(self, *args, bc_coef: float = 1.0, bc_epochs: int = 1, bc_learning_rate: float = 1e-3, **kwargs):
        super().__init__(*args, **kwargs)
        self.bc_coef, self.bc_epochs = bc_coef, bc_epochs
        # BC has its own optimiser: PPO's adaptive step size and moments are for its own loss
        self.bc_optimizer = torch.optim.Adam(self.actor.parameters(), lr=bc_learning_rate)
        self.teacher: MLPModel | None = None
        self.last_bc_loss = float("nan")

    def update(self) -> dict[str, float]:
        """PPO's update, then behaviour cloning on the same rollout (the states the student
        visited, labelled by the teacher). ``bc`` reports the student-teacher action error
        on this rollout before the BC steps."""
        obs = self.storage.observations.flatten(0, 1).clone() if self.teacher is not None else None
        out = super().update()
        if obs is None or self.bc_coef <= 0:
            return out
        with torch.no_grad():
            target = cast(MLPModel, self.teacher)(obs)  # obs is set only with a teacher
            out["bc"] = float(((self.actor(obs) - target) ** 2).mean())
        for _ in range(self.bc_epochs):
            for idx in torch.randperm(len(target), device=target.device).chunk(self.num_mini_batches):
                loss = self.bc_coef * ((self.actor(obs[idx]) - target[idx]) ** 2).mean()
                self.bc_optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.actor.parameters(), self.max_grad_norm)
                self.bc_optimizer.step()
        self.last_bc_loss = out["bc"]
        return out


def runner_config(cfg: XMimicConfig, role: str) -> dict:
    t, s = cfg.teacher, cfg.student
    student = role != "teacher"
    model = lambda std: {"class_name": "MLPModel", "hidden_dims": list(t.hidden_dims), "activation": "elu",  # noqa: E731
                         "obs_normalization": True,
                         **({"distribution_cfg": {"class_name": "GaussianDistribution", "init_std": std}} if std else {})}
    alg = {"class_name": "kibotos.xmimic.train:PPOBC" if student else "PPO", "num_learning_epochs": t.num_learning_epochs,
           "num_mini_batches": t.num_mini_batches, "clip_param": 0.2, "gamma": t.gamma, "lam": t.lam,
           "value_loss_coef": 1.0, "entropy_coef": t.entropy_coef,
           "learning_rate": s.learning_rate if student else t.learning_rate, "max_grad_norm": 1.0,
           # students: a fixed step size (an adaptive one grows while the KL is small and
           # lets PPO pull the student away from the teacher faster than BC brings it back)
           "schedule": "fixed" if student else "adaptive", "desired_kl": t.desired_kl}
    if student:
        alg.update(bc_coef=s.bc_coef, bc_epochs=s.bc_epochs, bc_learning_rate=s.bc_learning_rate)
    return {"num_steps_per_env": t.num_steps_per_env, "save_interval": 10 ** 9, "check_for_nan": True,
            "obs_groups": {"actor": OBS_GROUPS[role], "critic": OBS_GROUPS["teacher"]},
            "algorithm": alg, "actor": model(s.init_noise_std if student else t.init_noise_std), "critic": model(None),
            "logger": "tensorboard"}


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    iterations: int
    resumed_from: int
    history: list[dict] = field(default_factory=list)
    env_steps: int = 0
    seconds: float = 0.0


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("model_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    return ckpts[-1] if ckpts else None


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """A checkpoint and what it recorded about its run: ``(saved, infos)``, ``infos`` being
    ``save_checkpoint``'s meta (``iteration`` from rsl-rl's ``iter`` where a checkpoint
    written by rsl-rl's own runner lacks it). Raises what ``torch.load`` raises, and
    ``TypeError`` for a file that holds something else than a checkpoint's dict."""
    saved = torch.load(Path(path), weights_only=False, map_location=map_location)
    if not isinstance(saved, dict):
        raise TypeError(f"a checkpoint is a dict, not {type(saved).__name__}")
    infos = dict(saved.get("infos") or {})
    if "iteration" not in infos and "iter" in saved:
        infos["iteration"] = saved["iter"]
    return saved, infos


def checkpoint_infos(path: Path) -> dict:
    """What a checkpoint recorded about its run (``read_checkpoint``'s ``infos``)."""
    return read_checkpoint(path)[1]


def load_teacher_actor(path: Path, obs, num_actions: int, cfg: XMimicConfig) -> MLPModel:
    saved, infos = read_checkpoint(path)
    if infos.get("role") != "teacher":
        raise XMimicError(f"{path} is not a teacher checkpoint", reason_code="xmimic_teacher_invalid")
    rc = runner_config(cfg, "teacher")["actor"]
    actor = MLPModel(obs, {"actor": OBS_GROUPS["teacher"]}, "actor", num_actions, hidden_dims=rc["hidden_dims"],
                     activation="elu", obs_normalization=True, distribution_cfg=rc["distribution_cfg"])
    actor.load_state_dict(saved["actor_state_dict"])
    actor.eval()
    return actor


def train(clips: list[Clip], cfg: XMimicConfig, run_dir: Path, *, role: str = "teacher", teacher: Path | None = None,
          task: str | None = None, num_envs: int | None = None, iterations: int | None = None, device: str = "cpu",
          backend: str | None = None, seed: int = 0, progress: Callable[[dict], None] | None = None,
          store=None, run_id: str | None = None, time_budget_s: float | None = None,
          extra_meta: dict | None = None) -> TrainResult:
    """Train ``role`` (teacher | nep | mocap) on ``clips``; resumes from ``run_dir``'s last
    checkpoint. ``progress(event)`` is called after every iteration."""
    if role not in ROLES:
        raise XMimicError(f"unknown role {role!r} (one of {ROLES})", reason_code="xmimic_role_invalid")
    if role != "teacher" and teacher is None:
        raise XMimicError("a student needs --teacher CHECKPOINT", reason_code="xmimic_teacher_missing")
    run_dir = Path(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    env = XMimicEnv(clips, cfg, task=task, num_envs=num_envs, device=device, backend=backend, training=True, seed=seed)
    rcfg = runner_config(cfg, role)
    with contextlib.redirect_stdout(io.StringIO()):  # rsl-rl prints its models and logs to stdout
        runner = OnPolicyRunner(env, rcfg, log_dir=None, device=device)
    if role != "teacher":
        runner.alg.teacher = load_teacher_actor(Path(cast(Path, teacher)), env.get_observations(), env.num_actions, cfg).to(device)
    total = iterations or (cfg.teacher.iterations if role == "teacher" else cfg.student.iterations)
    start = 0
    last = latest_checkpoint(run_dir)
    if last is not None:
        infos = runner.load(str(last), map_location=device) or {}
        start = int(infos.get("iteration", 0))
    meta = {"role": role, "config_version": cfg.config_version, "task": env.task_name, "backend": env.backend,
            "num_envs": env.num_envs, "clips": [c.clip_id for c in clips], "obs_groups": OBS_GROUPS[role],
            "num_actions": env.num_actions, "teacher": str(teacher) if teacher else None, "run_id": run_id,
            **(extra_meta or {})}  # e.g. the dataset versions trained on (the train job, README)
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2))
    losses: dict = {}
    update = runner.alg.update

    def capture():
        losses.clear()
        losses.update(update())
        return dict(losses)

    runner.alg.update = capture
    history: list[dict] = []
    ckpt = last
    t0 = time.monotonic()
    steps_per_it = env.num_envs * rcfg["num_steps_per_env"]
    it = start
    while it < total:
        runner.current_learning_iteration = it
        with contextlib.redirect_stdout(io.StringIO()):
            runner.learn(1)
        it += 1
        stats = env.stats.pop()
        event = {"iteration": it, "iterations": total, "role": role, "losses": dict(losses),
                 "success_rate": stats["success_rate"], "episodes": stats["episodes"],
                 "reward_terms": stats["reward_terms"], "env_steps": (it - start) * steps_per_it,
                 "seconds": time.monotonic() - t0}
        history.append(event)
        with open(run_dir / "progress.jsonl", "a") as f:
            f.write(json.dumps(event) + "\n")
        out_of_time = time_budget_s is not None and event["seconds"] >= time_budget_s
        if it % cfg.checkpoint.every_iterations == 0 or it == total or out_of_time:
            # the iteration's event rides in the checkpoint: a run resumed from it can publish it
            # again when its process died before publishing it (the train job does)
            ckpt = save_checkpoint(runner, run_dir, it, {**meta, "event": event}, store=store, run_id=run_id)
        if progress:
            progress(event)
        if out_of_time:
            break
    if ckpt is None:
        ckpt = save_checkpoint(runner, run_dir, it, meta, store=store, run_id=run_id)
    return TrainResult(run_dir=run_dir, checkpoint=ckpt, iterations=it, resumed_from=start, history=history,
                       env_steps=(it - start) * steps_per_it, seconds=time.monotonic() - t0)


def save_checkpoint(runner: OnPolicyRunner, run_dir: Path, it: int, meta: dict, store=None, run_id=None) -> Path:
    path = run_dir / "checkpoints" / f"model_{it}.pt"
    tmp = path.with_suffix(".pt.tmp")
    saved = runner.alg.save()
    saved["iter"] = it
    saved["infos"] = {**meta, "iteration": it}
    torch.save(saved, tmp)
    os.replace(tmp, path)  # a killed process never leaves a half-written checkpoint behind
    if store is not None:
        store.put_file(path, f"xmimic/{run_id or run_dir.name}/model_{it}.pt")
    return path
