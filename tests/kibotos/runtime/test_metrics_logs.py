"""Prometheus accounting of stages and JSON log lines carrying the submission id."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import uuid

from prometheus_client import REGISTRY

from kibotos.runtime.logs import JsonFormatter, SubmissionFilter, submission_context
from kibotos.runtime.metrics import render
from streams.stages import Record, build_stages, handle_observed
from tests.streams.test_stages import CONFIG, SCORING
from topics.catalogue import Catalogue


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_handled_record_is_counted_in_out_and_by_rejection_reason(stage_bundles):
    cat = Catalogue(prefix=f"t{uuid.uuid4().hex[:8]}.")
    gate_a = build_stages(cat, stage_bundles.store, CONFIG, SCORING)[0]
    event = stage_bundles.received("ur5", "nan")
    spec = cat.submissions_received
    in_before = value("kibotos_records_in_total", processor="gate_a_integrity", topic="submissions.received")
    rej_before = value("kibotos_rejections_total", processor="gate_a_integrity", reason_code="non_finite_values")
    dl_before = value("kibotos_dead_letters_total", processor="gate_a_integrity", error_code="undecodable_record")
    n_before = value("kibotos_processing_seconds_count", processor="gate_a_integrity")

    outs = handle_observed(gate_a, Record(spec.name, spec.serialize(event), spec.key(event)), cat)
    assert [o.topic.id for o in outs] == ["verification.rejected"]
    handle_observed(gate_a, Record(spec.name, b"garbage", b"k"), cat)

    assert value("kibotos_records_in_total", processor="gate_a_integrity", topic="submissions.received") == in_before + 2
    assert value("kibotos_rejections_total", processor="gate_a_integrity",
                 reason_code="non_finite_values") == rej_before + 1
    assert value("kibotos_dead_letters_total", processor="gate_a_integrity",
                 error_code="undecodable_record") == dl_before + 1
    assert value("kibotos_processing_seconds_count", processor="gate_a_integrity") == n_before + 2
    assert b"kibotos_records_in_total" in render()[0]


def test_json_lines_carry_the_submission_id_inside_its_context_only():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SubmissionFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("kibotos.test-json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with submission_context(b"sub-1"):
            logger.info("inside %s", "x", extra={"processor": "gate_b_timestamps"})
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert inside["submission_id"] == "sub-1" and inside["msg"] == "inside x"
    assert inside["processor"] == "gate_b_timestamps" and inside["level"] == "info"
    assert outside["submission_id"] is None and outside["level"] == "warning"


def test_render_sums_the_children_writing_to_a_multiprocess_dir(tmp_path):
    code = ("from kibotos.runtime.metrics import RECORDS_IN; "
            "RECORDS_IN.labels('gate_b_timestamps', 'gates.a.passed').inc(3)")
    for _ in range(2):  # two child processes, like two gate workers
        subprocess.run([sys.executable, "-c", code], check=True, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
                                                                       "PATH": "/usr/bin:/bin"})
    body = render(tmp_path)[0].decode()
    line = next(ln for ln in body.splitlines()
                if ln.startswith("kibotos_records_in_total{") and 'processor="gate_b_timestamps"' in ln)
    assert float(line.rsplit(" ", 1)[1]) == 6.0
    assert "python_gc_objects_collected_total" in body  # this process's own metrics too
