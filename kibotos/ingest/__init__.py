"""The ingestion edge: where untrusted miners' bundles enter Kibotos.

Flow (design §4 and §11)::

    miner                         ingest API                      object store / broker
      │ POST /v1/uploads  (signed request) ─► verify request signature, freshness,
      │                                      size limit, per-miner + global rate limit
      │ ◄── ticket + presigned PUT URL (expiring, bound to key, size and SHA-256)
      │ PUT put_url ───────────────────────────────────────────────► object store
      │ POST /v1/uploads/{id}/complete  (ticket + signature sidecar)
      │                                   ─► stored size + SHA-256, signature, hash tree,
      │                                      manifest, structure, limits, replay
      │ ◄── 200 accepted ─────────── emit submissions.received ────► gates A–E …
      │ ◄── 422 reason_code ──────── emit verdicts (rejected at ingest_integrity, per upload_id)
      │ GET /v1/uploads/{upload_id} (its own verdict), GET /v1/reports/{submission_id},
      │ GET /v1/miners/{miner_id}/ledger

Why FastAPI: the API is a public contract with untrusted clients, so its OpenAPI spec
is generated from the same pydantic models that validate requests (one source of truth,
testable with schemathesis); handlers are plain functions over ``IngestService``; it
runs under uvicorn in a thread of the embedded stack and under any ASGI server in
production. The stdlib server of the read API would need hand-written validation and
spec. Modules: ``checks`` (pure pre-verification), ``service`` (logic), ``app``
(routes), ``server`` (uvicorn thread), ``client`` (the miner side), ``tickets``,
``ratelimit``, ``receipts``, ``nonces`` (single-use signed requests).
"""
