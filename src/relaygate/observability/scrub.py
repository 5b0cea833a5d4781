"""Removes secrets from any text that may reach a log line, an error body or a client."""

from __future__ import annotations

import re
from collections.abc import Iterable

_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,}|rg-[A-Za-z0-9_\-]{8,}|AKIA[0-9A-Z]{16}"
    r"|AIza[0-9A-Za-z_\-]{20,}|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}|key=[A-Za-z0-9_\-]{8,})"
)
REDACTED = "[redacted]"


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Replaces known secret values and anything shaped like an API key."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, REDACTED)
    return _PATTERNS.sub(REDACTED, text)
