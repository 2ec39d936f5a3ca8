"""Miner identities (Ed25519, Solana-compatible) and bundle signatures.

**Keypair file** — exactly Solana's ``solana-keygen`` format: a JSON array of 64 integers,
the 32-byte Ed25519 seed followed by the 32-byte public key. The **miner id** is the
base58 public key (a Solana address), so a miner may reuse a wallet keypair and anyone
can check a signature from the id alone.

**Bundle signature** — the miner signs this canonical UTF-8 text (``bundle_message``)::

    kibotos bundle signature v1
    miner_id: <base58 public key>
    submission_id: <UUID from the manifest>
    manifest_sha256: <hex SHA-256 of manifest/zarr.json>
    merkle_root: <hex Merkle root over every dataset and attribute set>

The Merkle root commits to every node hash (``kibotos.bundle.hashtree``), so the
signature covers the manifest hash and all dataset hashes. The signature travels in a
**sidecar** ``<bundle>.sig.json`` (``BundleSignature``), sent in the body of the
complete-upload call; it also lists the node hashes so that a mismatch names the
dataset that changed.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from kibotos.bundle.hashtree import HashTree, hash_bundle, root_of_leaves
from kibotos.bundle.manifest import parse_manifest_document
from kibotos.bundle.reader import Limits
from kibotos.errors import KibotosError

SIGNATURE_FORMAT = "kibotos.bundle-signature.v1"
SIDECAR_SUFFIX = ".sig.json"
_HEX64 = r"^[0-9a-f]{64}$"
_B58 = r"^[1-9A-HJ-NP-Za-km-z]+$"


class IdentityError(KibotosError):
    """A keypair, miner id or signature is malformed or does not verify."""

    reason_code = "signature_invalid"


def decode_miner_id(miner_id: str) -> bytes:
    """The 32-byte public key of a base58 miner id; ``IdentityError(miner_id_invalid)``."""
    try:
        raw = base58.b58decode(miner_id.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise IdentityError(f"miner id {miner_id[:60]!r} is not base58", reason_code="miner_id_invalid") from exc
    if len(raw) != 32 or base58.b58encode(raw).decode() != miner_id:
        raise IdentityError(f"miner id {miner_id[:60]!r} is not a 32-byte base58 public key",
                            reason_code="miner_id_invalid")
    return raw


def is_miner_id(value: str) -> bool:
    try:
        decode_miner_id(value)
        return True
    except IdentityError:
        return False


@dataclass(frozen=True)
class Keypair:
    """An Ed25519 keypair. ``seed`` is secret; ``public_key`` is the identity."""

    seed: bytes
    public_key: bytes

    @classmethod
    def generate(cls) -> "Keypair":
        return cls.from_seed(os.urandom(32))

    @classmethod
    def from_seed(cls, seed: bytes) -> "Keypair":
        if len(seed) != 32:
            raise IdentityError("an Ed25519 seed is 32 bytes", reason_code="keypair_invalid")
        public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(seed, public)

    @classmethod
    def loads(cls, text: str) -> "Keypair":
        """Parse a Solana keypair JSON array (64 bytes: seed + public key)."""
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise IdentityError("keypair file is not JSON", reason_code="keypair_invalid") from exc
        if (not isinstance(values, list) or len(values) != 64
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in values)):
            raise IdentityError("a keypair is a JSON array of 64 integers in 0..255 (Solana format)",
                                reason_code="keypair_invalid")
        pair = cls.from_seed(bytes(values[:32]))
        if pair.public_key != bytes(values[32:]):
            raise IdentityError("the keypair's public key does not match its seed", reason_code="keypair_invalid")
        return pair

    @classmethod
    def load(cls, path: str | Path) -> "Keypair":
        try:
            return cls.loads(Path(path).read_text())
        except OSError as exc:
            raise IdentityError(f"cannot read keypair {path}: {exc.strerror}", reason_code="keypair_invalid") from exc

    def dumps(self) -> str:
        return json.dumps(list(self.seed + self.public_key), separators=(",", ":"))

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the keypair file readable by its owner only (0600)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError as exc:
            raise IdentityError(f"{path} exists (refusing to overwrite a key)", reason_code="keypair_exists") from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(self.dumps())
        return path

    @property
    def miner_id(self) -> str:
        return base58.b58encode(self.public_key).decode()

    def sign(self, message: bytes) -> str:
        """Ed25519 signature of ``message``, base58 (as Solana prints signatures)."""
        return base58.b58encode(Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)).decode()


def verify(miner_id: str, message: bytes, signature: str) -> None:
    """Check ``signature`` (base58) of ``message`` by ``miner_id``.

    :raises IdentityError: ``miner_id_invalid`` or ``signature_invalid``.
    """
    public = decode_miner_id(miner_id)
    try:
        sig = base58.b58decode(signature.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise IdentityError("signature is not base58") from exc
    if len(sig) != 64:
        raise IdentityError(f"an Ed25519 signature is 64 bytes, got {len(sig)}")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(sig, message)
    except (InvalidSignature, ValueError) as exc:
        raise IdentityError(f"signature does not verify for miner {miner_id}") from exc


def bundle_message(miner_id: str, submission_id: str, manifest_sha256: str, merkle_root: str) -> bytes:
    """The canonical text a bundle signature covers (see the module docstring)."""
    return (f"kibotos bundle signature v1\nminer_id: {miner_id}\nsubmission_id: {submission_id}\n"
            f"manifest_sha256: {manifest_sha256}\nmerkle_root: {merkle_root}\n").encode()


def upload_request_message(miner_id: str, submission_id: str, size_bytes: int, sha256: str,
                           requested_at_ms: int) -> bytes:
    """The canonical text of an upload request: proves the miner asked for this upload."""
    return (f"kibotos upload request v1\nminer_id: {miner_id}\nsubmission_id: {submission_id}\n"
            f"size_bytes: {size_bytes}\nsha256: {sha256}\nrequested_at_ms: {requested_at_ms}\n").encode()


class BundleSignature(BaseModel):
    """The signature sidecar (``<bundle>.sig.json``) of one bundle."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = Field(SIGNATURE_FORMAT, pattern=r"^kibotos\.bundle-signature\.v1$")
    miner_id: str = Field(min_length=32, max_length=44, pattern=_B58)
    submission_id: uuid.UUID
    manifest_sha256: str = Field(pattern=_HEX64)
    merkle_root: str = Field(pattern=_HEX64)
    signature: str = Field(min_length=64, max_length=100, pattern=_B58)
    nodes: dict[str, str] = Field(default_factory=dict, max_length=20_000,
                                  description="node path -> node hash (diagnostics; the root is what is signed)")

    def message(self) -> bytes:
        return bundle_message(self.miner_id, str(self.submission_id), self.manifest_sha256, self.merkle_root)

    def verify(self) -> None:
        """The signature is the miner's over this root and manifest hash; listed node
        hashes, if any, must combine into the signed root."""
        verify(self.miner_id, self.message(), self.signature)
        if self.nodes and root_of_leaves(self.nodes) != self.merkle_root:
            raise IdentityError("the sidecar's node hashes do not combine into its signed root",
                                reason_code="signature_malformed")


