"""XGen fixtures: one short synthetic cargo pickup (3 s at 30 fps) and its retargeting,
computed once per session (the retarget takes ~1-2 s on a loaded core)."""

from __future__ import annotations

import pytest

from kibotos.xgen.config import load_xgen_config
from kibotos.xgen.retarget import retarget
from kibotos.xgen.synth import cargo_pickup


@pytest.fixture(scope="session")
def xcfg():
    return load_xgen_config()


@pytest.fixture(scope="session")
def pickup():
    return cargo_pickup(duration_s=3.0, fps=30.0)


@pytest.fixture(scope="session")
def robot_motion(pickup, xcfg):
    motion, metrics = retarget(pickup.motion, xcfg)
    return motion


@pytest.fixture(scope="session")
def clip(robot_motion, xcfg):
    from kibotos.xgen.interaction import interact

    clip, _ = interact(robot_motion, xcfg)
    return clip
