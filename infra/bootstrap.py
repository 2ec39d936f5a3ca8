"""Prepare a deployment before its workers start: ``python -m infra.bootstrap``.

Idempotent, so it runs on every deploy (docker compose: the ``kibotos-init`` service;
Kubernetes: the ``kibotos-init`` Job), with the same ``KIBOTOS_*`` settings as the workers:

1. every topic of the catalogue, created with its partition count
   (``KIBOTOS_TOPIC_PARTITIONS``) — never left to broker auto-creation;
2. the ClickHouse migrations (``infra/clickhouse/migrations``);
3. the object store bucket, for an ``s3://`` store.

Exit code 0 when everything is in place, 1 with a one-line reason otherwise.
"""

from __future__ import annotations

import argparse
import sys

from kibotos.errors import KibotosError


def bootstrap(settings, log=print) -> None:
    """Topics, migrations and bucket for ``settings`` (``kibotos.config.settings.Settings``).

    :raises KibotosError: a service is unreachable or refuses (``ServiceError``), or the
        configuration is incomplete.
    """
    from infra.migrate import apply_migrations
    from kibotos.objectstore import S3ObjectStore, store_from_settings
    from kibotos.warehouse import open_client
    from topics.admin import ensure_topics
    from topics.catalogue import Catalogue

    if not settings.bootstrap_servers:
        raise KibotosError("no Kafka cluster: set KIBOTOS_BOOTSTRAP_SERVERS", reason_code="config_invalid")
    catalogue = Catalogue.from_settings(settings)
    ensure_topics(settings.bootstrap_servers, catalogue.all())
    log(f"topics: {len(catalogue.all())} x {catalogue.partitions} partitions (prefix {catalogue.prefix!r})")
    client = open_client(settings.chdb_dsn)
    try:
        applied = apply_migrations(client)
    finally:
        client.close()
    log(f"migrations: {', '.join(applied) if applied else 'up to date'}")
    store = store_from_settings(settings)
    if isinstance(store, S3ObjectStore):
        store.ensure_bucket()
        log(f"bucket: {store.bucket}")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    from kibotos.config.settings import Settings

    try:
        bootstrap(Settings())
    except KibotosError as exc:
        print(f"bootstrap failed: [{exc.reason_code}] {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # pydantic: invalid KIBOTOS_* values
        print(f"bootstrap failed: invalid settings: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
