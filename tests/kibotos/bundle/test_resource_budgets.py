"""A hostile corpus against the resource budgets (``kibotos.bundle.limits``): every bundle
here is small on disk and asks for gigabytes or minutes once read — codec bombs, lying zip
headers, arrays only the fill value backs, oversized or overlong video, absurd manifest
numbers, names with control characters. Each is rejected with a reason code (the limit
named), the whole corpus runs in a subprocess whose peak RSS stays bounded, and
``kibotos verify`` never prints a traceback. The large payloads are generated here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from kibotos.bundle import Limits, open_bundle
from kibotos.bundle.codecs import gzip_bounded, zstd_bounded
from kibotos.bundle.limits import ResourceLimitExceeded, gate_deadline
from kibotos.cli.main import app
from kibotos.config.gates import load_config
from kibotos.media.video import decode_luma, encode_mp4, probe_video
from tests.fixtures.episodes import PANDA, edit_json, rewrite_zip
from tests.fixtures.hostile import (
    META,
    GiB,
    MiB,
    big_black_mp4,
    deep_manifest,
    edit_manifest,
    fill_value_array,
    gzip_zeros,
    intrinsics,
    joint_name,
    long_episode,
    many_samples,
    raw_frames,
    raw_manifest,
    replace_chunk,
    with_video,
    zip_header_lie,
    zstd_zeros,
)

ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Case:
    build: Callable[[Path, Path], Path]
    reason: str
    limit: str | None = None  # the limit metrics name (resource_limit_exceeded)
    limits: dict | None = None  # Limits overrides (small budgets for cases cheap to build)
    exit_code: int = 1


RLE = "resource_limit_exceeded"
CASES: dict[str, Case] = {
    # decompressed size per chunk, whatever the zip header or the codec frame claims
    "zip_header_claims_1mib_of_1gib": Case(zip_header_lie, "dataset_unreadable"),
    "zstd_bomb_no_content_size": Case(lambda s, d: replace_chunk(s, d, zstd_zeros(GiB, False)), RLE,
                                      "chunk_decoded_bytes"),
    "zstd_bomb_claims_1gib": Case(lambda s, d: replace_chunk(s, d, zstd_zeros(GiB, True)), RLE, "chunk_decoded_bytes"),
    "gzip_bomb": Case(lambda s, d: replace_chunk(s, d, gzip_zeros(512 * MiB), codecs=[
        {"name": "bytes", "configuration": {"endian": "little"}}, {"name": "gzip", "configuration": {"level": 5}}]),
        RLE, "chunk_decoded_bytes"),
    "codec_not_allowed": Case(lambda s, d: rewrite_zip(s, d, edit={META: edit_json(lambda doc: doc.update(codecs=[
        {"name": "bytes", "configuration": {"endian": "little"}}, {"name": "numcodecs.zlib", "configuration": {}}]))}),
        "codec_not_allowed"),
    # arrays that only the fill value backs
    "fill_value_36mb": Case(fill_value_array(1_000_000), RLE, "max_fill_value_bytes"),
    "fill_value_1gib": Case(fill_value_array(30_000_000), "dataset_too_large", "max_array_bytes"),
    # raw video frames
    "raw_frames_4096_square": Case(raw_frames([4, 4096, 4096, 3]), RLE, "max_frame_pixels"),
    "raw_frames_1gb": Case(raw_frames([400, 720, 1280, 3]), "dataset_too_large", "max_array_bytes"),
    # encoded video: probed before decoding
    "mp4_8192_square_skip_frames": Case(with_video(lambda: big_black_mp4(8192, 8192, 3)), RLE, "max_video_side"),
    "mp4_frames_x_pixels": Case(with_video(lambda: big_black_mp4(64, 64, 240)), RLE, "max_video_total_pixels",
                                {"max_video_total_pixels": 64 * 64 * 100}),
    "mp4_pixels_per_second": Case(with_video(lambda: big_black_mp4(64, 64, 10, fps=240)), RLE, "max_video_pixels_per_second",
                                  {"max_video_pixels_per_second": 64 * 64 * 100}),
    "decode_wall_time": Case(lambda s, d: rewrite_zip(s, d), RLE, "max_decode_seconds", {"max_decode_seconds": 0.0}),
    # totals and time
    "total_decoded_bytes": Case(lambda s, d: rewrite_zip(s, d), RLE, "max_total_decoded_bytes",
                                {"max_total_decoded_bytes": 20_000}),
    "gate_time_budget": Case(lambda s, d: rewrite_zip(s, d), RLE, "gate_time_budget_s", {"gate_time_budget_s": 0.0}),
    "episode_over_an_hour": Case(long_episode, RLE, "max_episode_seconds"),
    "kinematic_samples_700k": Case(many_samples(700_000), RLE, "max_kinematic_samples"),
    # manifest numbers out of their ranges
    "fps_1e-4": Case(edit_manifest(lambda a: a["video"]["primary"].update(fps=1e-4)), "manifest_invalid"),
    "fps_1e-300": Case(edit_manifest(lambda a: a["video"]["primary"].update(fps=1e-300)), "manifest_invalid"),
    "sampling_rate_1e-300": Case(edit_manifest(lambda a: a.update(sampling_rate_hz=1e-300)), "manifest_invalid"),
    "fx_1e300": Case(intrinsics(fx=1e300), "manifest_invalid"),
    "width_2_31": Case(intrinsics(width=2**31 - 1, height=2**31 - 1), "manifest_invalid"),
    "manifest_nan": Case(raw_manifest(json.dumps({"zarr_format": 3, "node_type": "group"})[:-1] +
                                         ',"attributes":{"sampling_rate_hz":NaN}}'), "manifest_invalid"),
    # names
    "joint_name_nul": Case(joint_name("panda_joint1\x00"), "manifest_invalid"),
    "joint_name_rtl_override": Case(joint_name("panda_\u202ejoint1"), "manifest_invalid"),
    "joint_name_zero_width": Case(joint_name("panda_joint1\u200b"), "manifest_invalid"),
    "joint_name_unknown": Case(joint_name("panda_joint1_x"), "unknown_joint_names"),
    # manifests that do not parse
    "manifest_not_json": Case(raw_manifest("{'not': json"), "manifest_invalid", exit_code=2),
    "manifest_nested_300k": Case(raw_manifest(deep_manifest(300_000)), "manifest_invalid", exit_code=2),
}


@pytest.fixture(scope="module")
def corpus(samples, tmp_path_factory):
    src = samples.path(PANDA)
    d = tmp_path_factory.mktemp("budgets")
    return {name: case.build(src, d / f"{name}.zarr.zip") for name, case in CASES.items()}


def test_corpus_files_are_small(corpus):
    sizes = {name: path.stat().st_size for name, path in corpus.items()}
    assert max(sizes.values()) < 3 * MiB, sizes


_RUNNER = """
import json, sys
from kibotos.bundle import Limits
from kibotos.config.gates import load_config
from kibotos.cli.verify import verify_path
config = load_config()
out = {}
for name, path, overrides in json.loads(sys.argv[1]):
    limits = Limits(**(config.limits.as_dict() | overrides)) if overrides else None
    o = verify_path(path, config, limits)
    failed = o.report.gates[-1] if o.report.gates else None
    out[name] = {"reason": o.report.reason_code, "gate": o.report.failed_gate, "exit": o.exit_code,
                 "limit": failed.metrics.get("limit") if failed else None,
                 "trace": "trace" in (failed.metrics if failed else {})}
