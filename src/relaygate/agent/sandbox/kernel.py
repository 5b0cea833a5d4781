"""One IPython kernel in its sandbox: start, run a cell, interrupt, stop.

The server writes the kernel's connection file itself (ZMQ over IPC, i.e. unix sockets in
the thread's run directory) and launches `python -m ipykernel_launcher` through bubblewrap;
jupyter_client's AsyncKernelClient then talks to it. Interrupts are sent as
`interrupt_request` messages on the control channel, which needs no signal across the
sandbox's pid namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.connect import write_connection_file

from relaygate.agent.sandbox.bwrap import WORKSPACE, Limits, sandbox_command, unsandboxed_command
from relaygate.agent.sandbox.config import SandboxConfig
from relaygate.agent.sandbox.proxy import FORWARDER, AllowListProxy

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class KernelStartError(RuntimeError):
    """The kernel process did not come up (or did not answer) within the start timeout."""


class KernelDied(RuntimeError):
    """The kernel process exited while a cell was running or being checked."""


@dataclass(slots=True)
class CellResult:
    """What a cell produced, already rendered for a model to read."""

    text: str
    is_error: bool = False
    timed_out: bool = False
    images: list[str] = field(default_factory=list)
    """Base64 image/png payloads, in display order."""
    value: str | None = None
    """The text/plain of the cell's execute_result, if any."""
    kernel_lost: bool = False
    """The kernel died or had to be restarted while running this cell."""


def thread_uid(thread_id: str, config: SandboxConfig) -> int:
    """A stable, non-root uid for one thread (its own RLIMIT_NPROC budget and file owner)."""
    digest = int.from_bytes(hashlib.sha256(thread_id.encode()).digest()[:8], "big")
    return config.uid_base + digest % config.uid_count


def thread_slug(thread_id: str) -> str:
    """A file-system-safe, collision-resistant directory name for a thread id."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", thread_id)[:40]
    return f"{safe}-{hashlib.sha256(thread_id.encode()).hexdigest()[:12]}"


def truncate(text: str, limit: int) -> str:
    """Keep the head and the tail of long output, with a note saying how much was cut."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} characters truncated ...]\n{text[-tail:]}"


