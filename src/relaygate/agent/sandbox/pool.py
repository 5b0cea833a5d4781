"""The kernels of one sandbox server: created exactly once per thread, health-checked, stopped
when idle, recreated when broken.

The state table decides who starts a kernel (compare-and-set `off -> starting`); the winner
starts it and everybody else waits until the status is `running` and the kernel is
registered here. Cells of one thread run one at a time (`SandboxKernel.lock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

from relaygate.agent.sandbox.config import SandboxConfig
from relaygate.agent.sandbox.kernel import CellResult, KernelDied, SandboxKernel
from relaygate.agent.sandbox.state import ThreadStateStore

log = logging.getLogger("relaygate.sandbox")

STATE_LOST_NOTE = (
    "[note: the notebook kernel for this thread was restarted ({reason}); "
    "all variables and imports from earlier cells were lost, re-run what you need]"
)


class SandboxFull(RuntimeError):
    """Every kernel slot (`max_kernels`) is busy running a cell."""


class ThreadBusyElsewhere(RuntimeError):
    """Another sandbox server instance holds this thread's kernel."""


@dataclass(slots=True)
class PoolStats:
    """Counters for tests and the health log."""

    kernels_started: int = 0
    health_checks: int = 0
    health_failures: int = 0
    recreated: int = 0
    idle_stopped: int = 0
    evicted: int = 0


