"""Request ids: unique within a process and across forked workers (`--workers N`), and
time-first, so the ledger's primary key grows at its end."""

from __future__ import annotations

import os
import time

from relaygate.server.app import request_id


def test_ids_are_unique_in_a_process_and_in_a_forked_worker() -> None:
    ids = {request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    a, b, c = (int(request_id(), 16) for _ in range(3))
    assert b - a != c - b  # not a counter: an id says nothing about other tenants' traffic
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child sends the ids it makes back to the parent
        os.write(write, ",".join(request_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = set(os.read(read, 1 << 16).decode().split(","))
    os.close(read)
    assert len(child) == 100 and not child & ids
    assert not child & {request_id() for _ in range(100)}  # the parent's next ids differ too


def test_ids_sort_by_time_and_carry_it() -> None:
    before = time.time()
    first = request_id()
    time.sleep(0.002)
    later = [request_id() for _ in range(100)]
    assert len(first) == 24 and all(len(i) == 24 and i > first for i in later)
    assert abs(int(first[:12], 16) / 1000 - before) < 1.0
    assert len({i[12:] for i in later}) == 100  # the random half differs within one millisecond
