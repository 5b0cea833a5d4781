"""Azure OpenAI: OpenAI's bodies and codecs (the OpenAI adapter, reused), under
`{base_url}/openai/deployments/{deployment}/...?api-version=...` where the deployment is
the target's model. Authenticated by `api-key`, or by the config's `headers` (e.g.
`Authorization: Bearer <Entra token>`)."""

from __future__ import annotations

from urllib.parse import quote

from relaygate.config.models import ProviderConfig
from relaygate.providers.base import ChatCall, UpstreamRequest
from relaygate.providers.openai import OpenAIAdapter

# The newest GA data-plane version at the time of writing (max_completion_tokens, tools,
# json_schema, stream_options.include_usage).
DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIAdapter(OpenAIAdapter):
    def __init__(self, name: str, cfg: ProviderConfig, api_key: str | None = None) -> None:
        if not cfg.base_url:
            raise ValueError(f"provider {name!r}: an azure-openai provider needs base_url "
                             "(https://<resource>.openai.azure.com)")
        super().__init__(name, cfg, api_key)
        self.base_url = cfg.base_url.rstrip("/").removesuffix("/openai")
        self.api_version = cfg.api_version or DEFAULT_API_VERSION
        self.url = self.base_url + "/openai/deployments"
        key = api_key or (cfg.api_key.get_secret_value() if cfg.api_key else None)
        self.headers.pop("authorization", None)  # OpenAI's bearer form; Azure wants api-key
        self.headers.update(cfg.headers)
        if key and not any(k.lower() in ("authorization", "api-key") for k in cfg.headers):
            self.headers["api-key"] = key
        self.max_tokens_field = "max_completion_tokens"

    def deployment_url(self, deployment: str, operation: str) -> str:
        return f"{self.url}/{quote(deployment, safe='')}/{operation}?api-version={quote(self.api_version)}"

    def chat_request(self, call: ChatCall) -> UpstreamRequest:
        req = super().chat_request(call)
        req.url = self.deployment_url(call.model, "chat/completions")
        return req

    def embeddings_url(self, model: str) -> str:
        return self.deployment_url(model, "embeddings")
