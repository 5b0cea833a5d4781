"""Provider accounts by name: the adapter for each (bound to its secrets) and the
transport that carries its requests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from relaygate.config.models import ProviderConfig
from relaygate.errors import GatewayError
from relaygate.providers.anthropic import AnthropicAdapter
from relaygate.providers.azure import AzureOpenAIAdapter
from relaygate.providers.base import ProviderAdapter
from relaygate.providers.bedrock import BedrockAdapter
from relaygate.providers.gemini import GeminiAdapter
from relaygate.providers.http import HttpTransport, Transport
from relaygate.providers.mock import MockAdapter, MockTransport
from relaygate.providers.openai import OpenAIAdapter

AdapterFactory = Callable[[str, ProviderConfig, str | None], ProviderAdapter]

ADAPTERS: dict[str, AdapterFactory] = {
    "openai": OpenAIAdapter,
    "openai-compatible": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "mock": MockAdapter,
    "bedrock": BedrockAdapter,
    "gemini": GeminiAdapter,
    "vertex": GeminiAdapter,
    "azure-openai": AzureOpenAIAdapter,
}

# Resolves a stored credential name to its decrypted secret (the keys stage provides it).
CredentialLookup = Callable[[str], Awaitable[str | None]]


def register_adapter(provider_type: str, factory: AdapterFactory) -> None:
    """Adds a provider type (each provider folder registers itself on import)."""
    ADAPTERS[provider_type] = factory


class ProviderRegistry:
    def __init__(self, providers: dict[str, ProviderConfig], http: HttpTransport,
                 credentials: CredentialLookup | None = None) -> None:
        self.configs = providers
        self.http = http
        self.mock = MockTransport()
        self.credentials = credentials
        self._adapters: dict[tuple[str, str | None], ProviderAdapter] = {}

    def _build(self, name: str, secret: str | None) -> ProviderAdapter:
        cfg = self.configs[name]
        factory = ADAPTERS.get(cfg.type)
        if factory is None:
            raise GatewayError(501, f"provider type {cfg.type!r} is not available", "api_error")
        try:
            return factory(name, cfg, secret)
        except ValueError as exc:
            raise GatewayError(500, str(exc), "api_error") from None

    async def get(self, name: str, credential: str | None = None) -> tuple[ProviderAdapter, Transport]:
        key = (name, credential)
        adapter = self._adapters.get(key)
        if adapter is None:
            if name not in self.configs:
                raise GatewayError(404, f"unknown provider {name!r}", "not_found_error", "provider_not_found")
            secret = None
            cfg_credential = credential or self.configs[name].credential
            if cfg_credential:
                secret = await self.credentials(cfg_credential) if self.credentials else None
                if secret is None:
                    raise GatewayError(502, f"provider credential {cfg_credential!r} is not stored", "api_error")
            adapter = self._adapters[key] = self._build(name, secret)
        transport: Transport = self.mock if self.configs[name].type == "mock" else self.http
        return adapter, transport

    def forget(self, credential: str | None = None) -> None:
        """Drops cached adapters (after a credential rotation or config reload)."""
        if credential is None:
            self._adapters.clear()
        else:
            for key in [k for k in self._adapters if k[1] == credential]:
                del self._adapters[key]

    def all_secrets(self) -> list[str]:
        out: list[str] = []
        for adapter in self._adapters.values():
            out.extend(adapter.secrets())
        return out

    def describe(self) -> dict[str, Any]:
        return {name: cfg.type for name, cfg in self.configs.items()}
