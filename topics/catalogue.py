"""Every topic declared once, bound to its key field and event serializer.

The chain of gate topics follows the architecture: ``submissions.received`` → gate A →
… → gate E, each gate publishing survivors to ``gates.<x>.passed`` and failures to
``verification.rejected``; survivors of gate E go through the evidence jobs
(``jobs.pose`` → ``jobs.ik`` → ``jobs.playback`` → ``jobs.align``, run by the GPU
consumer group) to ``evidence.completed``; the deciders publish ``verdicts`` and
``ledger.entries``; any processor parks what it cannot handle in ``dead.letters``.

A ``Catalogue`` applies a name prefix (one environment or one test per prefix) and a
partition count to these declarations. Topic ids are the unprefixed names: stable
strings that operators see in dashboards whatever the prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpu_consumers.registry import EVIDENCE_GATES, RESERVED
from kibotos.errors import KibotosError
from topics.serializers import AvroSerializer

GATES_WITH_PASS_TOPIC = ("a", "b", "c", "d", "e")
# expensive evidence jobs run by the GPU consumer group (gpu_consumers/), one topic per
# kind (XMimic training is no evidence kind: its job consumes training.requests). The VLM is
# no job kind of its own: it is a provider used inside the ``align`` job (kibotos.vlm).
JOB_KINDS = (*EVIDENCE_GATES, *RESERVED)
# XGen stages in order, each a job kind ``xgen_<stage>`` on the same consumer group
XGEN_STAGES = ("pose", "retarget", "interaction", "augment", "export")

# (id, event, key_field). The dead-letter key is the failed record's original key, which
# the dead_letter event carries in its ``key`` field.
_DECLARATIONS: tuple[tuple[str, str, str], ...] = (
    ("submissions.received", "submission_received", "submission_id"),
    *((f"gates.{g}.passed", "submission_in_flight", "submission_id") for g in GATES_WITH_PASS_TOPIC),
    *((f"jobs.{kind}", "submission_in_flight", "submission_id") for kind in JOB_KINDS),
    ("evidence.completed", "submission_in_flight", "submission_id"),
    ("novelty.completed", "submission_in_flight", "submission_id"),
    ("verification.rejected", "verification_rejected", "submission_id"),
    ("verdicts", "verdict", "submission_id"),
    ("ledger.entries", "ledger_entry", "submission_id"),
    ("dead.letters", "dead_letter", "key"),
    # XGen, the data factory (gpu_consumers/xgen_jobs.py): a request is the pose job's
    # input; each later stage has its own job topic (export: one record per clip)
    ("xgen.requests", "xgen_request", "request_id"),
    *((f"xgen.jobs.{stage}", "xgen_in_flight", "request_id") for stage in XGEN_STAGES[1:]),
    ("xgen.progress", "xgen_progress", "request_id"),
    ("xgen.clips", "xgen_clip", "request_id"),
    ("xgen.rejected", "xgen_in_flight", "request_id"),
    # datasets (streams/dataset_builder.py): what each published version announces; its
    # attribution payments also go to ledger.entries
    ("datasets.versions", "dataset_version", "dataset"),
    ("datasets.episodes", "dataset_episode", "dataset"),
    ("datasets.attributions", "attribution", "entry_id"),
    # XMimic evaluations (kibotos eval, kibotos/xmimic/evals.py): one record per clip and split
    ("policy.evals", "policy_eval", "policy_id"),
    # XMimic training (gpu_consumers/training_jobs.py): requests are the train job's input;
    # progress carries the whole run state (queued, per iteration, done/failed)
    ("training.requests", "training_request", "run_id"),
    ("training.progress", "training_progress", "run_id"),
    # XMimic evaluation as a job (gpu_consumers/policy_eval_jobs.py): answered on policy.evals
    ("eval.requests", "eval_request", "policy_id"),
)


@dataclass(frozen=True, kw_only=True)
class TopicSpec:
    """One topic: where it lives, how many partitions, how its records are keyed and encoded.

    :param id: stable, unprefixed topic id, e.g. ``"gates.a.passed"``.
    :param name: the broker-side name (prefix applied).
    :param key_field: record field whose value is the message key; keying by
        ``submission_id`` keeps every event of a submission on one partition, in order.
    :param event: schema name in ``schemas_avro/``.
    """

    id: str
    name: str
    partitions: int
    key_field: str = "submission_id"
    event: str
    serializer: AvroSerializer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "serializer", AvroSerializer(self.event))

    def key(self, record: Mapping[str, Any]) -> bytes | None:
        """The message key of ``record`` (UTF-8 for strings, bytes passed through)."""
        value = record.get(self.key_field)
        if value is None or isinstance(value, bytes):
            return value
        return str(value).encode()

    def serialize(self, record: Mapping[str, Any]) -> bytes:
        return self.serializer.dumps(record)

    def deserialize(self, data: bytes) -> dict[str, Any]:
        return self.serializer.loads(data)


class Catalogue:
    """The topics of one deployment: declarations with a name prefix and partition count.

    :param prefix: prepended verbatim to every topic name (``f"{prefix}{id}"``).
    :param partitions: partitions of every topic (gates scale out to this many workers).
    """

    def __init__(self, prefix: str = "", partitions: int = 4):
        if partitions < 1:
            raise KibotosError(f"partitions must be >= 1, got {partitions}", reason_code="config_invalid")
        self.prefix = prefix
        self.partitions = partitions
        self._specs = {
            topic_id: TopicSpec(
                id=topic_id, name=f"{prefix}{topic_id}", partitions=partitions, key_field=key_field, event=event
            )
            for topic_id, event, key_field in _DECLARATIONS
        }

    @classmethod
    def from_settings(cls, settings) -> "Catalogue":
        """Build from ``kibotos.config.settings.Settings`` (``topic_prefix``, ``topic_partitions``)."""
        return cls(prefix=settings.topic_prefix, partitions=settings.topic_partitions)

    def __repr__(self) -> str:
        return f"Catalogue(prefix={self.prefix!r}, partitions={self.partitions})"

    def get(self, topic_id: str) -> TopicSpec:
        try:
            return self._specs[topic_id]
        except KeyError:
            raise KibotosError(
                f"unknown topic id {topic_id!r}; available: {', '.join(self._specs)}", reason_code="unknown_topic"
            ) from None

    def all(self) -> list[TopicSpec]:
        """Every topic, in pipeline order."""
        return list(self._specs.values())

    def by_name(self, name: str) -> TopicSpec:
        """The spec of a broker-side (prefixed) topic name, e.g. from ``Message.topic()``."""
        for spec in self._specs.values():
            if spec.name == name:
                return spec
        raise KibotosError(f"topic {name!r} is not in {self!r}", reason_code="unknown_topic")

    def gate_passed(self, gate: str) -> TopicSpec:
        """The pass topic of gate ``gate`` (``"a"`` … ``"e"``, case-insensitive)."""
        gate = gate.lower()
        if gate not in GATES_WITH_PASS_TOPIC:
            raise KibotosError(
                f"gate {gate!r} has no pass topic; gates with one: {', '.join(GATES_WITH_PASS_TOPIC)}",
                reason_code="unknown_topic",
            )
        return self._specs[f"gates.{gate}.passed"]

    def job(self, kind: str) -> TopicSpec:
        """The job topic of an evidence kind (``"pose"``, ``"ik"``, ``"playback"``, …)."""
        if kind not in JOB_KINDS:
            raise KibotosError(f"no job kind {kind!r}; kinds: {', '.join(JOB_KINDS)}", reason_code="unknown_topic")
        return self._specs[f"jobs.{kind}"]

    @property
    def evidence_completed(self) -> TopicSpec:
        return self._specs["evidence.completed"]

    @property
    def novelty_completed(self) -> TopicSpec:
        return self._specs["novelty.completed"]

    @property
    def submissions_received(self) -> TopicSpec:
        return self._specs["submissions.received"]

    @property
    def verification_rejected(self) -> TopicSpec:
        return self._specs["verification.rejected"]

    @property
    def verdicts(self) -> TopicSpec:
        return self._specs["verdicts"]

    @property
    def ledger_entries(self) -> TopicSpec:
        return self._specs["ledger.entries"]

    @property
    def dead_letters(self) -> TopicSpec:
        return self._specs["dead.letters"]

    def xgen_input(self, stage: str) -> TopicSpec:
        """The input topic of XGen stage ``stage``: ``xgen.requests`` for pose, else
        ``xgen.jobs.<stage>``."""
        if stage not in XGEN_STAGES:
            raise KibotosError(f"no XGen stage {stage!r}; stages: {', '.join(XGEN_STAGES)}", reason_code="unknown_topic")
        return self._specs["xgen.requests" if stage == XGEN_STAGES[0] else f"xgen.jobs.{stage}"]
