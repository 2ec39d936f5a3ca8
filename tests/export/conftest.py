from __future__ import annotations

import pytest

from kibotos.datasets.store import DatasetStore
from kibotos.objectstore import LocalObjectStore
from kibotos.robots import get_robot
from kibotos.samples import make_episode
from tests.datasets.helpers import ROBOT_TASK, put_bundles


@pytest.fixture(scope="session")
def sample_bundles(tmp_path_factory):
    """One genuine sample bundle per robot (real video, real kinematics), built once."""
    out = tmp_path_factory.mktemp("dataset-bundles")
    return {robot: make_episode(get_robot(robot, rev), "genuine", seed=3, miner_id="miner-sample")
            .write(out / f"{robot}.zarr.zip") for robot, (rev, _) in ROBOT_TASK.items()}


@pytest.fixture
def objects(tmp_path):
    return LocalObjectStore(tmp_path / "objects")


@pytest.fixture
def uris(objects, sample_bundles):
    return put_bundles(objects, sample_bundles)


@pytest.fixture
def store(tmp_path):
    return DatasetStore(tmp_path / "datasets")
