"""Kernel lifecycle: atomic creation under races, deep health checks, idle stop, reset."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relaygate.agent.sandbox.config import SandboxConfig
from relaygate.agent.sandbox.pool import KernelPool, SandboxFull, ThreadBusyElsewhere
from relaygate.agent.sandbox.state import open_state_store

from .agent_testkit import POSTGRES_URL, kernel_pids, make_config


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}" if request.param == "sqlite" else POSTGRES_URL


async def _pool(config: SandboxConfig) -> KernelPool:
    pool = KernelPool(config, open_state_store(config.database_url), sandboxed=True)
    await pool.start()
    return pool


@pytest.fixture
async def fast_pool(tmp_path: Path) -> AsyncIterator[KernelPool]:
    """Health checks every 0.3 s, short timeouts: recovery within a test's patience."""
    config = make_config(
        tmp_path, health_interval_s=0.3, health_timeout_s=0.5, health_retries=2, health_backoff_s=0.1,
    )
    pool = await _pool(config)
    try:
        yield pool
    finally:
        await pool.close()


async def test_compare_and_set_lets_exactly_one_racer_start(database_url: str) -> None:
    thread = f"race-{uuid.uuid4().hex}"
    stores = [open_state_store(database_url) for _ in range(8)]
    for store in stores:
        await store.open()
    try:
        attempts = [store.transition(thread, "off", "starting", f"owner-{i}") for i, store in enumerate(stores) for _ in range(8)]
        outcomes = await asyncio.gather(*attempts)
        assert sum(outcomes) == 1
        state = await stores[0].get(thread)
        assert state is not None and state.status == "starting" and state.generation == 1
        assert not await stores[1].transition(thread, "running", "stopping", "x")
        assert await stores[1].transition(thread, "starting", "running", state.owner)
    finally:
        for store in stores:
            await store.close()


async def test_fifty_concurrent_first_cells_create_one_kernel(tmp_path: Path, database_url: str) -> None:
    pool = await _pool(make_config(tmp_path, database_url=database_url))
    thread = f"burst-{uuid.uuid4().hex}"
    code = "try:\n    n += 1\nexcept NameError:\n    n = 1\nn"
    try:
        results = await asyncio.gather(*(pool.run_cell(thread, code, 60) for _ in range(50)))
        kernel = pool.kernel(thread)
        assert kernel is not None
        assert len(kernel_pids(kernel.connection_file)) == 1
        assert sorted(int(r.value or 0) for r in results) == list(range(1, 51))
        assert pool.stats.kernels_started == 1
        state = await pool.store.get(thread)
        assert state is not None and state.status == "running" and state.generation == 1
    finally:
        await pool.close()
    assert kernel_pids(kernel.connection_file) == []


