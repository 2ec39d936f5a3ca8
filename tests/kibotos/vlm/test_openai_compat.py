"""The OpenAI-compatible VLM client against a real local HTTP server (``vlm_stub``):
what it sends, each failure mode, calibration and retries."""

from __future__ import annotations

import base64
import json
import math
import socket

import pytest

from kibotos.tasks import get_task
from kibotos.vlm import PROMPT_VERSION, Calibration, VLMConfig
from kibotos.vlm.openai_compat import PROMPT_HEADER, OpenAICompatProvider, parse_reply
from tests.fixtures.vlm_stub import VLMStub, recorded
from tests.fixtures.vlm_stub import keyframe_pairs as pairs

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
PICK_PLACE = get_task("pick_place", "1")
ROBOT = "franka_panda@fer-v1"


def config(**kw) -> VLMConfig:
    base = {"weight": 0.3, "uncalibrated_weight": 0.1, "max_pairs": 6, "max_tokens": 256,
            "response_excerpt_chars": 120, "retry_backoff_s": 0.0}
    return VLMConfig(**(base | kw))


def client(stub: VLMStub, **kw) -> OpenAICompatProvider:
    opts = {"config": config(), "timeout_s": 5.0, "max_retries": 0} | kw
    return OpenAICompatProvider(stub.url, MODEL, **opts)


def test_valid_answer_and_what_was_sent(vlm_stub):
    sent = pairs(3)
    record = client(vlm_stub).evaluate(sent, PICK_PLACE, ROBOT)
    assert record.status == "ok" and record.ok and record.error is None
    assert record.answer.aligned is True and record.answer.alignment_score == 0.9
    assert record.answer.phases_observed == ["grasp", "lift", "transport", "place", "release"]
    assert (record.provider, record.model, record.response_model) == ("openai", MODEL, MODEL)
    assert record.prompt_version == PROMPT_VERSION and record.attempts == 1 and record.http_status == 200
    assert record.usage == {"prompt_tokens": 2310, "completion_tokens": 96, "total_tokens": 2406}
    assert record.latency_ms > 0 and record.images_sent == 6
    assert record.calibration.status == "uncalibrated" and record.calibrated_confidence is None
    assert len(record.response_excerpt) == 120  # bounded

    [req] = vlm_stub.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers[PROMPT_HEADER] == PROMPT_VERSION
    body = req.body
    assert body["model"] == MODEL and body["response_format"] == {"type": "json_object"}
    assert body["temperature"] == 0 and body["max_tokens"] == 256
    assert body["messages"][0]["role"] == "system" and PROMPT_VERSION in body["messages"][0]["content"]
    # real then sim of every pair, as base64 PNG, byte for byte
    images = req.images()
    assert len(images) == 6
    expected = [png for p in sent for png in (p.real_png, p.sim_png)]
    assert [base64.b64decode(u.split(",", 1)[1]) for u in images] == expected
    assert all(u.startswith("data:image/png;base64,") for u in images)
    # the task schema: phases and predicates by name
    text = req.text()
    schema = json.loads(text.split("Task schema (JSON): ", 1)[1].split("\n", 1)[0])
    assert [p["name"] for p in schema["phases"]] == ["grasp", "lift", "transport", "place", "release"]
    assert [p["name"] for p in schema["predicates"]] == ["grasped", "lifted", "moved", "set_down", "released"]
    assert (schema["task_id"], schema["task_version"]) == ("pick_place", "1")
    assert ROBOT in text and "Pair 2 (video frame 10" in text


def test_without_a_task_schema_the_prompt_says_so(vlm_stub):
    vlm_stub.mode = "valid_misaligned"
    record = client(vlm_stub).evaluate(pairs(2), None, ROBOT)
    assert record.ok and record.answer.aligned is False and record.answer.task_success is None
    text = vlm_stub.requests[0].text()
    assert "No task schema is declared" in text and "Task schema (JSON)" not in text


def test_malformed_content_is_a_structured_failure(vlm_stub):
    vlm_stub.mode = "malformed"
    record = client(vlm_stub, max_retries=2).evaluate(pairs(2), PICK_PLACE, ROBOT)
    assert record.status == "malformed" and record.answer is None and not record.ok
    assert "not JSON" in record.error
    assert record.response_excerpt == json.dumps(recorded("malformed"))[:120]  # the raw reply, bounded
    assert record.usage == {"prompt_tokens": 2310, "completion_tokens": 31, "total_tokens": 2341}
    assert record.attempts == 1 and len(vlm_stub.requests) == 1  # an answer that arrived is not retried


def test_schema_invalid_json_is_a_structured_failure(vlm_stub):
    vlm_stub.mode = "invalid"
    record = client(vlm_stub).evaluate(pairs(2), PICK_PLACE, ROBOT)
    assert record.status == "invalid" and record.answer is None
    for field in ("aligned", "alignment_score", "confidence"):
        assert field in record.error


def test_phases_outside_the_task_schema_are_invalid(vlm_stub):
    record = client(vlm_stub).evaluate(pairs(2), get_task("cargo_pickup", "1"), "unitree_g1@v1")
    assert record.status == "invalid" and record.answer is None
    assert "place" in record.error and "transport" in record.error


