"""Pre-verification integrity checks of an uploaded bundle (design §4, §11): pure
functions of a local file and the upload's claims, no broker, no database, no HTTP.

``verify_upload`` runs, cheapest first, and stops at the first failure with a reason code:

1. the signature sidecar — present (``signature_missing``), well-formed
   (``signature_malformed``), a valid Ed25519 signature (``signature_invalid``), by the
   miner who requested the upload (``miner_mismatch``), for this submission
   (``submission_id_mismatch``);
2. the archive — safety bounds and readability (``bundle_*`` codes of ``open_bundle``),
   then the hash tree: recomputed Merkle root and manifest hash equal the signed ones
   (``hash_mismatch``, naming the datasets that changed);
3. the manifest — strict JSON, schema and required fields (``manifest_missing``,
   ``manifest_invalid``), names the signer (``signer_mismatch``) and the submission;
4. the structure — only Zarr v3 node documents and chunk keys (``bundle_unexpected_entry``);
   declared sizes and chunk counts within ``Limits``
   (``dataset_too_large``, ``dataset_too_many_chunks``), required datasets, dtypes and
   shapes against the manifest (``missing_dataset``, ``wrong_dtype``, ``shape_mismatch``;
   the same function gate A uses) — from metadata only, no array is loaded;
5. the resource budgets (``kibotos.bundle.limits``): codecs allowed (``codec_not_allowed``),
   chunk sizes, bytes backed only by the fill value, and the primary video's container
   probed for resolution, pixel rate and frame count (``resource_limit_exceeded``, the
   limit named in the metrics) — the encoded video's bytes are read, no frame is decoded.

Semantic checks (units, robot registry, NaN, timestamps, physics) stay with the gates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kibotos.bundle.hashtree import HashTree, hash_bundle
from kibotos.bundle.manifest import Manifest, parse_manifest_document
from kibotos.bundle.reader import Limits, open_bundle
from kibotos.errors import BundleError, KibotosError
from kibotos.identity import BundleSignature, IdentityError

INGEST_GATE = "ingest_integrity"


class IngestRejection(KibotosError):
    """An upload refused by a pre-verification check; ``metrics`` explain why."""

    reason_code = "ingest_rejected"

    def __init__(self, reason_code: str, message: str, **metrics: Any):
        super().__init__(message, reason_code=reason_code)
        self.metrics = metrics


@dataclass(frozen=True)
class VerifiedBundle:
    tree: HashTree
    manifest: Manifest
    manifest_attrs: dict
    signature: BundleSignature
    arrays: dict[str, dict] = field(default_factory=dict)  # path -> {shape, dtype, nbytes, chunks}


def parse_signature(doc: Any) -> BundleSignature:
    if doc is None:
        raise IngestRejection("signature_missing", "the bundle is unsigned: send its signature sidecar "
                                                   "(<bundle>.sig.json) with the complete-upload call")
    try:
        sig = BundleSignature.model_validate(doc)
    except (ValidationError, ValueError, TypeError) as exc:
        raise IngestRejection("signature_malformed", f"the signature sidecar is malformed: {str(exc)[:300]}") from exc
    try:
        sig.verify()
    except IdentityError as exc:
        raise IngestRejection(exc.reason_code, str(exc), signer=sig.miner_id) from exc
    return sig


def verify_upload(path: str | Path, signature_doc: Any, *, miner_id: str, submission_id: str,
                  limits: Limits | None = None) -> VerifiedBundle:
    """Every pre-verification check on the stored bundle at ``path``.

    :param signature_doc: the sidecar as sent (a JSON object), or ``None``.
    :param miner_id: the authenticated miner who requested the upload.
    :param submission_id: the submission id the upload was requested for.
    :raises IngestRejection: the first failed check, with its reason code.
    """
    limits = limits or Limits()
    sig = parse_signature(signature_doc)
    if sig.miner_id != miner_id:
        raise IngestRejection("miner_mismatch", f"signed by {sig.miner_id}, uploaded by {miner_id}",
                              signer=sig.miner_id, uploader=miner_id)
    if str(sig.submission_id) != submission_id:
        raise IngestRejection("submission_id_mismatch", f"signature is for submission {sig.submission_id}, "
                              f"upload for {submission_id}")
    try:
        tree = hash_bundle(path, limits)
    except BundleError as exc:
        raise IngestRejection(exc.reason_code, str(exc)) from exc
    if tree.manifest_raw is None:
        raise IngestRejection("manifest_missing", "the bundle has no manifest/zarr.json")
    if tree.merkle_root != sig.merkle_root or tree.manifest_sha256 != sig.manifest_sha256:
        changed = tree.diff(sig.nodes) if sig.nodes else []
        raise IngestRejection("hash_mismatch", "the bundle's content does not match its signed hashes "
                              "(modified after signing)", merkle_root=tree.merkle_root,
                              signed_merkle_root=sig.merkle_root, manifest_sha256=tree.manifest_sha256,
                              signed_manifest_sha256=sig.manifest_sha256, changed_nodes=changed[:50])
    try:
        attrs, manifest = parse_manifest_document(tree.manifest_raw, limits.max_metadata_bytes)
    except BundleError as exc:
        raise IngestRejection(exc.reason_code, str(exc)) from exc
    if manifest.miner_id != sig.miner_id:
        raise IngestRejection("signer_mismatch", f"the manifest names miner {manifest.miner_id[:64]!r}, the "
                              f"bundle is signed by {sig.miner_id}", manifest_miner_id=manifest.miner_id[:64],
                              signer=sig.miner_id)
    if str(manifest.submission_id) != submission_id:
        raise IngestRejection("submission_id_mismatch", f"the manifest's submission_id {manifest.submission_id} "
                              f"is not the upload's {submission_id}")
    problems = tree.problems()
    if problems:
        raise IngestRejection("bundle_unexpected_entry", f"not a well-formed Zarr v3 bundle: {problems[0]}",
                              entries=problems[:20])
    arrays = _check_datasets(path, manifest, limits)
    return VerifiedBundle(tree, manifest, attrs, sig, arrays)


def _check_budgets(view, infos, manifest: Manifest) -> None:
    """The resource budgets a bundle must fit before it enters the pipeline, from metadata
    and the video container's header (nothing decoded): per array the chunk size, codecs
    allowed and bytes backed only by the fill value; the primary video's resolution, rate
    and frame count (``primary_video_budget``, the check gate A repeats)."""
    from kibotos.bundle.limits import check
    from kibotos.bundle.reader import TIMESTAMPS
    from processors.gate_a_integrity import primary_video_budget

    check("max_kinematic_samples", view.info(TIMESTAMPS).shape[0], view.limits.max_kinematic_samples,
          "kinematic samples")
    for a in infos:
        view.check_readable(a)
    primary_video_budget(view, manifest)


def _metrics(exc: BaseException) -> dict:
    found = getattr(exc, "metrics", None)
    return dict(found) if isinstance(found, dict) else {}


def _check_datasets(path: str | Path, manifest: Manifest, limits: Limits) -> dict[str, dict]:
    from processors.gate_a_integrity import structure_problem

    try:
        with open_bundle(path, limits) as view:
            infos = view.arrays()
            arrays = {a.path: {"shape": list(a.shape), "dtype": a.dtype, "nbytes": a.nbytes, "chunks": a.chunks}
                      for a in infos}
            for a in infos:
                if a.nbytes > limits.max_array_bytes:
                    raise IngestRejection("dataset_too_large", f"{a.path} declares {a.nbytes} bytes "
                                          f"> {limits.max_array_bytes}", dataset=a.path, shape=list(a.shape))
                if a.chunks > limits.max_chunks:
                    raise IngestRejection("dataset_too_many_chunks", f"{a.path} declares {a.chunks} chunks "
                                          f"> {limits.max_chunks}", dataset=a.path, shape=list(a.shape))
            problem, details = structure_problem(view, manifest)
            if problem is None:
                _check_budgets(view, infos, manifest)
    except IngestRejection:
        raise
    except BundleError as exc:
        raise IngestRejection(exc.reason_code, str(exc), **_metrics(exc)) from exc
    except Exception as exc:  # zarr refusing hostile metadata (codecs, dtypes, shapes)
        raise IngestRejection("bundle_malformed", f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    if problem is not None:
        raise IngestRejection(problem, f"{problem}: {details}", **details)
    return arrays
