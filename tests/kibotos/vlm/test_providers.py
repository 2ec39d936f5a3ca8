"""The VLM provider registry and the provider built from settings."""

from __future__ import annotations

import pytest

from kibotos.config.alignment import load_alignment_config
from kibotos.config.settings import Settings
from kibotos.errors import ConfigError
from kibotos.tasks import get_task
from kibotos.vlm import PROVIDERS, VLMConfig, get_provider, list_providers, register_provider
from kibotos.vlm.openai_compat import OpenAICompatProvider
from tests.fixtures.vlm_stub import keyframe_pairs

VLM = load_alignment_config().vlm


def test_no_vlm_configured_gives_no_provider(monkeypatch):
    monkeypatch.delenv("KIBOTOS_VLM_PROVIDER", raising=False)
    assert Settings().vlm_provider is None
    assert get_provider(Settings(), VLM) is None


def test_openai_is_registered():
    assert "openai" in list_providers()


def test_an_unknown_provider_lists_the_available_ones():
    with pytest.raises(ConfigError, match="unknown VLM provider 'gemini'; available: openai"):
        get_provider(Settings(vlm_provider="gemini"), VLM)


@pytest.mark.parametrize("missing", ["vlm_base_url", "vlm_model"])
def test_openai_needs_its_endpoint_and_model(missing):
    kw = {"vlm_base_url": "http://127.0.0.1:9/v1", "vlm_model": "m"}
    kw.pop(missing)
    with pytest.raises(ConfigError, match=f"KIBOTOS_{missing.upper()}"):
        get_provider(Settings(vlm_provider="openai", **kw), VLM)


def test_registering_a_provider(monkeypatch):
    monkeypatch.setattr("kibotos.vlm.providers.PROVIDERS", dict(PROVIDERS))
    built = []

    @register_provider("fixed")
    def fixed(settings, config: VLMConfig):
        built.append((settings.vlm_model, config.max_pairs))
        return "a provider"

    assert "fixed" in list_providers()
    assert get_provider(Settings(vlm_provider="fixed", vlm_model="x"), VLM) == "a provider"
    assert built == [("x", VLM.max_pairs)]


def test_provider_from_environment_sends_its_key(monkeypatch, vlm_stub):
    monkeypatch.setenv("KIBOTOS_VLM_PROVIDER", "openai")
    monkeypatch.setenv("KIBOTOS_VLM_BASE_URL", vlm_stub.url)
    monkeypatch.setenv("KIBOTOS_VLM_MODEL", "Qwen/Qwen2.5-VL-7B-Instruct")
    monkeypatch.setenv("KIBOTOS_VLM_API_KEY", "sk-test-123")
    monkeypatch.setenv("KIBOTOS_VLM_TIMEOUT_S", "7.5")
    monkeypatch.setenv("KIBOTOS_VLM_MAX_RETRIES", "3")
    settings = Settings()
    assert "sk-test-123" not in repr(settings) and "sk-test-123" not in settings.model_dump_json()
    provider = get_provider(settings, VLM)
    assert isinstance(provider, OpenAICompatProvider)
    assert (provider.model, provider.timeout_s, provider.max_retries) == ("Qwen/Qwen2.5-VL-7B-Instruct", 7.5, 3)
    record = provider.evaluate(keyframe_pairs(2), get_task("pick_place", "1"), "franka_panda@fer-v1")
    assert record.status == "ok"
    [req] = vlm_stub.requests
    assert req.headers["Authorization"] == "Bearer sk-test-123"
