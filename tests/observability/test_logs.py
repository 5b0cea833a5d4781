"""The log writer: lines leave through a thread of their own, so a stderr nobody reads
never stalls the gateway; they stay in order, are dropped (and counted) past a bound rather
than piling up, and a forked worker writes its own."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from relaygate.observability.logs import LineWriter, setup_logging


class GatedStream(io.StringIO):
    """A stream whose writes wait for `gate`: a pipe whose reader has stalled."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def write(self, s: str) -> int:
        self.entered.set()
        self.gate.wait(30)
        return super().write(s)


def in_thread(fn: Callable[[], object], timeout_s: float = 10.0) -> None:
    """Runs `fn` in a thread and fails the test if it has not returned by `timeout_s`."""
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), "logging blocked"


def test_lines_are_written_in_order() -> None:
    out = io.StringIO()
    writer = LineWriter(out)
    for i in range(5000):
        writer.put(f"line {i}")
    writer.flush()
    assert out.getvalue().splitlines() == [f"line {i}" for i in range(5000)]
    assert writer.dropped == 0


def test_a_stalled_stream_drops_and_counts_lines_instead_of_blocking() -> None:
    out = GatedStream()
    writer = LineWriter(out, max_pending=100)
    writer.put("first")
    assert out.entered.wait(5)  # the writer holds "first" and waits on the stream
    in_thread(lambda: [writer.put(f"line {i}") for i in range(1000)])
    assert writer.dropped == 900
    out.gate.set()
    writer.flush()
    lines = out.getvalue().splitlines()
    assert lines[:101] == ["first"] + [f"line {i}" for i in range(100)]
    warning = orjson.loads(lines[101])
    assert warning["level"] == "warning" and warning["msg"].startswith("900 log lines dropped")
    assert len(lines) == 102
    writer.put("after")  # nothing more dropped: no second warning
    writer.flush()
    assert out.getvalue().splitlines()[102:] == ["after"]


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_gateway_logs_through_a_pipe_nobody_reads(root_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    read_fd, write_fd = os.pipe()
    stderr = os.fdopen(write_fd, "w")
    monkeypatch.setattr("sys.stderr", stderr)
    setup_logging("info")
    access = logging.getLogger("relaygate.access")
    # ~3 MB of access-log lines into a 64 KB pipe: a StreamHandler would block on the first 64 KB
    in_thread(lambda: [access.info("openai bench -> 200", extra={"fields": {"request_id": f"r{i}", "pad": "x" * 200}})
                       for i in range(15_000)])
    first = os.read(read_fd, 65536).decode().splitlines()[0]
    assert orjson.loads(first)["request_id"] == "r0"
    os.close(read_fd)  # the writer's blocked write fails (EPIPE) and lets go of the stream
    with contextlib.suppress(OSError):
        stderr.close()


def test_one_writer_thread_when_threads_log_their_first_lines_at_once() -> None:
    out = io.StringIO()
    writer = LineWriter(out)
    before = sum(t.name == "relaygate-log-writer" for t in threading.enumerate())
    start = threading.Barrier(8)

    def log(n: int) -> None:
        start.wait()
        for i in range(500):
            writer.put(f"{n}:{i}")

    threads = [threading.Thread(target=log, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    writer.flush()
    assert sum(t.name == "relaygate-log-writer" for t in threading.enumerate()) == before + 1
    lines = out.getvalue().splitlines()
    assert sorted(lines) == sorted(f"{n}:{i}" for n in range(8) for i in range(500))
    for n in range(8):  # each thread's lines in its own order
        assert [x for x in lines if x.startswith(f"{n}:")] == [f"{n}:{i}" for i in range(500)]


def test_a_forked_worker_writes_its_own_lines_once(tmp_path: Path) -> None:
    path = tmp_path / "log"
    stream = open(path, "a", buffering=1)  # noqa: SIM115 - shared with the child
    writer = LineWriter(stream)
    writer.put("parent before fork")
    writer.flush()
    pid = os.fork()
    if pid == 0:  # the child: its own writer thread, then out without atexit
        try:
            writer.put("child")
            writer.flush()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    writer.put("parent after fork")
    writer.flush()
    stream.close()
    assert sorted(path.read_text().splitlines()) == ["child", "parent after fork", "parent before fork"]