def test_http_500_is_a_structured_failure_after_the_retries(vlm_stub):
    vlm_stub.mode = "http_500"
    record = client(vlm_stub, max_retries=2).evaluate(pairs(2), PICK_PLACE, ROBOT)
    assert record.status == "http_error" and record.http_status == 500 and record.answer is None
    assert record.attempts == 3 and len(vlm_stub.requests) == 3
    assert "CUDA out of memory" in record.response_excerpt


def test_a_slow_endpoint_times_out(vlm_stub):
    vlm_stub.mode, vlm_stub.slow_s = "slow", 2.0
    record = client(vlm_stub, timeout_s=0.3).evaluate(pairs(2), PICK_PLACE, ROBOT)
    assert record.status == "timeout" and record.answer is None and record.http_status is None
    assert record.attempts == 1 and 300 <= record.latency_ms < 1900


@pytest.mark.parametrize("first", ["http_500", "slow"])
def test_a_transient_failure_is_retried(vlm_stub, first):
    vlm_stub.queue, vlm_stub.slow_s = [first, "valid"], 1.5
    record = client(vlm_stub, timeout_s=0.3, max_retries=1).evaluate(pairs(2), PICK_PLACE, ROBOT)
    assert record.status == "ok" and record.attempts == 2 and len(vlm_stub.requests) == 2


def test_no_retry_when_none_configured(vlm_stub):
    vlm_stub.queue = ["http_500", "valid"]
    record = client(vlm_stub, max_retries=0).evaluate(pairs(2), PICK_PLACE, ROBOT)
    assert record.status == "http_error" and record.attempts == 1


def test_an_unreachable_endpoint():
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = OpenAICompatProvider(f"http://127.0.0.1:{port}/v1", MODEL, config=config(), timeout_s=2.0,
                                    max_retries=1)
    record = provider.evaluate(pairs(2), PICK_PLACE, ROBOT)
    assert record.status == "unreachable" and record.attempts == 2 and record.answer is None


# --- calibration ---------------------------------------------------------------------------

def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_platt_scaling_is_applied_for_a_calibrated_model_and_prompt(vlm_stub):
    entry = Calibration(model=MODEL, prompt_version=PROMPT_VERSION, samples=400, accuracy=0.86, ece=0.07,
                        platt_a=0.6, platt_b=-0.3, measured_on="labelled-set-A")
    other = Calibration(model=MODEL, prompt_version="align-v0", samples=100, accuracy=0.7, ece=0.2,
                        platt_a=2.0, platt_b=1.0)
    record = client(vlm_stub, config=config(calibration=(other, entry))).evaluate(pairs(2), PICK_PLACE, ROBOT)
    assert record.ok and record.calibration == entry
    assert record.calibrated_confidence == pytest.approx(_sigmoid(0.6 * math.log(0.8 / 0.2) - 0.3))
    assert record.calibrated_confidence < record.answer.confidence  # this model is overconfident


def test_another_prompt_version_is_uncalibrated(vlm_stub):
    other = Calibration(model=MODEL, prompt_version="align-v0", platt_a=2.0, platt_b=1.0)
    record = client(vlm_stub, config=config(calibration=(other,))).evaluate(pairs(2), PICK_PLACE, ROBOT)
    assert record.calibration.status == "uncalibrated" and record.calibration.prompt_version == PROMPT_VERSION
    assert record.calibrated_confidence is None


def test_calibration_apply():
    ident = Calibration(model="m", prompt_version="p")
    assert ident.apply(0.8) == pytest.approx(0.8)
    assert ident.apply(0.0) == pytest.approx(1e-4) and ident.apply(1.0) == pytest.approx(1 - 1e-4)
    sharp = Calibration(model="m", prompt_version="p", platt_a=2.0)
    assert sharp.apply(0.8) > 0.8 and sharp.apply(0.2) < 0.2 and sharp.apply(0.5) == pytest.approx(0.5)
    assert Calibration.uncalibrated("m", "p").apply(0.8) is None


# --- parsing -------------------------------------------------------------------------------

def _body(content) -> str:
    return json.dumps({"model": MODEL, "choices": [{"message": {"role": "assistant", "content": content}}]})


ANSWER = {"aligned": True, "alignment_score": 0.5, "task_success": None, "phases_observed": [], "confidence": 0.5,
          "notes": ""}


@pytest.mark.parametrize("text, status", [
    (_body(json.dumps(ANSWER)), "ok"),
    (_body("```json\n" + json.dumps(ANSWER) + "\n```"), "ok"),  # a fenced answer is still the answer
    (_body([{"type": "text", "text": json.dumps(ANSWER)}]), "ok"),  # content parts
    (_body(json.dumps(ANSWER | {"extra": 1})), "ok"),
    ("<html>502 Bad Gateway</html>", "malformed"),
    (json.dumps({"choices": []}), "malformed"),
    (json.dumps([1, 2]), "malformed"),
    (_body(None), "malformed"),
    (_body("[1, 2]"), "invalid"),
    (_body(json.dumps(ANSWER | {"confidence": -0.1})), "invalid"),
    (_body(json.dumps({k: v for k, v in ANSWER.items() if k != "task_success"})), "invalid"),
])
def test_parse_reply(text, status):
    got, answer, error, _ = parse_reply(text)
    assert got == status
    assert (answer is not None) == (status == "ok") and (error is None) == (status == "ok")
