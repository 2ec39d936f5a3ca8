"""The topic catalogue: every topic's name, partitions, key, event schema and serializer.

Nothing outside this package spells a topic name; processors receive ``TopicSpec``
objects from a ``Catalogue`` built once from the settings.
"""

from topics.catalogue import Catalogue, TopicSpec
from topics.serializers import AvroSerializer

__all__ = ["AvroSerializer", "Catalogue", "TopicSpec"]
