"""ensure_topics against a real Tansu broker."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

from kibotos.errors import ServiceError
from topics.admin import ensure_topics
from topics.catalogue import Catalogue

pytestmark = pytest.mark.integration


def test_creates_every_topic_with_its_partitions_and_is_idempotent(tansu):
    cat = Catalogue(prefix="admin-test.", partitions=3)
    ensure_topics(tansu.bootstrap, cat.all())
    ensure_topics(tansu.bootstrap, cat.all())  # existing topics are fine
    topics = AdminClient({"bootstrap.servers": tansu.bootstrap}).list_topics(timeout=10).topics
    for spec in cat.all():
        assert len(topics[spec.name].partitions) == 3


def test_partition_mismatch_is_an_error(tansu):
    ensure_topics(tansu.bootstrap, Catalogue(prefix="mismatch.", partitions=2).all())
    with pytest.raises(ServiceError, match="expected 5"):
        ensure_topics(tansu.bootstrap, Catalogue(prefix="mismatch.", partitions=5).all())


def test_unreachable_broker_is_a_service_error():
    from infra.tansu import free_loopback_port

    with pytest.raises(ServiceError):
        ensure_topics(f"127.0.0.1:{free_loopback_port()}", Catalogue(prefix="x.").all()[:1], timeout=2)
