"""``kibotos bench train``: XMimic's CPU figures measured in one run.

- env-steps/s of the batched environment (MuJoCo backend, random residual actions) for 1
  and N environments;
- SR / GSR of the baselines (reference replayed open-loop by PD; zero torque);
- a teacher trained for ``--teacher-seconds`` of wall clock on N environments, then
  students (NEP and MoCap) for ``--student-seconds`` each, and their SR / GSR.

Results as JSON (``--json``); benchmarks/RESULTS.md records measured runs."""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def env_steps_per_s(clips, cfg, num_envs: int, steps: int, task: str | None = None) -> float:
    return env_step_rates(clips, cfg, num_envs, steps, task)[0]


def env_step_rates(clips, cfg, num_envs: int, steps: int, task: str | None = None) -> tuple[float, float]:
    """(env-steps/s of wall clock, CPU us per env-step summed over the process's threads).
    On a shared machine the second is the steadier figure: it does not count the time
    other processes hold the cores."""
    import torch

    from kibotos.xmimic.env import XMimicEnv

    env = XMimicEnv(clips, cfg, task=task, num_envs=num_envs, training=True)
    gen = torch.Generator().manual_seed(0)
    env.step(torch.zeros(num_envs, env.num_actions))
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        env.step(0.3 * torch.randn(num_envs, env.num_actions, generator=gen))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return num_envs * steps / wall, cpu / (num_envs * steps) * 1e6


def run_train_bench(clips_dir: Path | None, *, num_envs: int, teacher_seconds: float, student_seconds: float,
                    steps: int = 60, seed: int = 0, teacher: Path | None = None, out_dir: Path | None = None, tasks: tuple[str, ...] = ("arms_only",),
                    progress: Callable[[str], None] = lambda m: None) -> dict:
    import torch

    from kibotos.xmimic.clipgen import make_clip_set
    from kibotos.xmimic.clips import load_clips
    from kibotos.xmimic.config import load_xmimic_config
    from kibotos.xmimic.evaluate import evaluate
    from kibotos.xmimic.train import train

    cfg = load_xmimic_config()
    work = Path(out_dir or tempfile.mkdtemp(prefix="xmimic-bench-"))
    if clips_dir is None:
        progress("generating XGen clips ...")
        clips_dir = make_clip_set(work / "xgen")
    clips = load_clips(clips_dir)
    result: dict = {"config_version": cfg.config_version, "clips": len(clips), "num_envs": num_envs, "seed": seed,
                    "machine": {"python": platform.python_version(), "torch": torch.__version__,
                                "cpu": platform.processor() or platform.machine()},
                    "env_steps_per_s": {}, "cpu_us_per_env_step": {}, "baselines": {}, "policies": {}}
    for task in tasks:
        for n in (1, num_envs):
            progress(f"env-steps/s {task} with {n} env(s) ...")
            rate, cpu_us = env_step_rates(clips, cfg, n, steps, task)
            result["env_steps_per_s"][f"{task}/{n}"] = round(rate, 1)
            result["cpu_us_per_env_step"][f"{task}/{n}"] = round(cpu_us, 1)
    result["loadavg"] = _loadavg()
    progress("baselines ...")
    base = evaluate(clips, cfg, policy_path=None, baselines=("reference_pd", "zero_torque"))
    result["baselines"] = {"reference_pd": {"sr": base.sr.rate, "gsr": base.gsr.rate if base.gsr else None},
                           "zero_torque": base.baselines["zero_torque"]}
    if teacher is not None:  # a trained teacher: its figures, then the students from it
        from kibotos.xmimic.train import TrainResult, checkpoint_infos

        infos = checkpoint_infos(teacher)
        t = TrainResult(run_dir=Path(teacher).parent, checkpoint=Path(teacher), iterations=int(infos.get("iteration", 0)),
                        resumed_from=0, env_steps=int((infos.get("event") or {}).get("env_steps", 0)),
                        seconds=float((infos.get("event") or {}).get("seconds", 0.0)))
        result["teacher_checkpoint"] = str(teacher)
    elif teacher_seconds <= 0:
        return result
    else:
        progress(f"teacher: {teacher_seconds:.0f} s ...")
        t = train(clips, cfg, work / "teacher", role="teacher", num_envs=num_envs, iterations=10 ** 6, seed=seed,
                  time_budget_s=teacher_seconds, progress=lambda e: progress(
                      f"  teacher it {e['iteration']} {e['seconds']:.0f}s SR(train) {e['success_rate']}"))
    rep = evaluate(clips, cfg, policy_path=t.checkpoint, baselines=())
    result["policies"]["teacher"] = _summary(t, rep)
    for mode in ("mocap", "nep") if student_seconds > 0 else ():
        progress(f"student {mode}: {student_seconds:.0f} s ...")
        s = train(clips, cfg, work / f"student_{mode}", role=mode, teacher=t.checkpoint, num_envs=num_envs,
                  iterations=10 ** 6, time_budget_s=student_seconds, seed=seed)
        rep = evaluate(clips, cfg, policy_path=s.checkpoint, baselines=())
        result["policies"][mode] = _summary(s, rep)
    result["work_dir"] = str(work)
    return result


def _loadavg() -> str | None:
    try:
        return Path("/proc/loadavg").read_text().split(" tasks")[0].rsplit(" ", 2)[0]
    except OSError:
        return None


def _summary(t, rep) -> dict:
    return {"iterations": t.iterations, "env_steps": t.env_steps, "train_seconds": round(t.seconds, 1),
            "sr": rep.sr.rate, "gsr": rep.gsr.rate if rep.gsr else None,
            "per_clip_sr": {c.clip: c.success for c in rep.sr.clips}}


def write_json(result: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path
