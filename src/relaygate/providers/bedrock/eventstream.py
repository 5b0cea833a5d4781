"""AWS event-stream framing (`application/vnd.amazon.eventstream`) -> (event type,
JSON payload) pairs, with botocore's parser doing the framing and CRC checks."""

from __future__ import annotations

from typing import Any

import orjson

from relaygate.errors import UpstreamError
from relaygate.providers.bedrock.errors import stream_exception


class EventStreamReader:
    """Feeds raw bytes; returns complete events. An `exception`/`error` message raises
    the matching `UpstreamError`; corrupt framing is a 502."""

    def __init__(self, provider: str, secrets: list[str]) -> None:
        self.provider = provider
        self.secrets = secrets
        # botocore (~20 MB) is imported only once a Bedrock stream is read
        from botocore.eventstream import EventStreamBuffer, ParserError

        self._buffer = EventStreamBuffer()
        self._parser_error = ParserError
        self._pending = 0

    def feed(self, chunk: bytes) -> list[tuple[str, dict[str, Any]]]:
        self._buffer.add_data(chunk)
        self._pending += len(chunk)
        out: list[tuple[str, dict[str, Any]]] = []
        try:
            for message in self._buffer:
                self._pending -= message.prelude.total_length
                out.append(self._event(message.headers, message.payload))
        except self._parser_error as exc:
            raise UpstreamError(502, f"{self.provider}: corrupt event stream ({type(exc).__name__})") from None
        return out

    @property
    def has_partial_message(self) -> bool:
        """Bytes of an unfinished message are buffered (the stream was cut mid-message)."""
        return self._pending > 0

    def _event(self, headers: dict[str, Any], payload: bytes) -> tuple[str, dict[str, Any]]:
        kind = headers.get(":message-type")
        if kind == "exception":
            raise stream_exception(self.provider, headers.get(":exception-type"), payload, self.secrets)
        if kind == "error":
            raise stream_exception(self.provider, headers.get(":error-code"),
                                   orjson.dumps({"message": headers.get(":error-message", "")}), self.secrets)
        try:
            data = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            raise UpstreamError(502, f"{self.provider}: malformed event payload in the stream") from None
        return str(headers.get(":event-type", "")), data if isinstance(data, dict) else {}
