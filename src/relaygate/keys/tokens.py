"""Virtual-key tokens and the box that encrypts provider credentials at rest."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from relaygate.errors import GatewayError
from relaygate.pipeline.auth import hash_key

PREFIX = "rg-"
SECRET_ENV = "RELAYGATE_SECRET_KEY"


def new_token() -> str:
    """`rg-` and 32 random bytes (256 bits): high entropy, so a plain sha256 is a safe hash."""
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hash_key(token)


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


def display_prefix(token: str) -> str:
    """What listings show of a key: enough to tell keys apart, useless to an attacker."""
    return token[:7] + "..."


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(8)}"


class SecretBox:
    """Fernet (AES-128-CBC + HMAC-SHA256) keyed from `RELAYGATE_SECRET_KEY`; any string of
    16+ characters works (it is stretched with sha256), or a Fernet key as is."""

    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValueError(f"{SECRET_ENV} must be at least 16 characters")
        # cryptography (~9 MB): imported only when RELAYGATE_SECRET_KEY is set
        from cryptography.fernet import Fernet

        digest = hashlib.sha256(b"relaygate-credentials\0" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    @classmethod
    def from_env(cls) -> SecretBox | None:
        value = os.environ.get(SECRET_ENV)
        return cls(value) if value else None

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise GatewayError(500, f"a stored credential cannot be decrypted: was {SECRET_ENV} changed?",
                               "api_error", "credential_undecryptable") from None


def require_box(box: SecretBox | None) -> SecretBox:
    if box is None:
        raise GatewayError(400, f"cannot store provider credentials: {SECRET_ENV} is not set. Credentials are "
                                f"encrypted at rest with it; set it (16+ random characters, e.g. "
                                f"`python -c 'import secrets; print(secrets.token_urlsafe(32))'`) on every "
                                f"replica and restart", "invalid_request_error", "secret_key_missing")
    return box
