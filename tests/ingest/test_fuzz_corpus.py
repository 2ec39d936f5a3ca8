"""A corpus of malformed bundles, generated here, through the real upload path (request
→ presigned PUT → complete) on both stores: every one is rejected with its reason code
and a verdict, memory stays bounded, nothing is left on disk, and the API keeps serving
honest miners afterwards.

The hostile miner signs whatever it sends (when a hash tree can be computed at all), so
each rejection comes from the check the case targets, not from a bad signature.
"""

from __future__ import annotations

import json
import os
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from kibotos.bundle.hashtree import hash_bundle
from kibotos.errors import BundleError
from kibotos.identity import BundleSignature, sidecar_path, sign_tree
from kibotos.ingest.client import IngestRefused
from tests.fixtures import hostile
from tests.fixtures.episodes import edit_json, rewrite_zip
from tests.fixtures.ingest import keypair

MiB = 1 << 20
MALLORY = keypair("mallory")


def _add(src: Path, dst: Path, name, data: bytes, **kw) -> Path:
    rewrite_zip(src, dst)
    with zipfile.ZipFile(dst, "a") as zf:
        zf.writestr(name, data, **kw)
    return dst


def _grow(name: str, shape, chunks=None) -> dict:
    def update(doc):
        doc["shape"] = shape
        if chunks is not None:
            doc["chunk_grid"]["configuration"]["chunk_shape"] = chunks

    return {f"{name}/zarr.json": edit_json(update)}


def _manifest(update: Callable[[dict], None]) -> dict:
    def apply(raw: bytes) -> bytes:
        doc = json.loads(raw)
        update(doc["attributes"])
        return json.dumps(doc).encode()

    return {"manifest/zarr.json": apply}


def _raw_manifest(text: str) -> dict:
    return {"manifest/zarr.json": lambda raw: text.encode()}


def _patch_entry(src: Path, dst: Path, entry: str, field: str, value: int) -> Path:
    """Set one entry's 2-byte ``flags`` or compression ``method`` in both its local header
    and its central-directory record: the archive opens, reading the entry fails."""
    local, central = {"flags": 6, "method": 8}[field], {"flags": 8, "method": 10}[field]
    data = bytearray(src.read_bytes())
    raw = value.to_bytes(2, "little")
    with zipfile.ZipFile(src) as zf:
        start, pos = zf.getinfo(entry).header_offset, zf.start_dir
    data[start + local:start + local + 2] = raw
    while data[pos:pos + 4] == b"PK\x01\x02":
        n, m, k = (int.from_bytes(data[pos + o:pos + o + 2], "little") for o in (28, 30, 32))
        if data[pos + 46:pos + 46 + n] == entry.encode():
            data[pos + central:pos + central + 2] = raw
        pos += 46 + n + m + k
    dst.write_bytes(bytes(data))
    return dst