def sign_tree(tree: HashTree, submission_id: str, keypair: Keypair) -> BundleSignature:
    if tree.manifest_sha256 is None:
        raise IdentityError("the bundle has no manifest/zarr.json to sign", reason_code="manifest_missing")
    message = bundle_message(keypair.miner_id, submission_id, tree.manifest_sha256, tree.merkle_root)
    # validated from its wire form: the submission id arrives as text
    return BundleSignature.model_validate({
        "miner_id": keypair.miner_id, "submission_id": submission_id, "manifest_sha256": tree.manifest_sha256,
        "merkle_root": tree.merkle_root, "signature": keypair.sign(message), "nodes": tree.leaves()})


def sidecar_path(bundle: str | Path) -> Path:
    bundle = Path(bundle)
    return bundle.with_name(bundle.name + SIDECAR_SUFFIX)


def sign_bundle(bundle: str | Path, keypair: Keypair, limits: Limits | None = None,
                write: bool = True) -> BundleSignature:
    """Hash, check and sign a bundle; write ``<bundle>.sig.json`` unless ``write=False``.

    Refuses to sign a bundle whose manifest names another miner (it would be rejected).

    :raises BundleError: the bundle is unreadable or its manifest invalid.
    :raises IdentityError: the manifest's ``miner_id`` is not this keypair's.
    """
    tree = hash_bundle(bundle, limits)
    if tree.manifest_raw is None:
        raise IdentityError("the bundle has no manifest/zarr.json to sign", reason_code="manifest_missing")
    _, manifest = parse_manifest_document(tree.manifest_raw, (limits or Limits()).max_metadata_bytes)
    if manifest.miner_id != keypair.miner_id:
        raise IdentityError(f"the manifest's miner_id {manifest.miner_id!r} is not this keypair's "
                            f"{keypair.miner_id}", reason_code="signer_mismatch")
    sig = sign_tree(tree, str(manifest.submission_id), keypair)
    if write:
        sidecar_path(bundle).write_text(sig.model_dump_json(indent=2))
    return sig
