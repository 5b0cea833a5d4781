"""DuplicateToolCallGuard: same tool and canonical arguments within the window are refused."""

from __future__ import annotations

import threading

from relaygate.agent import DuplicateToolCallGuard

from .agent_testkit import FakeClock


def test_repeat_is_refused_with_a_message_the_model_can_act_on() -> None:
    clock = FakeClock()
    guard = DuplicateToolCallGuard(window_s=60, clock=clock)
    assert guard.check("search", {"q": "weather", "limit": 5}).allowed
    clock.advance(12)
    repeat = guard.check("search", '{"limit": 5, "q": "weather"}')  # same args, other order, as JSON text
    assert not repeat.allowed
    assert "`search`" in repeat.message and "12 s ago" in repeat.message
    assert "change the arguments" in repeat.message
    assert guard.check("search", {"q": "weather", "limit": 6}).allowed
    assert guard.check("lookup", {"q": "weather", "limit": 5}).allowed


def test_volatile_fields_do_not_make_calls_different() -> None:
    guard = DuplicateToolCallGuard(window_s=60, clock=FakeClock())
    assert guard.check("fetch", {"url": "https://x", "request_id": "a1"}).allowed
    assert not guard.check("fetch", {"url": "https://x", "request_id": "b2"}).allowed


def test_window_expires_and_forget_allows_a_retry() -> None:
    clock = FakeClock()
    guard = DuplicateToolCallGuard(window_s=60, clock=clock)
    assert guard.check("t", {"a": 1}).allowed
    clock.advance(61)
    assert guard.check("t", {"a": 1}).allowed
    assert not guard.check("t", {"a": 1}).allowed
    guard.forget("t", {"a": 1})
    assert guard.check("t", {"a": 1}).allowed


def test_concurrent_identical_calls_let_exactly_one_through() -> None:
    guard = DuplicateToolCallGuard(window_s=60)
    barrier = threading.Barrier(32)
    outcomes: list[bool] = []

    def call() -> None:
        barrier.wait()
        outcomes.append(guard.check("t", {"x": [1, 2, 3]}).allowed)

    threads = [threading.Thread(target=call) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 31 + [True]


def test_memory_is_bounded() -> None:
    guard = DuplicateToolCallGuard(window_s=60, max_entries=10, clock=FakeClock())
    for i in range(100):
        assert guard.check("t", {"i": i}).allowed
    assert len(guard._seen) <= 10