# VmHWM: this process image's peak (ru_maxrss would carry the parent's over exec)
out["__maxrss_kib"] = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps(out))
"""


def test_every_hostile_bundle_is_rejected_with_its_reason_and_memory_stays_bounded(corpus):
    """The in-process gate chain (``verify_path``) in a fresh process over the whole
    corpus: each case gets its reason code and named limit; the process's peak RSS (what
    a gate worker would reach) stays far below what the bundles ask for."""
    job = [[name, str(corpus[name]), case.limits or {}] for name, case in CASES.items()]
    proc = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(job)], capture_output=True, text=True,
                          timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_mib = out.pop("__maxrss_kib") / 1024
    got = {name: (r["reason"], r["limit"] if CASES[name].limit else None, r["exit"]) for name, r in out.items()}
    want = {name: (c.reason, c.limit, c.exit_code) for name, c in CASES.items()}
    assert got == want
    assert not any(r["trace"] for r in out.values())
    assert all(r["gate"] == "gate_a_integrity" for name, r in out.items()
               if CASES[name].limit not in ("max_decode_seconds",)), out
    print(f"peak RSS of the gate chain over the hostile corpus: {peak_mib:.0f} MiB")
    assert peak_mib < 1536, f"peak RSS {peak_mib:.0f} MiB"


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if not c.limits])
def test_kibotos_verify_prints_a_report_never_a_traceback(corpus, name):
    case = CASES[name]
    result = CliRunner().invoke(app, ["verify", str(corpus[name]), "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    report = json.loads(result.stdout)
    assert (report["verdict"], report["reason_code"], result.exit_code) == ("rejected", case.reason, case.exit_code)
    if case.limit:
        assert report["gates"][-1]["metrics"]["limit"] == case.limit


@pytest.mark.parametrize("name", ["manifest_not_json", "manifest_nested_300k", "joint_name_rtl_override"])
def test_installed_cli_on_unparseable_manifests(corpus, name):
    """The console script in a fresh process (a deep manifest must not overflow its stack)."""
    exe = Path(sys.executable).with_name("kibotos")
    proc = subprocess.run([str(exe), "verify", "--json", str(corpus[name])], capture_output=True, text=True,
                          timeout=300)
    assert "Traceback" not in proc.stderr + proc.stdout
    report = json.loads(proc.stdout)
    assert (report["reason_code"], proc.returncode) == ("manifest_invalid", CASES[name].exit_code)
    assert report["gates"][-1]["metrics"]["error"]


def test_bounded_decompressors_stop_at_the_bound():
    assert zstd_bounded(zstd_zeros(4 * MiB, False), 4 * MiB) == bytes(4 * MiB)
    assert gzip_bounded(gzip_zeros(2 * MiB) * 2, 4 * MiB) == bytes(4 * MiB)  # two members
    for data in (zstd_zeros(64 * MiB, False), zstd_zeros(64 * MiB, True)):
        with pytest.raises(ResourceLimitExceeded) as exc:
            zstd_bounded(data, MiB)
        assert exc.value.metrics["limit"] == "chunk_decoded_bytes"
    with pytest.raises(ResourceLimitExceeded):
        gzip_bounded(gzip_zeros(64 * MiB), MiB)


def test_honest_gzip_and_zstd_arrays_still_read(tmp_path):
    """The bounded codecs decode what zarr itself writes, both compressors."""
    import zarr

    for name in ("gzip", "zstd"):
        store = zarr.storage.ZipStore(tmp_path / f"{name}.zarr.zip", mode="w")
        root = zarr.open_group(store=store, mode="w")
        data = np.random.default_rng(0).normal(size=(5000, 7)).astype(np.float32)
        config = {"level": 5} if name == "gzip" else {"level": 3, "checksum": False}
        root.create_array("x", data=data, chunks=(1000, 7), compressors=[{"name": name, "configuration": config}])
        store.close()
        with open_bundle(tmp_path / f"{name}.zarr.zip") as view:
            assert np.array_equal(view.read("x"), data)


def test_probe_reads_the_header_only_and_decode_checks_every_frame():
    mp4 = encode_mp4(np.zeros((30, 64, 96, 3), np.uint8), fps=30)
    probe = probe_video(mp4)
    assert (probe.width, probe.height, probe.frames, round(probe.fps)) == (96, 64, 30, 30)
    with pytest.raises(ResourceLimitExceeded) as exc:
        probe_video(mp4, Limits(max_video_frames=10))
    assert exc.value.metrics == {"limit": "max_video_frames", "limit_value": 10, "observed": 30}
    # the decoders apply the limits of the gate running in this thread
    with gate_deadline(60, Limits(max_frame_pixels=96 * 63)), pytest.raises(ResourceLimitExceeded):
        decode_luma(mp4)
    assert decode_luma(mp4).frames.shape[0] == 30


def test_gate_config_limits_are_the_defaults_and_versioned():
    config = load_config()
    assert config.limits == Limits()
    assert config.config_version >= "gates-2026.12.2"
    with pytest.raises(ValidationError):
        type(config).model_validate(config.model_dump() | {"limits": {"max_video_sides": 1}})


def test_memory_ceiling_rejects_and_the_worker_goes_on(corpus, samples):
    """A worker process under its RLIMIT_AS ceiling (``streams.worker``): a bundle whose
    read the configured budgets allow but memory does not is rejected with
    ``resource_limit_exceeded`` (worker_memory_bytes), and the next, genuine bundle is
    accepted by the same process with its memory returned."""
    script = """
import json, sys
from kibotos.bundle import Limits
from kibotos.config.gates import load_config
from kibotos.cli.verify import verify_path
from streams.worker import apply_memory_ceiling, address_space_bytes
config = load_config()
verify_path(sys.argv[2], config)  # warm: every module a gate loads
ceiling = apply_memory_ceiling(0, headroom=512 << 20)
# budgets opened wide: only the ceiling stands between the gate and a 4 GiB allocation
loose = Limits(**(config.limits.as_dict() | {"max_array_bytes": 1 << 40, "max_chunk_bytes": 1 << 40,
               "max_fill_value_bytes": 1 << 40, "max_total_decoded_bytes": 1 << 40}))
bad = verify_path(sys.argv[1], config, loose).report
good = verify_path(sys.argv[2], config).report
print(json.dumps({"bad": [bad.reason_code, bad.gates[-1].metrics.get("limit")], "good": good.verdict,
                  "ceiling": ceiling}))
"""
    proc = subprocess.run([sys.executable, "-c", script, str(corpus["fill_value_1gib"]), str(samples.path(PANDA))],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["bad"] == ["resource_limit_exceeded", "worker_memory_bytes"]
    assert out["good"] == "accepted"
