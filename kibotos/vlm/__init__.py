"""The VLM as evidence (design §9): a registry of providers, a versioned prompt, and the
calibration that turns a VLM's confidence into a calibrated one.

No VLM weights run inside Kibotos: the VLM is an external instrument behind an
OpenAI-compatible endpoint (``KIBOTOS_VLM_PROVIDER=openai``). Without one, ``get_provider``
returns None and the align job reports ``{"status": "not_configured"}``.
"""

from kibotos.vlm import openai_compat  # noqa: E402,F401  (registers "openai")
from kibotos.vlm.config import Calibration, VLMConfig
from kibotos.vlm.prompts import PROMPT_VERSION
from kibotos.vlm.providers import (
    PROVIDERS,
    KeyframePair,
    VLMAnswer,
    VLMCallRecord,
    VLMProvider,
    get_provider,
    list_providers,
    register_provider,
)

__all__ = ["PROMPT_VERSION", "PROVIDERS", "Calibration", "KeyframePair", "VLMAnswer", "VLMCallRecord", "VLMConfig",
           "VLMProvider", "get_provider", "list_providers", "register_provider"]