class SandboxKernel:
    """A running (or startable) kernel for one thread. Not safe for concurrent cells: the
    pool serialises cells per thread with `lock`."""

    def __init__(self, thread_id: str, config: SandboxConfig, *, sandboxed: bool) -> None:
        self.thread_id = thread_id
        self.config = config
        self.sandboxed = sandboxed
        root = config.work_root.resolve()
        slug = thread_slug(thread_id)
        self.work_dir = root / "threads" / slug
        run_key = hashlib.sha256(f"{root}\0{thread_id}".encode()).hexdigest()[:16]
        self.run_dir = config.run_root / run_key
        self.uid = thread_uid(thread_id, config)
        self.lock = asyncio.Lock()
        self.last_used = time.monotonic()
        self.pending = 0
        """Cells queued or running; an idle stop never takes a kernel someone is waiting for."""
        self.process: asyncio.subprocess.Process | None = None
        self.proxy: AllowListProxy | None = None
        self.client: AsyncKernelClient | None = None
        self.connection_file = self.run_dir / "kernel.json"
        self.log_file = root / "logs" / f"{slug}.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def _prepare_dirs(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        os.chmod(self.work_dir.parent, 0o711)
        os.chmod(self.run_dir.parent, 0o711)
        if self.sandboxed:
            for path in (self.work_dir, self.run_dir):
                os.chown(path, self.uid, self.uid)
                os.chmod(path, 0o700)

    async def start(self) -> None:
        """Launch the kernel and wait until it answers a kernel_info request."""
        try:
            await self._launch()
            await self._wait_ready(self.config.start_timeout_s)
        except BaseException:
            await self.stop()
            raise
        self.last_used = time.monotonic()

    async def _launch(self) -> None:
        self._prepare_dirs()
        key = secrets.token_hex(16)
        write_connection_file(
            str(self.connection_file), transport="ipc", ip=str(self.run_dir / "zmq"),
            shell_port=1, iopub_port=2, stdin_port=3, control_port=4, hb_port=5,
            key=key.encode(), signature_scheme="hmac-sha256",
        )
        if self.sandboxed:
            os.chown(self.connection_file, self.uid, self.uid)
        python = str(self.config.python or Path(sys.executable))
        kernel_args = ["-f", str(self.connection_file), "--HistoryManager.enabled=False"]
        inner = [python, "-m", "ipykernel_launcher", *kernel_args]
        limits = Limits(
            self.config.memory_mb, self.config.cpu_seconds, self.config.max_processes,
            self.config.max_file_mb,
        )
        env = {
            "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": WORKSPACE if self.sandboxed else str(self.work_dir),
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "MALLOC_ARENA_MAX": "2",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
        }
        proxy = self.config.proxy
        if proxy is not None and self.sandboxed:
            socket_path = self.run_dir / "proxy.sock"
            self.proxy = AllowListProxy(socket_path, proxy.allow_hosts, owner_uid=self.uid)
            await self.proxy.start()
            inner = [python, "-c", FORWARDER, str(proxy.port), str(socket_path), *kernel_args]
            url = f"http://127.0.0.1:{proxy.port}"
            env.update({"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url})
        if self.sandboxed:
            argv = sandbox_command(
                inner, uid=self.uid, work_dir=self.work_dir, run_dir=self.run_dir,
                python=Path(python), limits=limits, env=env,
            )
            cwd = None
        else:
            argv = unsandboxed_command(inner, limits=limits)
            cwd = str(self.work_dir)
        log = open(self.log_file, "ab")  # noqa: SIM115
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, cwd=cwd,
                env=None if self.sandboxed else {**os.environ, **env},
                start_new_session=True,
            )
        finally:
            log.close()
        client = AsyncKernelClient(connection_file=str(self.connection_file))
        client.load_connection_file()
        client.start_channels()
        self.client = client

    async def _wait_ready(self, timeout: float) -> None:
        assert self.client is not None
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise KernelStartError(
                    f"kernel exited during start (code {self.process.returncode if self.process else '?'}); "
                    f"see {self.log_file}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KernelStartError(f"kernel did not answer within {timeout:.0f} s")
            msg_id = self.client.kernel_info()
            try:
                while True:
                    reply = await self.client.get_shell_msg(timeout=min(remaining, 0.25))
                    if reply["parent_header"].get("msg_id") == msg_id:
                        break
                # ZMQ's slow joiner: the kernel may answer on shell before our iopub
                # subscription is live, and a cell's output would then be lost. Ready means
                # iopub delivers too (kernel_info publishes busy/idle status).
                await self.client.get_iopub_msg(timeout=0.25)
            except Exception:  # queue.Empty on timeout: ask again
                continue
            with contextlib.suppress(Exception):
                while True:
                    await self.client.get_iopub_msg(timeout=0.05)
            return

    async def execute(self, code: str, timeout: float) -> CellResult:
        """Run one cell. On timeout the cell is interrupted; if it does not stop within the
        grace period the kernel is restarted (its state is lost, which the result says)."""
        assert self.client is not None
        self.last_used = time.monotonic()
        msg_id = self.client.execute(code, store_history=True, allow_stdin=False)
        stdout: list[str] = []
        stderr: list[str] = []
        outputs: list[str] = []
        images: list[str] = []
        value: str | None = None
        error: str | None = None
        deadline = time.monotonic() + timeout
        timed_out = False
        interrupted_at: float | None = None
        replied_at: float | None = None
        while True:
            if not self.alive():
                raise KernelDied("the kernel process exited during the cell")
            now = time.monotonic()
            if now >= deadline and not timed_out:
                timed_out = True
                interrupted_at = now
                await self.interrupt()
            if timed_out and interrupted_at is not None and now - interrupted_at > self.config.interrupt_grace_s:
                return CellResult(
                    text=self._render(stdout, stderr, outputs, None)
                    + f"\n[cell timed out after {timeout:g} s and did not stop when interrupted; "
                    "the kernel was restarted and its state was lost]",
                    is_error=True, timed_out=True, images=images, kernel_lost=True,
                )
            wait = min(0.5, max(0.01, (deadline if not timed_out else now + 0.2) - now))
            try:
                msg: dict[str, Any] = await self.client.get_iopub_msg(timeout=wait)
            except Exception:  # queue.Empty
                # Output travels on iopub, completion on shell: if the reply came and iopub
                # stays quiet, do not wait for a status message that may have been dropped.
                if replied_at is None and await self._replied(msg_id):
                    replied_at = time.monotonic()
                if replied_at is not None and time.monotonic() - replied_at > 1.0:
                    break
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "stream":
                (stdout if content.get("name") == "stdout" else stderr).append(content.get("text", ""))
            elif kind in ("execute_result", "display_data"):
                data = content.get("data", {})
                if "image/png" in data:
                    images.append(str(data["image/png"]).strip())
                    outputs.append(f"[image/png output #{len(images)} attached]")
                elif "text/plain" in data:
                    outputs.append(str(data["text/plain"]))
                if kind == "execute_result" and "text/plain" in data:
                    value = str(data["text/plain"])
            elif kind == "error":
                error = _ANSI.sub("", "\n".join(content.get("traceback", [])))
                if not error.strip():
                    error = f"{content.get('ename')}: {content.get('evalue')}"
            elif kind == "status" and content.get("execution_state") == "idle":
                break
        text = self._render(stdout, stderr, outputs, error)
        if timed_out:
            text += f"\n[cell timed out after {timeout:g} s and was interrupted; variables are kept]"
        return CellResult(
            text=text, is_error=error is not None or timed_out, timed_out=timed_out,
            images=images, value=value,
        )

    async def _replied(self, msg_id: str) -> bool:
        assert self.client is not None
        try:
            while True:
                reply = await self.client.get_shell_msg(timeout=0)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return True
        except Exception:  # queue.Empty: nothing (more) waiting
            return False

    def _render(self, stdout: list[str], stderr: list[str], outputs: list[str], error: str | None) -> str:
        parts: list[str] = []
        if stdout:
            parts.append("".join(stdout).rstrip("\n"))
        if stderr:
            parts.append("[stderr]\n" + "".join(stderr).rstrip("\n"))
        parts.extend(outputs)
        if error:
            parts.append(error)
        return truncate("\n".join(parts), self.config.max_output_chars)

    async def interrupt(self) -> None:
        """Ask the kernel to raise KeyboardInterrupt in the running cell."""
        if self.client is None:
            return
        msg = self.client.session.msg("interrupt_request", {})
        self.client.control_channel.send(msg)

    async def stop(self) -> None:
        """Kill the sandbox (the whole pid namespace dies with it) and close the channels."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.stop_channels()
            self.client = None
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), 5)
        if self.proxy is not None:
            await self.proxy.close()
            self.proxy = None
        shutil.rmtree(self.run_dir, ignore_errors=True)
