"""The embedded stack's broker: Tansu with its log on disk (default) or in memory.

Durable (the default of ``kibotos up``): Tansu's ``s3://`` storage engine on a SeaweedFS
server whose data directory lives under the stack's home. Records and committed consumer
offsets survive a SIGKILL of the broker, of SeaweedFS or of ``kibotos up`` itself, so a
restarted stack resumes every in-flight submission where its consumers left off.
Measured against ``memory://`` and ``postgres://`` in ``benchmarks/RESULTS.md``
("Broker storage engines"); SeaweedFS costs 10–20 s at start-up.

Ephemeral (``kibotos up --ephemeral``, the test fixtures): ``memory://``, starts in well
under a second, loses everything when the broker exits.

A supervisor calls ``revive()`` now and then: a dead SeaweedFS or Tansu is started again
on the ports (and with the credentials) it had, so the gate workers and consumers
reconnect to the same address.
"""

from __future__ import annotations

from pathlib import Path

from infra.seaweedfs import SeaweedS3
from infra.tansu import TansuBroker
from kibotos.errors import ServiceError

BUCKET = "kibotos-broker"


class EmbeddedBroker:
    """:param data_dir: where SeaweedFS keeps the broker's log (durable mode).
    :param ephemeral: keep the log in memory instead (nothing survives a restart)."""

    def __init__(self, data_dir: Path | None = None, *, ephemeral: bool = False, log=lambda msg: None):
        if not ephemeral and data_dir is None:
            raise ValueError("a durable broker needs a data directory")
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.ephemeral = ephemeral
        self.log = log
        self.s3: SeaweedS3 | None = None
        self.tansu: TansuBroker | None = None

    @property
    def storage_engine(self) -> str:
        return "memory://tansu/" if self.ephemeral else f"s3://{BUCKET}/"

    @property
    def bootstrap(self) -> str:
        if self.tansu is None:
            raise ServiceError("the embedded broker is not running")
        return self.tansu.bootstrap

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in (("broker", self.tansu), ("broker-s3", self.s3))
                if proc is not None and proc.pid is not None}

    def start(self) -> "EmbeddedBroker":
        try:
            if not self.ephemeral:
                self._start_s3()
            self._start_tansu()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_s3(self, ports=None, credentials=None) -> None:
        self.s3 = SeaweedS3(self.data_dir, ports=ports, credentials=credentials).start()
        client = self.s3.client()
        if not client.bucket_exists(BUCKET):
            client.make_bucket(BUCKET)

    def _start_tansu(self, port: int | None = None) -> None:
        env = {}
        if self.s3 is not None:
            env = {"AWS_ENDPOINT": self.s3.endpoint, "AWS_ALLOW_HTTP": "true",
                   "AWS_ACCESS_KEY_ID": self.s3.access_key, "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
                   "AWS_DEFAULT_REGION": self.s3.region}
        self.tansu = TansuBroker(storage_engine=self.storage_engine, env=env, port=port,
                                 startup_timeout=60.0).start()

    def revive(self) -> list[str]:
        """Start again whatever part died, on its old ports; returns what was restarted."""
        restarted = []
        port = self.tansu.port if self.tansu is not None else None  # stop() clears it
        if self.s3 is not None and not self.s3.alive():
            ports, creds = self.s3.ports, (self.s3.access_key, self.s3.secret_key)
            self.s3.stop(grace_s=0.5)
            self._start_s3(ports, creds)
            restarted.append("broker-s3")
            if self.tansu is not None and self.tansu.alive():
                # what it remembers of the store (object versions, watermarks) may be
                # stale: it starts again from what the store holds
                self.tansu.stop(grace_s=2.0)
        if self.tansu is not None and not self.tansu.alive():
            self.tansu.stop(grace_s=0.5)
            self._start_tansu(port)
            restarted.append("broker")
        return restarted

    def stop(self) -> None:
        # the broker first: it flushes to the object store on SIGTERM
        if self.tansu is not None:
            self.tansu.stop()
        if self.s3 is not None:
            self.s3.stop(grace_s=5.0)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
