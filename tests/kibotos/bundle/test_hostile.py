"""Hostile bundles: each is refused with a reason code and exit code 1 or 2, never a
traceback, and nothing is loaded whose declared size is unbounded."""

from __future__ import annotations

import json
import os
import resource
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kibotos.bundle import Limits, write_bundle
from kibotos.cli.main import app
from kibotos.cli.verify import verify_path
from kibotos.synthetic.samples import Episode
from tests.fixtures.episodes import PANDA, edit_json, rewrite_zip

MiB = 1 << 20


def _copy_with(src: Path, dst: Path, entry: str | zipfile.ZipInfo, data: bytes, **kw) -> Path:
    """``src`` plus one raw entry that no zarr writer would make."""
    rewrite_zip(src, dst)
    with zipfile.ZipFile(dst, "a") as zf:
        zf.writestr(entry, data, **kw)
    return dst


def _rewrite(ep: Episode, dst: Path, manifest: dict | None = None, **arrays) -> Path:
    args = dict(timestamps_ms=ep.timestamps_ms, joint_pos=ep.joint_pos, joint_vel=ep.joint_vel, video_mp4=ep.video_mp4)
    args.update(arrays)
    return write_bundle(dst, ep.manifest if manifest is None else manifest, **args)


def truncated(src, ep, d):
    data = src.read_bytes()
    (d / "t.zarr.zip").write_bytes(data[: len(data) // 2])
    return d / "t.zarr.zip"


def random_bytes(src, ep, d):
    (d / "r.zarr.zip").write_bytes(np.random.default_rng(0).bytes(50_000))
    return d / "r.zarr.zip"


def parent_path_entry(src, ep, d):
    return _copy_with(src, d / "p.zarr.zip", "../evil", b"owned")


def absolute_path_entry(src, ep, d):
    return _copy_with(src, d / "a.zarr.zip", "/etc/evil", b"owned")


def symlink_entry(src, ep, d):
    info = zipfile.ZipInfo("kinematics/joint_pos/c/link")
    info.external_attr = 0o120777 << 16
    return _copy_with(src, d / "s.zarr.zip", info, b"/etc/passwd")


def zip_bomb(src, ep, d):
    return _copy_with(src, d / "b.zarr.zip", "imu/accel/c/0", bytes(50 * MiB), compress_type=zipfile.ZIP_DEFLATED)


def absurd_shape(src, ep, d):
    def grow(doc):
        doc["shape"] = [10**12, doc["shape"][1]]

    return rewrite_zip(src, d / "x.zarr.zip", edit={"kinematics/joint_pos/zarr.json": edit_json(grow)})


def absurd_consistent_shapes(src, ep, d):
    """Every kinematic stream declares 10**12 samples: shapes agree, so only the size
    bound stops a read."""

    def grow(doc):
        doc["shape"] = [10**12, *doc["shape"][1:]]

    edit = {f"kinematics/{n}/zarr.json": edit_json(grow) for n in ("timestamps_ms", "joint_pos", "joint_vel")}
    return rewrite_zip(src, d / "xx.zarr.zip", edit=edit)


def int16_joint_pos(src, ep, d):
    return _rewrite(ep, d / "i.zarr.zip", joint_pos=np.round(ep.joint_pos * 1000).astype(np.int16))


def string_joint_pos(src, ep, d):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: the string dtype is not yet part of the v3 spec
        return _rewrite(ep, d / "str.zarr.zip", joint_pos=ep.joint_pos.astype(str))


def oversized_manifest(src, ep, d):
    return _rewrite(ep, d / "m.zarr.zip", manifest=ep.manifest | {"notes": "x" * (MiB + 10)})


def manifest_missing_fields(src, ep, d):
    manifest = {k: v for k, v in ep.manifest.items() if k not in ("joint_names", "sync", "units")}
    return _rewrite(ep, d / "mi.zarr.zip", manifest=manifest)


def manifest_not_an_object(src, ep, d):
    def scramble(doc):
        doc["attributes"] = {"submission_id": ["not", "a", "uuid"], "joint_names": 7}

    return rewrite_zip(src, d / "mn.zarr.zip", edit={"manifest/zarr.json": edit_json(scramble)})


def no_manifest_group(src, ep, d):
    return rewrite_zip(src, d / "nm.zarr.zip", edit={"manifest/zarr.json": None})


def manifest_is_an_array(src, ep, d):
    with zipfile.ZipFile(src) as zf:
        array_meta = zf.read("kinematics/timestamps_ms/zarr.json")
    return rewrite_zip(src, d / "ma.zarr.zip", edit={"manifest/zarr.json": lambda _: array_meta})


def nan_in_optional_stream(src, ep, d):
    pose = np.tile(np.array([0.5, 0, 0.1, 1, 0, 0, 0], np.float32), (len(ep.timestamps_ms), 1))
    pose[17, 2] = np.nan
    return _rewrite(ep, d / "n.zarr.zip", extra_arrays={"objects/box/timestamps_ms": ep.timestamps_ms,
                                                        "objects/box/pose": pose})


def garbage_mp4(src, ep, d):
    return _rewrite(ep, d / "g.zarr.zip", video_mp4=np.random.default_rng(1).bytes(40_000))


def truncated_mp4(src, ep, d):
    return _rewrite(ep, d / "tm.zarr.zip", video_mp4=ep.video_mp4[: len(ep.video_mp4) // 3])


def corrupt_chunk(src, ep, d):
    return rewrite_zip(src, d / "cc.zarr.zip", edit={"kinematics/joint_pos/c/0/0": lambda raw: raw[: len(raw) // 2]})


def malformed_array_metadata(src, ep, d):
    return rewrite_zip(src, d / "mj.zarr.zip", edit={"kinematics/joint_pos/zarr.json": lambda raw: raw[:40]})


@dataclass(frozen=True)
class Case:
    build: Callable[[Path, Episode, Path], Path]
    reasons: frozenset[str]
    exit_code: int
    limits: Limits | None = None


CASES = {
    "truncated_zip": Case(truncated, frozenset({"bundle_unreadable"}), 2),
    "random_bytes": Case(random_bytes, frozenset({"bundle_unreadable"}), 2),
    "parent_path_entry": Case(parent_path_entry, frozenset({"bundle_unsafe_path"}), 2),
    "absolute_path_entry": Case(absolute_path_entry, frozenset({"bundle_unsafe_path"}), 2),
    "symlink_entry": Case(symlink_entry, frozenset({"bundle_unsafe_path"}), 2),
    "zip_bomb_ratio": Case(zip_bomb, frozenset({"bundle_zip_bomb"}), 2),
    "zip_bomb_size": Case(zip_bomb, frozenset({"bundle_too_large"}), 2,
                          Limits(max_archive_bytes=20 * MiB, max_compression_ratio=1e9)),
    "absurd_shape": Case(absurd_shape, frozenset({"shape_mismatch", "dataset_too_large"}), 1),
    # the kinematic-samples budget (resource_limit_exceeded) judges the declared length
    # before any array's size is
    "absurd_consistent_shapes": Case(absurd_consistent_shapes,
                                     frozenset({"dataset_too_large", "resource_limit_exceeded"}), 1),
    "int16_joint_pos": Case(int16_joint_pos, frozenset({"wrong_dtype"}), 1),
    "string_joint_pos": Case(string_joint_pos, frozenset({"wrong_dtype"}), 1),
    "oversized_manifest": Case(oversized_manifest, frozenset({"bundle_metadata_too_large"}), 2),
    "manifest_missing_fields": Case(manifest_missing_fields, frozenset({"manifest_invalid"}), 1),
    "manifest_wrong_types": Case(manifest_not_an_object, frozenset({"manifest_invalid"}), 1),
    "no_manifest_group": Case(no_manifest_group, frozenset({"manifest_missing"}), 2),
    "manifest_is_an_array": Case(manifest_is_an_array, frozenset({"manifest_missing"}), 2),
    "nan_in_optional_stream": Case(nan_in_optional_stream, frozenset({"non_finite_values"}), 1),
    "garbage_mp4": Case(garbage_mp4, frozenset({"video_unreadable"}), 1),
    "truncated_mp4": Case(truncated_mp4, frozenset({"video_unreadable", "video_frame_count_mismatch"}), 1),
    "corrupt_chunk": Case(corrupt_chunk, frozenset({"dataset_unreadable"}), 1),
    "malformed_array_metadata": Case(malformed_array_metadata, frozenset({"missing_dataset", "bundle_malformed"}), 1),
}


@pytest.fixture(scope="module")
def hostile(samples, tmp_path_factory):
    """Every case's bundle, built once."""
    src, ep = samples.path(PANDA), samples.episode(PANDA)
    d = tmp_path_factory.mktemp("hostile")
    built: dict[Callable, Path] = {}
    out = {}
    for name, case in CASES.items():
        if case.build not in built:
            built[case.build] = case.build(src, ep, d)
        out[name] = built[case.build]
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_refused_with_a_reason_code(hostile, name):
    case = CASES[name]
    outcome = verify_path(hostile[name], limits=case.limits)
    report = outcome.report
    assert report.verdict == "rejected"
    assert report.reason_code in case.reasons, report.gates[-1].metrics
    assert outcome.exit_code == case.exit_code
    assert report.points == 0.0
    failed = report.gates[-1]
    assert not failed.passed and failed.reason_code == report.reason_code
    assert "trace" not in failed.metrics, failed.metrics["trace"]  # gate_internal_error carries one


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.limits is None])
def test_cli_gives_an_exit_code_never_a_traceback(hostile, name):
    case = CASES[name]
    result = CliRunner().invoke(app, ["verify", str(hostile[name]), "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == case.exit_code, result.output
    assert "Traceback" not in result.output
    report = json.loads(result.stdout)
    assert report["reason_code"] in case.reasons


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.limits is None and c.exit_code == 2])
def test_inspect_refuses_unreadable_bundles(hostile, name):
    result = CliRunner().invoke(app, ["bundle", "inspect", str(hostile[name])])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error"), result.output
    assert result.stdout == ""


@pytest.mark.parametrize("name", ["absurd_shape", "absurd_consistent_shapes", "zip_bomb_ratio"])
def test_declared_sizes_are_never_allocated(hostile, name):
    """10**12 x J float32 would be terabytes: the bound must act on the declaration."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    try:
        outcome = verify_path(hostile[name])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert outcome.report.reason_code in CASES[name].reasons
    assert peak < 50 * MiB, f"traced peak {peak / MiB:.1f} MiB"
    assert rss_growth_mb < 200


def test_inspect_of_an_absurd_declaration_reads_metadata_only(hostile):
    result = CliRunner().invoke(app, ["bundle", "inspect", "--json", str(hostile["absurd_shape"])])
    assert result.exit_code == 0, result.output
    arrays = {a["path"]: a for a in json.loads(result.stdout)["arrays"]}
    assert arrays["kinematics/joint_pos"]["shape"][0] == 10**12


def test_directory_store_with_an_escaping_symlink(samples, tmp_path):
    ep = samples.episode(PANDA)
    path = _rewrite(ep, tmp_path / "e.zarr")
    target = tmp_path / "secret"
    target.write_text("secret")
    chunk = path / "kinematics" / "joint_vel" / "c" / "0" / "0"
    chunk.unlink()
    os.symlink(target, chunk)
    outcome = verify_path(path)
    assert (outcome.exit_code, outcome.report.reason_code) == (2, "bundle_unsafe_path")