class KernelPool:
    """Owns every kernel of this server instance."""

    def __init__(self, config: SandboxConfig, store: ThreadStateStore, *, sandboxed: bool) -> None:
        self.config = config
        self.store = store
        self.sandboxed = sandboxed
        self.owner = config.instance
        self.stats = PoolStats()
        self._kernels: dict[str, SandboxKernel] = {}
        self._lost: dict[str, str] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._starting: set[str] = set()

    async def start(self) -> None:
        """Open the store, forget kernels this instance had before a restart, start the loops."""
        await self.store.open()
        await self.store.reset_owner(self.owner)
        self._tasks = [
            asyncio.create_task(self._health_loop(), name="sandbox-health"),
            asyncio.create_task(self._idle_loop(), name="sandbox-idle"),
        ]

    async def close(self) -> None:
        """Stop the loops and every kernel."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for thread_id in list(self._kernels):
            await self.stop_thread(thread_id)
        await self.store.close()

    def kernel(self, thread_id: str) -> SandboxKernel | None:
        """The registered kernel of a thread, if running here."""
        return self._kernels.get(thread_id)

    def _notify(self, thread_id: str) -> None:
        event = self._changed.pop(thread_id, None)
        if event is not None:
            event.set()

    async def _wait_change(self, thread_id: str, timeout: float) -> None:
        event = self._changed.setdefault(thread_id, asyncio.Event())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def ensure_running(self, thread_id: str) -> SandboxKernel:
        """The thread's kernel, started if needed. Concurrent callers get the same kernel."""
        deadline = time.monotonic() + self.config.start_timeout_s * 2
        while True:
            kernel = self._kernels.get(thread_id)
            if kernel is not None:
                return kernel
            if await self.store.transition(thread_id, "off", "starting", self.owner):
                return await self._start(thread_id)
            state = await self.store.get(thread_id)
            if state is not None and state.status == "running" and state.owner != self.owner:
                raise ThreadBusyElsewhere(f"thread {thread_id!r} is running on sandbox server {state.owner!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"thread {thread_id!r} stayed {state.status if state else '?'}")
            # Someone else (here, or another process sharing the store) is starting or
            # stopping it: wait for a local notification, and poll the store meanwhile.
            await self._wait_change(thread_id, 0.05)

    async def _start(self, thread_id: str) -> SandboxKernel:
        kernel = SandboxKernel(thread_id, self.config, sandboxed=self.sandboxed)
        try:
            await self._make_room()
            self._starting.add(thread_id)
            try:
                await kernel.start()
            finally:
                self._starting.discard(thread_id)
        except BaseException:
            await self.store.transition(thread_id, "starting", "off", self.owner)
            self._notify(thread_id)
            raise
        self.stats.kernels_started += 1
        self._kernels[thread_id] = kernel
        if not await self.store.transition(thread_id, "starting", "running", self.owner):
            log.warning("thread %s left 'starting' while its kernel started", thread_id)
        self._notify(thread_id)
        return kernel

    async def _make_room(self) -> None:
        """Keep at most `max_kernels`: stop the least recently used idle kernel, or refuse."""
        while len(self._kernels) + len(self._starting) >= self.config.max_kernels:
            idle = [
                (kernel.last_used, thread_id)
                for thread_id, kernel in self._kernels.items()
                if not kernel.pending and not kernel.lock.locked()
            ]
            if not idle:
                raise SandboxFull(
                    f"all {self.config.max_kernels} notebook kernels of this server are busy; "
                    "try again when a running cell has finished"
                )
            _, victim = min(idle)
            kernel = self._kernels[victim]
            async with kernel.lock:
                unused = self._kernels.get(victim) is kernel and not kernel.pending
                if unused and await self.stop_thread(victim):
                    self.stats.evicted += 1
                    self._lost[victim] = "it was the least recently used and the server needed room"

    async def stop_thread(self, thread_id: str) -> bool:
        """Stop a running kernel (`running -> stopping -> off`). False if it was not running here."""
        if thread_id not in self._kernels:
            return False
        if not await self.store.transition(thread_id, "running", "stopping", self.owner):
            return False
        kernel = self._kernels.pop(thread_id)
        try:
            await kernel.stop()
        finally:
            await self.store.transition(thread_id, "stopping", "off", self.owner)
            self._notify(thread_id)
        return True

    async def run_cell(self, thread_id: str, code: str, timeout: float) -> CellResult:
        """Run a cell on the thread's kernel (starting or restarting it as needed)."""
        kernel = await self.ensure_running(thread_id)
        kernel.pending += 1
        try:
            return await self._run_on(kernel, thread_id, code, timeout)
        finally:
            kernel.pending -= 1

    async def _run_on(self, kernel: SandboxKernel, thread_id: str, code: str, timeout: float) -> CellResult:
        async with kernel.lock:
            if self._kernels.get(thread_id) is not kernel:
                # Replaced (health check failure) while we queued: use the current one.
                return await self.run_cell(thread_id, code, timeout)
            try:
                result = await kernel.execute(code, timeout)
            except KernelDied:
                result = CellResult(
                    text="[the kernel process died while running this cell (a resource limit, "
                    "or os._exit); it was restarted and its state was lost]",
                    is_error=True, kernel_lost=True,
                )
                await self._replace_locked(thread_id, kernel, "the kernel process died")
                self._lost.pop(thread_id, None)
            else:
                if result.kernel_lost:
                    await self._replace_locked(thread_id, kernel, "a cell did not stop after its timeout")
                    self._lost.pop(thread_id, None)
            kernel.last_used = time.monotonic()
        note = self._lost.pop(thread_id, None)
        if note is not None:
            result.text = STATE_LOST_NOTE.format(reason=note) + "\n" + result.text
        return result

    async def _replace_locked(self, thread_id: str, kernel: SandboxKernel, reason: str) -> None:
        log.warning("recreating kernel of thread %s: %s", thread_id, reason)
        self.stats.recreated += 1
        await self.stop_thread(thread_id)
        await self.ensure_running(thread_id)

    async def reset(self, thread_id: str) -> None:
        """`notebook_reset`: a fresh kernel; the work directory's files are kept."""
        kernel = self._kernels.get(thread_id)
        if kernel is None:
            await self.ensure_running(thread_id)
            return
        async with kernel.lock:
            await self.stop_thread(thread_id)
        await self.ensure_running(thread_id)

    async def deep_check(self, kernel: SandboxKernel) -> bool:
        """Run a trivial cell and check its answer (a live process that cannot compute fails)."""
        if not kernel.alive():
            return False
        a, b = random.randint(1000, 9999), random.randint(1000, 9999)
        last_used = kernel.last_used  # a health check is not use: it must not defer idle stop
        try:
            result = await asyncio.wait_for(
                kernel.execute(f"{a} * {b}", self.config.health_timeout_s),
                self.config.health_timeout_s + self.config.interrupt_grace_s + 1,
            )
        except (TimeoutError, KernelDied, OSError):
            return False
        finally:
            kernel.last_used = last_used
        return not result.is_error and result.value == str(a * b)

    async def check_thread(self, thread_id: str) -> bool:
        """One health round for a thread: retries with backoff, then recreation. True if healthy."""
        kernel = self._kernels.get(thread_id)
        if kernel is None or kernel.lock.locked():
            return True  # not running here, or busy with a cell (which watches the process itself)
        async with kernel.lock:
            if self._kernels.get(thread_id) is not kernel:
                return True
            for attempt in range(self.config.health_retries):
                self.stats.health_checks += 1
                if await self.deep_check(kernel):
                    return True
                self.stats.health_failures += 1
                if not kernel.alive():
                    break  # a dead process will not come back: no point retrying
                await asyncio.sleep(self.config.health_backoff_s * (2**attempt))
            self._lost[thread_id] = "it failed its health check"
            await self._replace_locked(thread_id, kernel, "failed health check")
        return False

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            for thread_id in list(self._kernels):
                try:
                    await self.check_thread(thread_id)
                except Exception:
                    log.exception("health check of thread %s failed", thread_id)

    async def _idle_loop(self) -> None:
        period = min(self.config.idle_stop_s / 4, 30.0)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for thread_id, kernel in list(self._kernels.items()):
                if kernel.pending or kernel.lock.locked() or now - kernel.last_used < self.config.idle_stop_s:
                    continue
                async with kernel.lock:
                    still_idle = time.monotonic() - kernel.last_used >= self.config.idle_stop_s
                    idle = still_idle and not kernel.pending
                    if self._kernels.get(thread_id) is kernel and idle and await self.stop_thread(thread_id):
                        self.stats.idle_stopped += 1
                        self._lost[thread_id] = f"it was idle for over {self.config.idle_stop_s:g} s"
