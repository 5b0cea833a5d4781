"""AWS credentials and SigV4 signing for Bedrock, applied by the transport just before
sending (`UpstreamRequest.sign`), so a signature is never older than its request."""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

from relaygate.config.models import ProviderConfig
from relaygate.errors import UpstreamError
from relaygate.providers.base import UpstreamRequest

if TYPE_CHECKING:
    from botocore.credentials import Credentials

# botocore (~20 MB with urllib3 and its data loaders) is imported only when a Bedrock
# provider is built or signs, never at gateway start.

SIGNING_SERVICE = "bedrock"


class AwsSigner:
    """Signs requests with the provider's static keys, else the standard AWS chain
    (environment, shared config/credentials files, SSO, container and instance roles).
    The chain is resolved once, on first use; refreshable credentials refresh themselves."""

    def __init__(self, provider: str, cfg: ProviderConfig, region: str) -> None:
        self.provider = provider
        self.region = region
        self._static: Credentials | None = None
        if cfg.aws_access_key_id and cfg.aws_secret_access_key:
            from botocore.credentials import Credentials

            self._static = Credentials(
                cfg.aws_access_key_id.get_secret_value(),
                cfg.aws_secret_access_key.get_secret_value(),
                cfg.aws_session_token.get_secret_value() if cfg.aws_session_token else None,
            )
        self._chain: Any = None
        self._lock = threading.Lock()

    def credentials(self) -> Any:
        if self._static is not None:
            return self._static
        with self._lock:
            if self._chain is None:
                from botocore.session import Session

                self._chain = Session().get_credentials()
        if self._chain is None:
            raise UpstreamError(
                401,
                f"{self.provider}: no AWS credentials found (set aws_access_key_id/aws_secret_access_key "
                "in the provider config, or AWS_ACCESS_KEY_ID/AWS_PROFILE/a role in the environment)",
                error_type="authentication_error",
            )
        return self._chain.get_frozen_credentials()

    def __call__(self, req: UpstreamRequest) -> UpstreamRequest:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        aws = AWSRequest(method=req.method, url=req.url, data=req.body, headers=dict(req.headers))
        SigV4Auth(self.credentials(), SIGNING_SERVICE, self.region).add_auth(aws)
        return dataclasses.replace(req, headers=dict(aws.headers.items()), sign=None)


def bearer(token: str) -> Any:
    """A Bedrock API key (`Authorization: Bearer`) instead of SigV4."""

    def sign(req: UpstreamRequest) -> UpstreamRequest:
        return dataclasses.replace(req, headers={**req.headers, "authorization": f"Bearer {token}"},
                                   sign=None)

    return sign
