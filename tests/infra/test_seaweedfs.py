"""The SeaweedFS launcher: a real S3 server on loopback only, with credentials, that
starts and stops cleanly."""

from __future__ import annotations

import io
import os

import httpx
import pytest

from infra.seaweedfs import SeaweedS3, find_weed_binary

pytestmark = pytest.mark.integration


def _listening_addresses(pid: int) -> set[str]:
    """Local addresses of the TCP sockets ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                    found.add(cols[1].split(":")[0])
    return found


def test_session_server_is_loopback_only_and_needs_credentials(seaweedfs):
    assert seaweedfs.endpoint.startswith("http://127.0.0.1:")
    assert _listening_addresses(seaweedfs._proc.pid) == {"0100007F"}  # 127.0.0.1, nothing else
    anonymous = httpx.put(f"{seaweedfs.endpoint}/anybucket/x", content=b"x")
    assert anonymous.status_code == 403
    client = seaweedfs.client()
    client.make_bucket("launcher-test")
    client.put_object("launcher-test", "k", io.BytesIO(b"v"), 1)
    assert client.get_object("launcher-test", "k").read() == b"v"


def test_start_and_stop_leave_nothing_running(tmp_path):
    assert find_weed_binary().is_file()
    server = SeaweedS3(tmp_path / "data").start()
    pid = server._proc.pid
    server.stop(grace_s=1.0)
    assert server.port is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
