"""A few PPO iterations on 2-4 environments must show a learning signal; a SIGKILLed
training process resumes from its last checkpoint; students distil from a teacher."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import torch

from kibotos.xmimic.train import latest_checkpoint, train


def still_clip(clip, frames=40):
    """The trivial sub-task: stand still in the clip's first pose, the box at rest."""
    rep = lambda a: np.repeat(a[:1], frames, axis=0)  # noqa: E731
    return dataclasses.replace(clip, qpos=rep(clip.qpos), qvel=np.zeros((frames, 35)), object_pose=rep(clip.object_pose),
                               contact=rep(clip.contact), phase=rep(clip.phase), key_body_pos=rep(clip.key_body_pos),
                               hold={k: frames for k in ("start", "lift", "carry", "place", "end")})


def test_teacher_value_loss_falls_on_standing_still(clips, xcfg, tmp_path):
    cfg = xcfg.with_overrides(di={"enabled": False}, dr={"enabled": False}, it={"enabled": False},
                              teacher={"num_steps_per_env": 16, "num_mini_batches": 2, "num_learning_epochs": 4,
                                       "init_noise_std": 1.0, "learning_rate": 0.001})
    r = train([still_clip(clips[0])], cfg, tmp_path / "t", num_envs=4, iterations=10, seed=0)
    values = [e["losses"]["value"] for e in r.history]
    assert len(values) == 10 and all(v == v for v in values)
    # the critic learns the returns: the last iterations' value loss well below the first ones'
    assert sum(values[-3:]) < 0.6 * sum(values[:3]), values
    assert r.checkpoint.name == "model_10.pt"
    saved = torch.load(r.checkpoint, weights_only=False)
    assert saved["infos"]["role"] == "teacher" and saved["infos"]["config_version"] == cfg.config_version
    assert set(r.history[-1]["reward_terms"]) >= {"body_joint_pos", "object_pos", "relative_hand_box", "contact"}


def test_student_distils_from_teacher(clips, small_cfg, tmp_path):
    t = train(clips, small_cfg, tmp_path / "t", num_envs=2, iterations=2, seed=2)
    # a teacher whose actions are clearly not the student's initial ~0: its last layer's
    # bias shifted by 0.5 on every joint
    saved = torch.load(t.checkpoint, weights_only=False)
    last_bias = [k for k in saved["actor_state_dict"] if k.startswith("mlp.") and k.endswith(".bias")][-1]
    saved["actor_state_dict"][last_bias] += 0.5
    teacher = tmp_path / "teacher.pt"
    torch.save(saved, teacher)
    s = train(clips, small_cfg, tmp_path / "s", role="mocap", teacher=teacher, num_envs=4, iterations=6, seed=2)
    bc = [e["losses"]["bc"] for e in s.history]
    assert bc[0] > 0.1, bc  # ~0.25: 0.5 squared
    assert bc[-1] < 0.3 * bc[0], bc  # the student has moved to the teacher's actions
    saved = torch.load(s.checkpoint, weights_only=False)
    assert saved["infos"]["obs_groups"] == ["proprio", "reference", "mocap"]


def test_training_resumes_after_sigkill(clips_dir, tmp_path):
    cfg_file = tmp_path / "xmimic.yaml"
    from kibotos.xmimic.config import DEFAULT_PATH

    text = DEFAULT_PATH.read_text().replace("every_iterations: 10", "every_iterations: 1")
    text = text.replace("num_steps_per_env: 24", "num_steps_per_env: 8")
    cfg_file.write_text(text)
    run = tmp_path / "run"
    two = tmp_path / "clips"  # two clips: the process starts (and loads its clips) twice
    for folder in sorted(clips_dir.iterdir())[:2]:
        shutil.copytree(folder, two / folder.name)
    env = {**os.environ, "KIBOTOS_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "kibotos.cli.main", "train", "--clips", str(two), "--config", str(cfg_file),
           "--num-envs", "2", "--out", str(run)]
    proc = subprocess.Popen(cmd + ["--iterations", "1000"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            last = latest_checkpoint(run)
            if last is not None and int(last.stem.split("_")[1]) >= 2:
                break
            assert proc.poll() is None, "training exited before its second checkpoint"
            time.sleep(0.5)
        else:
            raise AssertionError("no checkpoint within 240 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = int(latest_checkpoint(run).stem.split("_")[1])
    out = subprocess.run(cmd + ["--iterations", str(killed_at + 2)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    assert summary["resumed_from"] == killed_at
    assert summary["iterations"] == killed_at + 2
    assert summary["checkpoint"].endswith(f"model_{killed_at + 2}.pt")
    progress = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    assert [p["iteration"] for p in progress if p["iteration"] > killed_at][-2:] == [killed_at + 1, killed_at + 2]
