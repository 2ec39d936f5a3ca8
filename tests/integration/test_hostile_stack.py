"""Hostile bundles through the real pipeline (Tansu, a ``python -m streams.worker`` gate
worker process under its memory ceiling, the ClickHouse sink): each is rejected at gate A
with its reason code, the worker's peak RSS stays bounded, it stays alive, and a genuine
bundle submitted behind them is still accepted."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.fixtures import hostile
from tests.fixtures.pipeline import assert_accepted

pytestmark = pytest.mark.integration

RLE = "resource_limit_exceeded"
CASES = {
    "zstd_bomb": (lambda s, d: hostile.replace_chunk(s, d, hostile.zstd_zeros(hostile.GiB, False)), RLE),
    "gzip_bomb": (lambda s, d: hostile.replace_chunk(s, d, hostile.gzip_zeros(256 * hostile.MiB), codecs=[
        {"name": "bytes", "configuration": {"endian": "little"}}, {"name": "gzip", "configuration": {"level": 5}}]),
        RLE),
    "zip_header_lie": (hostile.zip_header_lie, "dataset_unreadable"),
    "fill_value_array": (hostile.fill_value_array(1_000_000), RLE),
    "video_8192_square": (hostile.with_video(lambda: hostile.big_black_mp4(8192, 8192, 2)), RLE),
    "joint_name_nul": (hostile.joint_name("shoulder\x00"), "manifest_invalid"),
}


def _vm_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def test_hostile_bundles_are_rejected_and_the_worker_stays_healthy(pipeline, bundles, tmp_path):
    worker = pipeline.start_worker()
    genuine = bundles.path("genuine", seed=3)
    paths: dict[str, Path] = {}
    for name, (build, _) in CASES.items():
        fresh = hostile.edit_manifest(lambda a: a.update(submission_id=str(uuid.uuid4())))(
            genuine, tmp_path / f"{name}-src.zarr.zip")
        paths[name] = build(fresh, tmp_path / f"{name}.zarr.zip")
    paths["genuine"] = bundles.path("genuine", seed=4)  # submitted last: behind every hostile one
    subs = dict(zip(paths, pipeline.submit(*paths.values())))
    reports = pipeline.reports([s.submission_id for s in subs.values()], timeout=240)
    for name, (_, reason) in CASES.items():
        report = reports[subs[name].submission_id]
        assert (report["verdict"], report["failed_gate"], report["reason_code"]) == (
            "rejected", "gate_a_integrity", reason), name
    assert_accepted(reports[subs["genuine"].submission_id], subs["genuine"].submission_id)
    assert worker.poll() is None, "the gate worker died"
    peak = _vm_hwm_mib(worker.pid)
    print(f"gate worker peak RSS over the hostile bundles: {peak:.0f} MiB")
    assert peak < 1536, f"worker peak RSS {peak:.0f} MiB"
