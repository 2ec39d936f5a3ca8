"""Typed, frozen settings built once at the edge (CLI / worker entry points).

Every value can be set through an environment variable ``KIBOTOS_<NAME>`` (e.g.
``KIBOTOS_BOOTSTRAP_SERVERS``). Processors receive a ``Settings`` object; they never
read the environment themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpu_consumers.registry import EVIDENCE_GATES
from kibotos.media.gl import default_genesis_cache
from topics.catalogue import XGEN_STAGES


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
    # an accepted submission with no final verdict this long after it was (last) sent to
    # verification is stuck: its owner's re-upload of the same bundle resumes it
    ingest_resume_after_s: int = Field(default=900, ge=0)

    # Evidence jobs after gate E, in order, run by the GPU consumer group (gpu_consumers/):
    # gate F pose quality, IK residual, Genesis playback, sim-vs-real alignment (after
    # playback: it reads the keyframe pairs), task completion. Empty
    # (KIBOTOS_EVIDENCE_JOBS='[]'): straight from gate E to novelty and the decision.
    # Default: every evidence kind of the registry, in its order (gpu_consumers.registry).
    evidence_jobs: tuple[str, ...] = tuple(EVIDENCE_GATES)
    gpu_actors_per_kind: int = Field(default=1, ge=1)  # warm Ray actors per job kind per consumer
    # Genesis (playback, XGen previews): its kernel, asset and shader caches under this folder
    # (default $XDG_CACHE_HOME/kibotos/genesis, else ~/.cache/kibotos/genesis: persistent, so
    # a second process reuses what the first compiled); the offscreen renderers' PyOpenGL
    # platform (None: the environment's PYOPENGL_PLATFORM, else OSMesa on a CPU backend).
    # Genesis and PyOpenGL read both from the environment: a GPU actor sets them once when it
    # starts (kibotos.media.gl.configure_process); handlers only pass them on.
    genesis_cache_dir: Path = Field(default_factory=default_genesis_cache)
    gl_platform: Literal["osmesa", "egl"] | None = None
    # XGen (the data factory) job kinds the stack's GPU consumers also serve, one per stage
    # (gpu_consumers/xgen_jobs.py); empty: the stack runs no XGen jobs. Their thresholds:
    # a versioned YAML file; None = the packaged kibotos/config/xgen.yaml
    xgen_jobs: tuple[str, ...] = tuple(f"xgen_{stage}" for stage in XGEN_STAGES)
    xgen_config_path: Path | None = None
    # XMimic training job kinds the stack's GPU consumers also serve (``train``:
    # gpu_consumers/training_jobs.py, input training.requests); empty: no training jobs
    training_jobs: tuple[str, ...] = ("train",)

    # Logs of every process: one JSON object per line with the submission_id, or text
    log_format: Literal["json", "text"] = "json"
    log_level: str = "WARNING"

    # Scores and rewards (kibotos.scoring): weights, reward curve, R_base / R_scale from a
    # versioned YAML file; None = the packaged kibotos/config/scoring.yaml
    scoring_config_path: Path | None = None
    # Novelty and duplication (kibotos.novelty) after the evidence jobs, against the index
    # in ClickHouse. False: no novelty stage, S_novel is missing (its policy applies).
    novelty: bool = True
    novelty_config_path: Path | None = None  # None = the packaged kibotos/config/novelty.yaml

    # Gate thresholds: path to a versioned YAML file; None = the packaged default
    gate_config_path: Path | None = None
    # Alignment evidence (job "align") thresholds and the VLM calibration table: a
    # versioned YAML file; None = the packaged kibotos/config/alignment.yaml
    alignment_config_path: Path | None = None
    # validator-fault retries (streams.stage.FaultPolicy); None = kibotos/config/faults.yaml
    fault_config_path: Path | None = None

    # VLM provider used by the align job (kibotos.vlm registry). None: no VLM; alignment
    # and task scores come from the non-VLM evidence and the report says so.
    # "openai": an OpenAI-compatible chat-completions endpoint (e.g. vLLM serving
    # Qwen2.5-VL) at vlm_base_url (".../v1"), model vlm_model.
    vlm_provider: str | None = None
    vlm_base_url: str | None = None
    vlm_model: str | None = None
    vlm_api_key: SecretStr | None = None
    vlm_timeout_s: float = Field(default=30.0, gt=0)  # per attempt
    vlm_max_retries: int = Field(default=1, ge=0)  # extra attempts after a timeout / 5xx / 429 / refused connection

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

    def as_env(self) -> dict[str, str]:
        """The ``KIBOTOS_*`` variables that give a child process these settings: every
        field whose value differs from its default (a ``None`` value cannot be spelled in
        the environment; its default is ``None`` for every optional field)."""
        env: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None or value == field.get_default(call_default_factory=True):
                continue
            if isinstance(value, SecretStr):
                text = value.get_secret_value()
            elif isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (tuple, list, dict)):
                text = json.dumps(list(value) if isinstance(value, tuple) else value)
            else:
                text = str(value)
            env[f"KIBOTOS_{name.upper()}"] = text
        return env