def _flip_chunk_byte(src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo("kinematics/joint_pos/c/0/0")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def _many_entries(src: Path, dst: Path) -> Path:
    rewrite_zip(src, dst)
    with zipfile.ZipFile(dst, "a") as zf:
        for i in range(20_001):
            zf.writestr(f"imu/accel/c/{i}", b"")
    return dst


def _nested_manifest(depth: int) -> str:
    return ('{"zarr_format":3,"node_type":"group","attributes":{"x":' + "[" * depth + "]" * depth + "}}")


def _tar(src: Path, dst: Path) -> Path:
    import tarfile

    with tarfile.open(dst, "w:gz") as tf:
        tf.add(src, arcname="bundle.zarr.zip")
    return dst


# case -> (build(src, dst) -> path, expected reason code)
CORPUS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "truncated": (lambda s, d: (d.write_bytes(s.read_bytes()[: s.stat().st_size // 2]), d)[1], "bundle_unreadable"),
    "one_byte": (lambda s, d: (d.write_bytes(b"P"), d)[1], "bundle_unreadable"),
    "random_bytes": (lambda s, d: (d.write_bytes(np.random.default_rng(0).bytes(40_000)), d)[1], "bundle_unreadable"),
    "tar_gz_not_zip": (_tar, "bundle_unreadable"),
    "zarr_v2_layout": (lambda s, d: _add(s, d, ".zgroup", b'{"zarr_format":2}') and rewrite_zip(
        d, d.with_suffix(".v2.zip"), edit={"zarr.json": None}), "bundle_unreadable"),
    "parent_path_entry": (lambda s, d: _add(s, d, "../../etc/cron.d/evil", b"owned"), "bundle_unsafe_path"),
    "absolute_path_entry": (lambda s, d: _add(s, d, "/etc/passwd", b"owned"), "bundle_unsafe_path"),
    "deep_path_entry": (lambda s, d: _add(s, d, "a/" * 5000 + "c/0", b"x"), "bundle_unsafe_path"),
    "backslash_entry": (lambda s, d: _add(s, d, "..\\..\\evil", b"owned"), "bundle_unsafe_path"),
    "symlink_entry": (lambda s, d: _add(s, d, _symlink_info(), b"/etc/shadow"), "bundle_unsafe_path"),
    "zip_bomb": (lambda s, d: _add(s, d, "imu/accel/c/0", bytes(64 * MiB), compress_type=zipfile.ZIP_DEFLATED),
                 "bundle_zip_bomb"),
    "too_many_entries": (_many_entries, "bundle_too_many_entries"),
    "duplicate_entries": (lambda s, d: _add(s, d, "kinematics/joint_pos/c/0/0", b"\x00" * 8), "bundle_duplicate_entries"),
    "oversized_attributes": (lambda s, d: rewrite_zip(s, d, edit=_manifest(lambda a: a.update(notes="x" * (MiB + 1)))),
                             "bundle_metadata_too_large"),
    "bad_crc_chunk": (_flip_chunk_byte, "bundle_unreadable"),
    "unsupported_compression": (lambda s, d: _patch_entry(s, d, "kinematics/joint_pos/c/0/0", "method", 99),
                                "bundle_unreadable"),
    "encrypted_entry": (lambda s, d: _patch_entry(s, d, "kinematics/joint_pos/c/0/0", "flags", 1),
                        "bundle_unreadable"),
    "stray_file": (lambda s, d: _add(s, d, "README.txt", b"hello"), "bundle_unexpected_entry"),
    "stray_file_in_array": (lambda s, d: _add(s, d, "kinematics/joint_pos/notes.txt", b"x"), "bundle_unexpected_entry"),
    "node_inside_array": (lambda s, d: _add(s, d, "kinematics/joint_pos/inner/zarr.json",
                                            b'{"zarr_format":3,"node_type":"group"}'), "bundle_unexpected_entry"),
    "malformed_array_metadata": (lambda s, d: rewrite_zip(s, d, edit={
        "kinematics/joint_pos/zarr.json": lambda raw: raw[:40]}), "bundle_unexpected_entry"),
    "no_manifest": (lambda s, d: rewrite_zip(s, d, edit={"manifest/zarr.json": None}), "manifest_missing"),
    "manifest_is_array": (lambda s, d: rewrite_zip(s, d, edit={"manifest/zarr.json": lambda raw: zipfile.ZipFile(
        s).read("kinematics/timestamps_ms/zarr.json")}), "manifest_missing"),
    "manifest_not_json": (lambda s, d: rewrite_zip(s, d, edit=_raw_manifest("{'not': json")), "manifest_invalid"),
    "manifest_deeply_nested": (lambda s, d: rewrite_zip(s, d, edit=_raw_manifest(_nested_manifest(100_000))),
                               "manifest_invalid"),
    "manifest_duplicate_keys": (lambda s, d: rewrite_zip(s, d, edit=_raw_manifest(
        '{"zarr_format":3,"node_type":"group","attributes":{"a":1,"a":2}}')), "manifest_invalid"),
    "manifest_nan": (lambda s, d: rewrite_zip(s, d, edit=_raw_manifest(
        '{"zarr_format":3,"node_type":"group","attributes":{"sampling_rate_hz":NaN}}')), "manifest_invalid"),
    "manifest_missing_fields": (lambda s, d: rewrite_zip(s, d, edit=_manifest(lambda a: [a.pop(k) for k in (
        "joint_names", "sync", "camera")])), "manifest_invalid"),
    "manifest_wrong_types": (lambda s, d: rewrite_zip(s, d, edit=_manifest(lambda a: a.update(
        joint_names=7, sampling_rate_hz="fast"))), "manifest_invalid"),
    "absurd_shape": (lambda s, d: rewrite_zip(s, d, edit=_grow("kinematics/joint_pos", [10**12, 9])),
                     "dataset_too_large"),
    "absurd_chunk_count": (lambda s, d: rewrite_zip(s, d, edit=_grow("kinematics/timestamps_ms", [2_000_000], [1])),
                           "dataset_too_many_chunks"),
    "negative_shape": (lambda s, d: rewrite_zip(s, d, edit=_grow("kinematics/joint_pos", [-5, 9])), "bundle_malformed"),
    "unknown_codec": (lambda s, d: rewrite_zip(s, d, edit={"kinematics/joint_pos/zarr.json": edit_json(
        lambda doc: doc.update(codecs=[{"name": "evil_codec"}]))}), "bundle_malformed"),
    "wrong_dtype": (lambda s, d: rewrite_zip(s, d, edit={"kinematics/joint_pos/zarr.json": edit_json(
        lambda doc: doc.update(data_type="int16"))}), "wrong_dtype"),
    "shape_mismatch": (lambda s, d: rewrite_zip(s, d, edit=_grow("kinematics/joint_pos", [151, 8])),
                       "shape_mismatch"),
    "missing_joint_pos": (lambda s, d: rewrite_zip(s, d, edit={"kinematics/joint_pos/zarr.json": None,
                                                                "kinematics/joint_pos/c/0/0": None}), "missing_dataset"),
    # resource budgets checked before the pipeline (kibotos.bundle.limits; codec bombs are
    # caught by gate A's bounded decoding: tests/kibotos/bundle/test_resource_budgets.py)
    "fill_value_only_array": (hostile.fill_value_array(1_000_000), "resource_limit_exceeded"),
    "fill_value_1gib": (hostile.fill_value_array(30_000_000), "dataset_too_large"),
    "codec_not_allowed": (lambda s, d: rewrite_zip(s, d, edit={"kinematics/joint_pos/zarr.json": edit_json(
        lambda doc: doc.update(codecs=[{"name": "bytes", "configuration": {"endian": "little"}},
                                       {"name": "numcodecs.zlib", "configuration": {}}]))}), "codec_not_allowed"),
    "video_8192_square": (hostile.with_video(lambda: hostile.big_black_mp4(8192, 8192, 2)), "resource_limit_exceeded"),
    "manifest_fps_1e-4": (hostile.edit_manifest(lambda a: a["video"]["primary"].update(fps=1e-4)), "manifest_invalid"),
    "manifest_fx_1e300": (hostile.intrinsics(fx=1e300), "manifest_invalid"),
    "joint_name_nul": (hostile.joint_name("panda_joint1\x00"), "manifest_invalid"),
    "joint_name_rtl": (hostile.joint_name("panda_\u202ejoint1"), "manifest_invalid"),
    "manifest_nested_300k": (hostile.raw_manifest(hostile.deep_manifest(300_000)), "manifest_invalid"),
}


def _symlink_info() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("kinematics/joint_pos/c/1/0")
    info.external_attr = 0o120777 << 16
    return info


def _signature_for(path: Path, sid: str, fallback: BundleSignature) -> dict:
    """What a hostile miner can sign: the bundle as sent, or (when no hash tree exists)
    the honest bundle it started from."""
    try:
        tree = hash_bundle(path)
        if tree.manifest_sha256 is not None:
            return sign_tree(tree, sid, MALLORY).model_dump(mode="json")
    except BundleError:
        pass
    return fallback.model_dump(mode="json")


class RssSampler:
    """Peak resident memory of this process while the corpus runs (the API is in-process)."""

    def __init__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _files_left(store) -> list[str]:
    return [o.key for o in store.list("incoming/")]


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.ingest_settings(ingest_rate_burst=1000)
@pytest.mark.parametrize("backend", ["local", "s3"])
def test_every_malformed_bundle_is_rejected_with_its_reason_code(backend, request, signed, tmp_path):
    env = request.getfixturevalue("ingest" if backend == "local" else "s3_ingest")
    outcomes: dict[str, tuple[int, str]] = {}
    hostile.big_black_mp4(8192, 8192, 2)  # encoded before memory is sampled: the encoder is not the API
    with RssSampler() as rss:
        for case, (build, _) in CORPUS.items():
            base = signed.write(MALLORY)
            honest = BundleSignature.model_validate_json(sidecar_path(base).read_text())
            path = Path(build(base, tmp_path / f"{case}.zarr.zip"))
            doc = _signature_for(path, str(honest.submission_id), honest)
            _, result = env.submit(path, MALLORY, doc)
            assert isinstance(result, IngestRefused), f"{case} was accepted: {result}"
            outcomes[case] = (result.status, result.reason_code)
    expected = {case: (422, reason) for case, (_, reason) in CORPUS.items()}
    assert outcomes == expected
    assert rss.peak - rss.base < 400 * MiB, f"memory grew by {(rss.peak - rss.base) / MiB:.0f} MiB"
    # each rejection left a verdict with its reason; nothing was sent to the gates
    verdicts = env.verdicts(len(CORPUS))
    assert sorted(v["reason_code"] for v in verdicts) == sorted(r for _, r in expected.values())
    assert all(v["failed_gate"] == "ingest_integrity" for v in verdicts)
    assert env.received_count() == 0
    # rejected bytes are not kept, nothing half-written lingers
    assert _files_left(env.service.store) == []
    if backend == "local":
        assert list(env.service.store.root.iterdir()) == []
    else:
        assert not list(env.service.store.cache_dir.glob("ingest-*"))
    # still healthy, and an honest miner still gets through
    assert httpx.get(env.url + "/v1/health").json()["status"] == "ok"
    alice = keypair("alice")
    _, done = env.submit(signed.write(alice), alice)
    assert done["status"] == "accepted"


@pytest.mark.ingest_settings(ingest_rate_burst=1000)
def test_random_corruptions_are_rejected_or_provably_harmless(ingest, signed, tmp_path):
    """Seeded random damage to an honestly signed bundle (byte flips, cuts, splices, junk
    around the archive): each upload is either rejected with a reason code, or accepted
    with exactly the signed content (bytes outside the zip structure do not count)."""
    rng = np.random.default_rng(1234)
    seen = {}
    for i in range(24):
        path = signed.write(MALLORY)
        sig = BundleSignature.model_validate_json(sidecar_path(path).read_text())
        data = bytearray(path.read_bytes())
        kind = ("flip", "cut", "splice", "prefix", "suffix", "zero_run")[i % 6]
        if kind == "flip":
            for pos in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
                data[pos] ^= int(rng.integers(1, 256))
        elif kind == "cut":
            data = data[: int(rng.integers(1, len(data)))]
        elif kind == "splice":
            a, b = sorted(rng.integers(0, len(data), size=2))
            data = data[:a] + data[b:]
        elif kind == "prefix":
            data = bytearray(rng.bytes(int(rng.integers(1, 5000)))) + data
        elif kind == "suffix":
            data = data + bytearray(rng.bytes(int(rng.integers(1, 5000))))
        else:
            a = int(rng.integers(0, len(data) - 64))
            data[a:a + 64] = bytes(64)
        path.write_bytes(bytes(data))
        _, result = ingest.submit(path, MALLORY, sig.model_dump(mode="json"))
        if isinstance(result, IngestRefused):
            assert result.status == 422 and result.reason_code, result.body
            seen[f"{i}-{kind}"] = result.reason_code
        else:
            assert result["merkle_root"] == sig.merkle_root
            seen[f"{i}-{kind}"] = "accepted_same_content"
    assert sum(v != "accepted_same_content" for v in seen.values()) >= 12, seen
    assert httpx.get(ingest.url + "/v1/health").status_code == 200
