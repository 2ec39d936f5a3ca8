"""Typed, frozen settings built once at the edge (CLI / worker entry points).

Every value can be set through an environment variable ``KIBOTOS_<NAME>`` (e.g.
``KIBOTOS_BOOTSTRAP_SERVERS``). Processors receive a ``Settings`` object; they never
read the environment themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KIBOTOS_", frozen=True, extra="ignore")

    mode: Literal["embedded", "production"] = "embedded"
    # Where the embedded stack keeps its state (object store, chdb, stack.json).
    home: Path = Field(default=Path(".kibotos"))

    # Kafka
    bootstrap_servers: str | None = None  # None: embedded Tansu started by `kibotos up`
    topic_prefix: str = ""  # namespaces every topic, e.g. per test or per environment
    topic_partitions: int = 4
    consumer_group_prefix: str = "kibotos"

    # ClickHouse: a clickhouse-connect DSN. None: embedded chdb under <home>/chdb
    clickhouse_dsn: str | None = None

    # Object store: "file://<dir>" (embedded default) or "s3://bucket" with the endpoint below
    object_store_url: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"

    # Ingest API (kibotos.ingest): where miners upload, and what it accepts
    ingest_url: str | None = None  # clients: the API base URL; None = the running stack's (stack.json)
    ingest_host: str = "127.0.0.1"  # the server binds here (loopback unless deployed behind a proxy)
    ingest_port: int = 0  # 0 = a free port
    ingest_public_url: str | None = None  # base URL miners see (behind a proxy); None = the request's own
    ingest_secret: str | None = None  # HMAC key of upload tickets and local upload URLs; embedded: generated
    ingest_url_ttl_s: int = Field(default=900, ge=1)  # presigned upload URLs expire after this
    ingest_complete_grace_s: int = Field(default=3600, ge=0)  # complete-upload accepted this long after expiry
    ingest_max_upload_bytes: int = Field(default=512 << 20, ge=1)  # global bound on one bundle upload
    ingest_rate_per_minute: float = Field(default=30.0, gt=0)  # per-miner sustained upload requests
    ingest_rate_burst: int = Field(default=10, ge=1)  # per-miner burst
    ingest_global_rate_per_minute: float = Field(default=3000.0, gt=0)  # all miners together
    ingest_global_burst: int = Field(default=300, ge=1)
    ingest_max_concurrent_verifications: int = Field(default=4, ge=1)  # busy beyond: 503 + Retry-After
    ingest_request_max_skew_s: int = Field(default=300, ge=1)  # signed upload requests must be this fresh
    ingest_keep_rejected: bool = False  # keep bundles rejected at ingestion (audit) or delete them

    # Evidence jobs after gate E, in order, run by the GPU consumer group (gpu_consumers/):
    # gate F pose quality, IK residual, Genesis playback. Empty (KIBOTOS_EVIDENCE_JOBS='[]'):
    # accepted straight after gate E, the cheap chain only.
    evidence_jobs: tuple[str, ...] = ("pose", "ik", "playback")
    gpu_actors_per_kind: int = Field(default=1, ge=1)  # warm Ray actors per job kind per consumer

    # Logs of every process: one JSON object per line with the submission_id, or text
    log_format: Literal["json", "text"] = "json"
    log_level: str = "WARNING"

    # Rewards
    r_base: float = 10.0

    # Gate thresholds: path to a versioned YAML file; None = the packaged default
    gate_config_path: Path | None = None

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> "Settings":
        if self.mode == "production":
            missing = [
                name
                for name in ("bootstrap_servers", "clickhouse_dsn", "object_store_url")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    "production mode needs explicit " + ", ".join(f"KIBOTOS_{m.upper()}" for m in missing)
                )
            if self.clickhouse_dsn and self.clickhouse_dsn.startswith("chdb://"):
                raise ValueError("production mode refuses the embedded chdb store")
        return self

    @property
    def chdb_dsn(self) -> str:
        # chdb://<absolute path> gives chdb:///abs/dir. chdb compares engine paths
        # literally, so one directory must always be spelled the same way.
        return self.clickhouse_dsn or f"chdb://{(self.home / 'chdb').resolve()}"

    @property
    def store_url(self) -> str:
        return self.object_store_url or f"file://{(self.home / 'objects').resolve()}"
