"""An OpenAI-compatible chat-completions client (provider ``"openai"``), e.g. vLLM
serving Qwen2.5-VL.

One call ``POST {base_url}/chat/completions`` with the system prompt, the task schema and
the keyframe pairs as base64 PNG ``image_url`` parts (``kibotos.vlm.prompts``), at
temperature 0, asking for ``response_format: {"type": "json_object"}``. The reply's
``choices[0].message.content`` must parse as JSON (a surrounding Markdown code fence is
tolerated) and validate as ``VLMAnswer``; its ``phases_observed`` must name phases of
the task schema.

Retries: a timeout, a refused or broken connection, HTTP 429 and HTTP 5xx are retried up
to ``max_retries`` times (sleeping ``k * retry_backoff_s`` before retry ``k``); a reply
that arrived but is malformed or invalid is not (temperature 0 would repeat it). The
timeout applies per attempt to connecting and to each read (httpx semantics).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import ValidationError

from kibotos.errors import ConfigError
from kibotos.vlm.config import VLMConfig
from kibotos.vlm.prompts import PROMPT_VERSION, build_messages
from kibotos.vlm.providers import KeyframePair, Status, VLMAnswer, VLMCallRecord, register_provider

if TYPE_CHECKING:
    from kibotos.tasks import TaskSchema

PROMPT_HEADER = "X-Kibotos-Prompt-Version"


def _strip_fence(text: str) -> str:
    """The text inside one surrounding Markdown code fence (```json ... ```), else as is."""
    s = text.strip()
    if s.startswith("```") and s.endswith("```") and "\n" in s:
        s = s[s.index("\n") + 1: -3]
    return s.strip()


def parse_reply(text: str) -> tuple[Status, VLMAnswer | None, str | None, dict[str, Any]]:
    """``(status, answer, error, meta)`` of a chat-completions response body.

    ``status`` is ``ok``, ``malformed`` (the body or its message content is not JSON, or
    the body has no message) or ``invalid`` (JSON that does not validate as
    ``VLMAnswer``). ``meta`` holds ``response_model`` and ``usage`` when present."""
    meta: dict[str, Any] = {"response_model": None, "usage": None}
    try:
        body = json.loads(text)
    except ValueError as exc:
        return "malformed", None, f"response body is not JSON: {exc}", meta
    if not isinstance(body, dict):
        return "malformed", None, "response body is not a JSON object", meta
    if isinstance(body.get("model"), str):
        meta["response_model"] = body["model"]
    usage = body.get("usage")
    if isinstance(usage, dict):
        counts = {k: int(v) for k, v in usage.items()
                  if k in ("prompt_tokens", "completion_tokens", "total_tokens") and isinstance(v, (int, float))}
        meta["usage"] = counts or None
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return "malformed", None, "response has no choices[0].message.content", meta
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        return "malformed", None, "message content is not text", meta
    try:
        obj = json.loads(_strip_fence(content))
    except ValueError as exc:
        return "malformed", None, f"message content is not JSON: {exc}", meta
    if not isinstance(obj, dict):
        return "invalid", None, "message content is JSON but not an object", meta
    try:
        return "ok", VLMAnswer.model_validate(obj), None, meta
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
        return "invalid", None, f"answer does not match the schema: {errors}"[:1000], meta


class OpenAICompatProvider:
    """Client of one OpenAI-compatible endpoint and model.

    :param base_url: the API base, ending in ``/v1`` (``{base_url}/chat/completions``).
    :param model: the model id sent in every request and recorded with every call.
    :param api_key: sent as ``Authorization: Bearer``; None for endpoints without auth.
    :param timeout_s: per attempt (connect, and each read).
    :param max_retries: extra attempts after a retryable failure.
    :param config: the ``vlm`` section of the alignment config (max tokens, calibration).
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, *, config: VLMConfig, api_key: str | None = None,
                 timeout_s: float = 30.0, max_retries: int = 1):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.config = config
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        headers = {"Content-Type": "application/json", PROMPT_HEADER: PROMPT_VERSION}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(timeout=httpx.Timeout(self.timeout_s), headers=headers)

    def close(self) -> None:
        self._client.close()

    def _post(self, body: bytes) -> tuple[Status, int | None, str | None, str]:
        """One attempt: ``(status, http_status, error, response_text)``; status ``ok`` means
        HTTP 2xx (the body is not parsed yet)."""
        try:
            resp = self._client.post(self.url, content=body)
        except httpx.TimeoutException as exc:
            return "timeout", None, f"no reply within {self.timeout_s:g} s ({type(exc).__name__})", ""
        except httpx.TransportError as exc:
            return "unreachable", None, f"{type(exc).__name__}: {exc}"[:500], ""
        if not 200 <= resp.status_code < 300:
            return "http_error", resp.status_code, f"HTTP {resp.status_code}", resp.text
        return "ok", resp.status_code, None, resp.text

    @staticmethod
    def _retryable(status: str, http_status: int | None) -> bool:
        return status in ("timeout", "unreachable") or (
            status == "http_error" and http_status is not None and (http_status == 429 or http_status >= 500))

    def evaluate(self, pairs: Sequence[KeyframePair], task: "TaskSchema | None", robot: str) -> VLMCallRecord:
        """Judge ``pairs`` against ``task``; a record whatever happens (see the module doc)."""
        calibration = self.config.calibration_for(self.model, PROMPT_VERSION)
        payload = {"model": self.model, "messages": build_messages(pairs, task, robot), "temperature": 0,
                   "max_tokens": self.config.max_tokens, "response_format": {"type": "json_object"}}
        body = json.dumps(payload).encode()
        t0 = time.perf_counter()
        attempts = 0
        while True:
            attempts += 1
            status, http_status, error, text = self._post(body)
            if not self._retryable(status, http_status) or attempts > self.max_retries:
                break
            time.sleep(self.config.retry_backoff_s * attempts)
        record: dict[str, Any] = {
            "provider": self.name, "model": self.model, "prompt_version": PROMPT_VERSION,
            "latency_ms": round((time.perf_counter() - t0) * 1000.0, 1), "attempts": attempts,
            "http_status": http_status, "images_sent": 2 * len(pairs), "calibration": calibration,
            "response_excerpt": text[: self.config.response_excerpt_chars] if text else None,
        }
        if status != "ok":
            return VLMCallRecord(status=status, error=error, **record)
        status, answer, error, meta = parse_reply(text)
        record |= meta
        if answer is not None and task is not None:
            unknown = sorted(set(answer.phases_observed) - {p.name for p in task.phases})
            if unknown:
                status, answer = "invalid", None
                error = f"phases_observed names phases the task schema lacks: {unknown}"
        if answer is None:
            return VLMCallRecord(status=status, error=error, **record)
        return VLMCallRecord(status="ok", answer=answer, calibrated_confidence=calibration.apply(answer.confidence),
                             **record)


@register_provider("openai")
def openai_provider(settings, config: VLMConfig) -> OpenAICompatProvider:
    """From ``KIBOTOS_VLM_BASE_URL``, ``KIBOTOS_VLM_MODEL`` (required), ``KIBOTOS_VLM_API_KEY``,
    ``KIBOTOS_VLM_TIMEOUT_S``, ``KIBOTOS_VLM_MAX_RETRIES``."""
    missing = [n for n in ("vlm_base_url", "vlm_model") if not getattr(settings, n)]
    if missing:
        raise ConfigError("the openai VLM provider needs " + ", ".join(f"KIBOTOS_{m.upper()}" for m in missing))
    key = settings.vlm_api_key.get_secret_value() if settings.vlm_api_key is not None else None
    return OpenAICompatProvider(settings.vlm_base_url, settings.vlm_model, config=config, api_key=key,
                                timeout_s=settings.vlm_timeout_s, max_retries=settings.vlm_max_retries)
