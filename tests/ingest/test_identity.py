"""Miner identities and signatures: Solana-compatible keypair files and addresses,
RFC 8032 Ed25519, the canonical signed messages, and the signature sidecar."""

from __future__ import annotations

import json
import stat

import base58
import pytest

from kibotos.errors import KibotosError
from kibotos.identity import (
    BundleSignature,
    IdentityError,
    Keypair,
    bundle_message,
    decode_miner_id,
    sidecar_path,
    sign_bundle,
    upload_request_message,
    verify,
)
from tests.fixtures.ingest import keypair

# RFC 8032 §7.1, TEST 1
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUB = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIG = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9"
                        "b46bd25bf5f0595bbe24655141438e7a100b")


def test_ed25519_matches_rfc8032():
    pair = Keypair.from_seed(RFC_SEED)
    assert pair.public_key == RFC_PUB
    assert base58.b58decode(pair.sign(b"")) == RFC_SIG
    verify(pair.miner_id, b"", base58.b58encode(RFC_SIG).decode())


def test_keypair_file_is_solana_format(tmp_path):
    pair = Keypair.from_seed(RFC_SEED)
    path = pair.save(tmp_path / "id.json")
    values = json.loads(path.read_text())
    assert values == list(RFC_SEED + RFC_PUB)  # solana-keygen: [seed(32) | public key(32)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keypair.load(path) == pair
    with pytest.raises(IdentityError) as exc:
        pair.save(path)
    assert exc.value.reason_code == "keypair_exists"
    # the miner id is the Solana address: base58 of the public key
    assert pair.miner_id == base58.b58encode(RFC_PUB).decode()
    assert decode_miner_id("11111111111111111111111111111111") == bytes(32)  # Solana's system program


@pytest.mark.parametrize("text", [
    "not json", "{}", "[1, 2, 3]", json.dumps([256] * 64), json.dumps([-1] * 64), json.dumps([True] * 64),
    json.dumps(list(RFC_SEED) + [0] * 32),  # public half does not match the seed
])
def test_malformed_keypairs_are_refused(text):
    with pytest.raises(IdentityError) as exc:
        Keypair.loads(text)
    assert exc.value.reason_code == "keypair_invalid"


@pytest.mark.parametrize("miner_id", ["", "0OIl" * 8, "1" * 31, base58.b58encode(bytes(33)).decode(), "é" * 40,
                                      base58.b58encode(bytes(31)).decode()])
def test_malformed_miner_ids_are_refused(miner_id):
    with pytest.raises(IdentityError) as exc:
        decode_miner_id(miner_id)
    assert exc.value.reason_code == "miner_id_invalid"


def test_signatures_verify_only_for_their_message_and_key():
    alice, eve = keypair("alice"), keypair("eve")
    sig = alice.sign(b"hello")
    verify(alice.miner_id, b"hello", sig)
    for who, msg, s in [(alice.miner_id, b"hellO", sig), (eve.miner_id, b"hello", sig),
                        (alice.miner_id, b"hello", eve.sign(b"hello")), (alice.miner_id, b"hello", "abc"),
                        (alice.miner_id, b"hello", "0" * 88), (alice.miner_id, b"hello", sig[:-2])]:
        with pytest.raises(IdentityError) as exc:
            verify(who, msg, s)
        assert exc.value.reason_code == "signature_invalid"


def test_canonical_messages_are_pinned():
    assert bundle_message("M", "S", "a" * 64, "b" * 64) == (
        b"kibotos bundle signature v1\nminer_id: M\nsubmission_id: S\nmanifest_sha256: " + b"a" * 64
        + b"\nmerkle_root: " + b"b" * 64 + b"\n")
    assert upload_request_message("M", "S", 10, "c" * 64, 123) == (
        b"kibotos upload request v1\nminer_id: M\nsubmission_id: S\nsize_bytes: 10\nsha256: " + b"c" * 64
        + b"\nrequested_at_ms: 123\n")


def test_sidecar_signs_the_manifest_hash_and_every_dataset_hash(signed):
    alice = keypair("alice")
    path = signed.write(alice, sign=False)
    sig = sign_bundle(path, alice)
    assert BundleSignature.model_validate_json(sidecar_path(path).read_text()) == sig
    sig.verify()
    assert set(sig.nodes) >= {"manifest", "kinematics/joint_pos", "kinematics/timestamps_ms", "video/primary/encoded"}
    # node hashes must combine into the signed root
    doctored = sig.model_copy(update={"nodes": {**sig.nodes, "kinematics/joint_pos": "0" * 64}})
    with pytest.raises(IdentityError) as exc:
        doctored.verify()
    assert exc.value.reason_code == "signature_malformed"
    with pytest.raises(ValueError):
        BundleSignature.model_validate(sig.model_dump(mode="json") | {"extra": 1})


def test_a_miner_cannot_sign_a_bundle_that_names_someone_else(signed):
    path = signed.write(keypair("alice"), sign=False)
    with pytest.raises(KibotosError) as exc:
        sign_bundle(path, keypair("eve"))
    assert exc.value.reason_code == "signer_mismatch"
