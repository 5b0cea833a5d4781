"""Structured JSON logs, one object per line, with secrets scrubbed from every message."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import orjson

from relaygate.observability.scrub import scrub


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: Callable[[], list[str]] = list) -> None:
        super().__init__()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage(), self.secrets()),
        }
        secrets = self.secrets()
        for key in ("request_id", "trace_id", "route", "provider", "model", "status", "key_id"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        fields = getattr(record, "fields", None)  # `extra={"fields": {...}}`: one request's facts
        if isinstance(fields, dict):
            for key, value in fields.items():
                if value is not None:
                    entry[key] = scrub(value, secrets) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info), self.secrets())
        return orjson.dumps(entry).decode()


_SECRETS: list[str] = []


def register_secrets(values: list[str]) -> None:
    """Secrets known at runtime (provider keys, the master key) are scrubbed by value too."""
    for v in values:
        if v and v not in _SECRETS:
            _SECRETS.append(v)


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(lambda: _SECRETS))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