async def test_two_servers_sharing_a_store_start_one_kernel(tmp_path: Path) -> None:
    first = await _pool(make_config(tmp_path / "a", database_url=POSTGRES_URL))
    second = await _pool(make_config(tmp_path / "b", database_url=POSTGRES_URL))
    thread = f"shared-{uuid.uuid4().hex}"
    try:
        calls = [p.run_cell(thread, "1 + 1", 60) for _ in range(10) for p in (first, second)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        answered = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert all(isinstance(o, ThreadBusyElsewhere) for o in refused), refused
        assert len(answered) == 10 and len(refused) == 10
        kernels = [k for k in (first.kernel(thread), second.kernel(thread)) if k is not None]
        assert len(kernels) == 1
        assert first.stats.kernels_started + second.stats.kernels_started == 1
    finally:
        await first.close()
        await second.close()


async def test_killed_kernel_is_noticed_and_recreated(fast_pool: KernelPool) -> None:
    await fast_pool.run_cell("victim", "v = 1", 30)
    kernel = fast_pool.kernel("victim")
    assert kernel is not None
    [pid] = kernel_pids(kernel.connection_file)
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        await asyncio.sleep(0.1)
        if fast_pool.stats.recreated and fast_pool.kernel("victim") not in (None, kernel):
            break
    assert fast_pool.stats.recreated == 1
    replacement = fast_pool.kernel("victim")
    assert replacement is not None and replacement is not kernel
    assert kernel_pids(replacement.connection_file) not in ([], [pid])
    result = await fast_pool.run_cell("victim", "'v' in globals(), 6 * 7", 30)
    assert result.value == "(False, 42)"
    assert "state was lost" in result.text or "were lost" in result.text
    later = await fast_pool.run_cell("victim", "1", 30)
    assert "lost" not in later.text  # told once


async def test_hung_kernel_fails_the_deep_check(fast_pool: KernelPool) -> None:
    await fast_pool.run_cell("hung", "h = 1", 30)
    kernel = fast_pool.kernel("hung")
    assert kernel is not None
    [pid] = kernel_pids(kernel.connection_file)
    os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing: only a real cell notices
    try:
        for _ in range(100):
            await asyncio.sleep(0.1)
            if fast_pool.kernel("hung") not in (None, kernel):
                break
        assert fast_pool.stats.recreated == 1
        assert kernel.alive() is False
        assert fast_pool.stats.health_failures >= 2  # retried before recreating
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    result = await fast_pool.run_cell("hung", "2 + 2", 30)
    assert result.value == "4"
    assert "health check" in result.text


async def test_healthy_kernel_passes_checks_and_keeps_state(fast_pool: KernelPool) -> None:
    await fast_pool.run_cell("fine", "keep = 'me'", 30)
    await asyncio.sleep(1.2)
    assert fast_pool.stats.health_checks >= 2
    assert fast_pool.stats.recreated == 0
    result = await fast_pool.run_cell("fine", "keep", 30)
    assert result.value == "'me'" and "lost" not in result.text


async def test_idle_kernel_stops_and_restarts_on_next_cell(tmp_path: Path) -> None:
    pool = await _pool(make_config(tmp_path, idle_stop_s=0.4))
    try:
        await pool.run_cell("sleepy", "s = 1", 30)
        kernel = pool.kernel("sleepy")
        assert kernel is not None
        # the kernel leaves the pool when its stop begins and is counted when the stop has
        # finished: wait for the count (a slow machine takes a while to stop a kernel)
        for _ in range(100):
            await asyncio.sleep(0.1)
            if pool.stats.idle_stopped:
                break
        assert pool.stats.idle_stopped == 1 and pool.kernel("sleepy") is None
        assert kernel_pids(kernel.connection_file) == []
        state = await pool.store.get("sleepy")
        assert state is not None and state.status == "off"
        result = await pool.run_cell("sleepy", "'s' in globals()", 30)
        assert result.value == "False"
        assert "idle" in result.text
    finally:
        await pool.close()


async def test_reset_forgets_variables_but_keeps_files(pool: KernelPool) -> None:
    await pool.run_cell("r", "a = 1\nopen('/workspace/f.txt', 'w').write('kept')", 30)
    await pool.reset("r")
    result = await pool.run_cell("r", "'a' in globals(), open('/workspace/f.txt').read()", 30)
    assert result.value == "(False, 'kept')"


async def test_restart_forgets_rows_of_its_previous_life(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = open_state_store(config.database_url)
    await store.open()
    assert await store.transition("left-over", "off", "starting", config.instance)
    assert await store.transition("left-over", "starting", "running", config.instance)
    await store.close()
    pool = await _pool(config)
    try:
        state = await pool.store.get("left-over")
        assert state is not None and state.status == "off"
        result = await pool.run_cell("left-over", "3", 30)
        assert result.value == "3"
    finally:
        await pool.close()


async def test_output_is_truncated_and_images_are_returned(pool: KernelPool) -> None:
    long = await pool.run_cell("out", "print('x' * 100_000)", 30)
    assert len(long.text) < pool.config.max_output_chars + 200
    assert "characters truncated" in long.text
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
    image = await pool.run_cell(
        "out",
        f"from IPython.display import Image, display\nimport base64\ndisplay(Image(data=base64.b64decode({png!r}), format='png'))",
        30,
    )
    assert image.images and base64.b64decode(image.images[0]).startswith(b"\x89PNG")
    assert "image/png" in image.text
    err = await pool.run_cell("out", "import sys\nprint('to err', file=sys.stderr)\nraise ValueError('boom')", 30)
    assert err.is_error and "[stderr]\nto err" in err.text and "ValueError: boom" in err.text


async def test_a_cell_that_kills_its_kernel_gets_a_fresh_one(pool: KernelPool) -> None:
    await pool.run_cell("suicide", "gone = 1", 30)
    result = await pool.run_cell("suicide", "import os\nos._exit(3)", 30)
    assert result.is_error and result.kernel_lost
    assert "died" in result.text
    again = await pool.run_cell("suicide", "'gone' in globals()", 30)
    assert again.value == "False"
    assert "lost" not in again.text  # told once, in the result of the cell that died


async def test_cpu_limit_kills_a_runaway_kernel_before_the_timeout(tmp_path: Path) -> None:
    pool = await _pool(make_config(tmp_path, cpu_seconds=2))
    try:
        started = asyncio.get_running_loop().time()
        result = await pool.run_cell("burner", "while True:\n    pass", 60)
        assert asyncio.get_running_loop().time() - started < 20
        assert result.is_error and result.kernel_lost and not result.timed_out
        assert (await pool.run_cell("burner", "1 + 1", 30)).value == "2"
    finally:
        await pool.close()


async def test_least_recently_used_idle_kernel_makes_room(tmp_path: Path) -> None:
    pool = await _pool(make_config(tmp_path, max_kernels=2))
    try:
        await pool.run_cell("first", "a = 1", 30)
        await pool.run_cell("second", "b = 2", 30)
        first = pool.kernel("first")
        assert first is not None
        await pool.run_cell("third", "c = 3", 30)
        assert pool.stats.evicted == 1 and pool.kernel("first") is None
        assert kernel_pids(first.connection_file) == []
        assert (await pool.run_cell("second", "b", 30)).value == "2"
        back = await pool.run_cell("first", "'a' in globals()", 30)
        assert back.value == "False" and "needed room" in back.text
    finally:
        await pool.close()


async def test_a_full_server_refuses_instead_of_killing_busy_kernels(tmp_path: Path) -> None:
    pool = await _pool(make_config(tmp_path, max_kernels=2))
    try:
        busy = [asyncio.create_task(pool.run_cell(t, "import time\ntime.sleep(3)\n'done'", 30)) for t in ("x", "y")]
        while len([t for t in ("x", "y") if pool.kernel(t) is not None]) < 2:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        with pytest.raises(SandboxFull):
            await pool.run_cell("z", "1", 30)
        assert [r.value for r in await asyncio.gather(*busy)] == ["'done'", "'done'"]
        assert (await pool.run_cell("z", "1", 30)).value == "1"  # room again: an idle one is evicted
    finally:
        await pool.close()
