"""XMimic fixtures: an XGen clip set generated once per session (the procedural human
pickup through every XGen stage, ~10 s), a 4-clip subset for the fast tests, and a config
with small PPO batches."""

from __future__ import annotations

import pytest

from kibotos.xmimic.clipgen import make_clip_set
from kibotos.xmimic.clips import load_clips
from kibotos.xmimic.config import load_xmimic_config


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory):
    return make_clip_set(tmp_path_factory.mktemp("xgen"), duration_s=4.0)


@pytest.fixture(scope="session")
def all_clips(clips_dir):
    return load_clips(clips_dir)


@pytest.fixture(scope="session")
def clips(all_clips):
    """base, one size variant, one yaw variant, the mirror: different boxes and hands."""
    kinds = ("base", "size", "yaw", "mirror")
    picked = [next(c for c in all_clips if c.clip_id.endswith(k)) for k in kinds]
    return picked


@pytest.fixture(scope="session")
def xcfg():
    return load_xmimic_config()


@pytest.fixture(scope="session")
def small_cfg(xcfg):
    return xcfg.with_overrides(teacher={"num_steps_per_env": 16, "num_mini_batches": 2, "num_learning_epochs": 2},
                               checkpoint={"every_iterations": 2})
