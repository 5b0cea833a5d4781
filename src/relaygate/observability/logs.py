"""Structured JSON logs, one object per line, with secrets scrubbed from every message.

A line is formatted where it is logged and written to stderr by a thread of its own
(`LineWriter`): the event loop never waits on stderr. A pipe whose reader stalls (a log
shipper, a full terminal buffer) would otherwise block the whole gateway once 64 KB of
lines are unread; here the lines queue up to a bound, then are dropped and counted, and
the count is logged once the writer catches up.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

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


class LineWriter:
    """Writes lines to `stream` from a daemon thread, as many as are waiting in one write.
    `put` never blocks: past `max_pending` unwritten lines it drops the line and counts it.
    The thread starts with the first line; a forked worker starts its own."""

    def __init__(self, stream: TextIO, max_pending: int = 10_000) -> None:
        self.stream = stream
        self.max_pending = max_pending
        self.dropped = 0  # in all, since the start
        self._reported = 0  # of those, how many a line has told about
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # In a forked child: the parent's thread is gone, and its queue (lines the parent
        # will write itself) and locks are in whatever state the fork caught them.
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | threading.Event] = queue.Queue(self.max_pending)
        self._started = False

    def put(self, line: str) -> None:
        if not self._started:
            self._start()
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            with self._lock:
                self.dropped += 1

    def flush(self, timeout_s: float = 2.0) -> None:
        """Waits until every line put so far is written (at most `timeout_s`)."""
        if not self._started:
            return
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout_s)
        except queue.Full:  # the stream has been stuck all along
            return
        done.wait(timeout_s)

    def _start(self) -> None:
        with self._lock:
            if not self._started:  # else another thread started it meanwhile
                threading.Thread(target=self._run, args=(self._queue,), name="relaygate-log-writer",
                                 daemon=True).start()
                self._started = True

    def _run(self, q: queue.Queue[str | threading.Event]) -> None:
        while True:
            items = [q.get()]
            while len(items) < 1024:
                try:
                    items.append(q.get_nowait())
                except queue.Empty:
                    break
            lines = [item for item in items if isinstance(item, str)]
            dropped = self.dropped
            if dropped > self._reported:
                lines.append(orjson.dumps({
                    "ts": round(time.time(), 3), "level": "warning", "logger": "relaygate.logs",
                    "msg": f"{dropped - self._reported} log lines dropped: stderr is not read as fast as "
                           "they are logged"}).decode())
                self._reported = dropped
            try:
                if lines:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
            except Exception:  # stderr closed or gone: nowhere left to tell, and the thread must live on
                pass
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()


class WriterHandler(logging.Handler):
    """Formats a record in the caller's thread and hands the line to a `LineWriter`."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.put(self.format(record))
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.writer.flush()


def setup_logging(level: str = "info") -> None:
    handler = WriterHandler(LineWriter(sys.stderr))
    handler.setFormatter(JsonFormatter(lambda: _SECRETS))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
