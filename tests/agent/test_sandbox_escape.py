"""Escape attempts from a thread's sandbox: each must fail, the server must stay up, and the
other thread's kernel (with its variables) must be unaffected."""

from __future__ import annotations

import asyncio
from pathlib import Path

from relaygate.agent.sandbox.pool import KernelPool

from .agent_testkit import kernel_pids


async def _neighbour(pool: KernelPool) -> None:
    result = await pool.run_cell("neighbour", "kept = 'still here'\nkept", 30)
    assert result.value == "'still here'"


async def _neighbour_unaffected(pool: KernelPool) -> None:
    result = await pool.run_cell("neighbour", "kept", 30)
    assert not result.is_error, result.text
    assert result.value == "'still here'"
    assert "state was lost" not in result.text


async def test_kernel_runs_unprivileged_with_its_own_uid(pool: KernelPool) -> None:
    await _neighbour(pool)
    a = await pool.run_cell("intruder", "import os; os.getuid(), os.getgid(), os.getgroups()", 30)
    b = await pool.run_cell("neighbour", "import os; os.getuid()", 30)
    assert a.value is not None and b.value is not None
    uid = int(a.value.strip("()").split(",")[0])
    assert uid >= 1000
    assert int(b.value) != uid


async def test_cannot_read_outside_its_work_directory(pool: KernelPool, tmp_path: Path) -> None:
    secret = await pool.run_cell("neighbour", "open('/workspace/secret.txt', 'w').write('TOPSECRET'); kept = 'still here'", 30)
    assert not secret.is_error, secret.text
    neighbour_dir = pool.kernel("neighbour").work_dir  # type: ignore[union-attr]
    assert (neighbour_dir / "secret.txt").read_text() == "TOPSECRET"
    probe = f"""
import glob, os
found = []
for path in [{str(neighbour_dir / 'secret.txt')!r}, '/root/.bashrc', '/root/.gitconfig', {str(Path.cwd() / 'pyproject.toml')!r}]:
    try:
        found.append(open(path).read())
    except OSError as exc:
        print('refused', path, type(exc).__name__)
print(sorted(os.listdir('/root')))
print(glob.glob('/tmp/**/secret.txt', recursive=True) + glob.glob('/work/**/secret.txt', recursive=True))
found
"""
    result = await pool.run_cell("intruder", probe, 60)
    assert "TOPSECRET" not in result.text
    assert result.text.count("refused") == 4, result.text
    assert result.value == "[]"
    assert "\n[]\n" in result.text  # no secret.txt anywhere it can see
    await _neighbour_unaffected(pool)


async def test_cannot_write_system_directories(pool: KernelPool) -> None:
    await _neighbour(pool)
    probe = """
import os
for path in ['/etc/relaygate-pwned', '/usr/pwned', '/pwned']:
    try:
        open(path, 'w').write('x')
        print('WROTE', path)
    except OSError as exc:
        print('refused', path, exc.errno)
"""
    result = await pool.run_cell("intruder", probe, 30)
    assert "WROTE" not in result.text
    assert result.text.count("refused") == 3
    assert not Path("/etc/relaygate-pwned").exists()
    tmp = await pool.run_cell("intruder", "open('/tmp/mine', 'w').write('ok'); print(open('/tmp/mine').read())", 30)
    assert tmp.text.strip() == "ok"  # a private /tmp is writable
    assert not Path("/tmp/mine").exists()
    await _neighbour_unaffected(pool)


async def test_cannot_open_a_socket_to_the_host(pool: KernelPool) -> None:
    await _neighbour(pool)
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        probe = f"""
import socket
for host, port in [('127.0.0.1', {port}), ('127.0.0.1', 6379), ('127.0.0.1', 5432), ('1.1.1.1', 53)]:
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, port))
        print('CONNECTED', host, port)
    except OSError as exc:
        print('refused', host, port, type(exc).__name__)
    finally:
        s.close()
"""
        result = await pool.run_cell("intruder", probe, 60)
    finally:
        server.close()
        await server.wait_closed()
    assert "CONNECTED" not in result.text
    assert result.text.count("refused") == 4, result.text
    assert connections == []
    await _neighbour_unaffected(pool)


async def test_fork_bomb_is_contained(pool: KernelPool) -> None:
    await _neighbour(pool)
    bomb = """
import os, subprocess, sys, time
bomb = subprocess.Popen([sys.executable, '-c', 'import os\\nwhile True:\\n    try: os.fork()\\n    except OSError: pass'])
time.sleep(3)
count = sum(1 for p in os.listdir('/proc') if p.isdigit())
try:
    os.fork()
    print('FORKED')
except OSError as exc:
    print('fork refused', exc.errno)
os.kill(-1, 9)  # every process of this uid in this sandbox except the kernel itself
time.sleep(0.5)
count
"""
    result = await pool.run_cell("intruder", bomb, 60)
    assert "fork refused" in result.text, result.text
    assert result.value is not None and int(result.value) <= pool.config.max_processes + 2
    await _neighbour_unaffected(pool)
    after = await pool.run_cell("intruder", "import subprocess; subprocess.run(['true']).returncode", 30)
    assert after.value == "0", after.text  # the limit is per thread: the kernel works again


async def test_allocating_10_gb_fails_and_the_kernel_survives(pool: KernelPool) -> None:
    await _neighbour(pool)
    result = await pool.run_cell("intruder", "x = 1\nblob = bytearray(10 * 1024**3)", 60)
    assert result.is_error
    assert "MemoryError" in result.text
    again = await pool.run_cell("intruder", "x + 1", 30)
    assert again.value == "2"
    await _neighbour_unaffected(pool)


async def test_infinite_loop_is_interrupted_at_the_timeout(pool: KernelPool) -> None:
    await _neighbour(pool)
    await pool.run_cell("intruder", "y = 41", 30)
    started = asyncio.get_running_loop().time()
    result = await pool.run_cell("intruder", "while True:\n    pass", 1)
    elapsed = asyncio.get_running_loop().time() - started
    assert result.is_error and result.timed_out
    assert "timed out" in result.text
    assert elapsed < 5
    again = await pool.run_cell("intruder", "y + 1", 30)
    assert again.value == "42"  # interrupted, not restarted: state kept
    await _neighbour_unaffected(pool)


async def test_uninterruptible_loop_restarts_the_kernel_not_the_server(pool: KernelPool) -> None:
    await _neighbour(pool)
    await pool.run_cell("intruder", "z = 1", 30)
    old = pool.kernel("intruder")
    assert old is not None
    old_pids = kernel_pids(old.connection_file)
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    result = await pool.run_cell("intruder", code, 1)
    assert result.is_error and result.timed_out
    assert "restarted" in result.text
    assert old_pids and all(not Path(f"/proc/{pid}").exists() for pid in old_pids)
    again = await pool.run_cell("intruder", "'z' in globals()", 30)
    assert again.value == "False"
    await _neighbour_unaffected(pool)
