"""The bubblewrap command line that isolates one kernel.

Why it looks the way it does:

* bwrap runs as real root *without* a user namespace. Inside a user namespace owned by root,
  "nobody" would still be root for file permissions on the host (mapped uid 0), so the drop
  to an unprivileged uid happens with `setpriv` inside the sandbox, after bwrap has made the
  mounts. bwrap keeps only CAP_SETUID/CAP_SETGID for that; setpriv clears all capabilities.
* Each thread gets its own uid, so RLIMIT_NPROC (counted per uid) is per thread: one
  thread's fork bomb cannot starve another thread's kernel.
* Only the system directories, the interpreter prefix(es) and the thread's own directories
  are mounted; everything else (other threads, /root, the project) does not exist inside.
  Directories bwrap creates as root default to 0700, so every ancestor of a mount point is
  created explicitly with `--perms 0755 --dir`, which makes e.g. a pyenv interpreter under
  /root usable by the unprivileged uid without opening /root itself.
* `--unshare-net` leaves only a private loopback: no route anywhere, not even to the host's
  127.0.0.1. The server talks to the kernel over ZMQ IPC sockets (unix sockets) in the
  thread's run directory, which is mounted at the same path inside and outside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"
PRLIMIT = "/usr/bin/prlimit"
WORKSPACE = "/workspace"
_SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits applied to every process of one kernel."""

    memory_mb: int
    cpu_seconds: int
    max_processes: int
    max_file_mb: int


def interpreter_prefixes(python: Path) -> list[Path]:
    """The directories an interpreter needs at run time: its venv (if any) and its base prefix."""
    python = Path(os.path.abspath(python))
    prefixes: list[Path] = []
    venv_root = python.parent.parent
    cfg = venv_root / "pyvenv.cfg"
    if cfg.exists():
        prefixes.append(venv_root)
        for line in cfg.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                prefixes.append(Path(value.strip()).parent)
    real = Path(os.path.realpath(python))
    prefixes.append(real.parent.parent)
    unique: list[Path] = []
    for prefix in prefixes:
        if prefix not in unique and not any(prefix.is_relative_to(p) for p in unique):
            unique.append(prefix)
    return unique


def _dirs_for(target: Path, made: set[str]) -> list[str]:
    args: list[str] = []
    for ancestor in reversed(target.parents):
        name = str(ancestor)
        if name == "/" or name in made:
            continue
        made.add(name)
        args += ["--perms", "0755", "--dir", name]
    return args


def sandbox_command(
    inner: list[str],
    *,
    uid: int,
    work_dir: Path,
    run_dir: Path,
    python: Path,
    limits: Limits,
    env: dict[str, str],
) -> list[str]:
    """The full argv that runs `inner` as `uid` inside a fresh sandbox."""
    args = [
        BWRAP,
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--clearenv",
        "--hostname", "sandbox",
    ]
    for name in _SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    args += ["--perms", "1777", "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]
    # Mount points under /tmp (tests, probes) must come after the tmpfs, or it hides them.
    made: set[str] = {"/tmp"}
    for prefix in interpreter_prefixes(python):
        args += _dirs_for(prefix, made)
        args += ["--ro-bind", str(prefix), str(prefix)]
    args += _dirs_for(run_dir, made)
    args += [
        "--bind", str(run_dir), str(run_dir),
        "--bind", str(work_dir), WORKSPACE,
        "--chdir", WORKSPACE,
        "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
    ]
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += [
        "--",
        SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all",
        PRLIMIT,
        f"--as={limits.memory_mb * 1024 * 1024}",
        f"--cpu={limits.cpu_seconds}",
        f"--nproc={limits.max_processes}",
        f"--fsize={limits.max_file_mb * 1024 * 1024}",
        "--core=0",
        "--",
        *inner,
    ]
    return args


def unsandboxed_command(inner: list[str], *, limits: Limits) -> list[str]:
    """`--insecure-no-sandbox`: same rlimits (where the OS allows them), no isolation."""
    if shutil.which(PRLIMIT) is None:
        return inner
    return [
        PRLIMIT,
        f"--as={limits.memory_mb * 1024 * 1024}",
        f"--cpu={limits.cpu_seconds}",
        f"--fsize={limits.max_file_mb * 1024 * 1024}",
        "--",
        *inner,
    ]


def sandbox_unavailable_reason(python: Path | None = None) -> str | None:
    """Why bubblewrap isolation cannot work here, or None when a real probe succeeded."""
    if os.geteuid() != 0:
        return "the sandbox server must run as root to give each kernel its own unprivileged uid"
    for tool in (BWRAP, SETPRIV, PRLIMIT):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing (install bubblewrap and util-linux)"
    python = python or Path(sys.executable)
    probe = Path("/tmp") / f"relaygate-bwrap-probe-{os.getpid()}"
    probe.mkdir(parents=True, exist_ok=True)
    try:
        cmd = sandbox_command(
            [str(python), "-c", "import os; print(os.getuid())"],
            uid=65534, work_dir=probe, run_dir=probe, python=python,
            limits=Limits(512, 10, 16, 1), env={"PATH": "/usr/bin:/bin"},
        )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap probe failed: {exc}"
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    if done.returncode != 0 or done.stdout.strip() != "65534":
        return f"bubblewrap probe failed (exit {done.returncode}): {done.stderr.strip()[:300]}"
    return None
