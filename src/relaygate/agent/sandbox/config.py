"""The `sandbox:` section of the sandbox server's YAML config, validated with pydantic v2."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


def _default_run_root() -> Path:
    if os.geteuid() == 0:
        return Path("/run/relaygate-sandbox")
    return Path(f"/tmp/relaygate-sandbox-{os.geteuid()}")


class ProxyConfig(BaseModel):
    """An HTTP(S) proxy the kernels may use; only the listed hosts are reachable through it."""

    model_config = ConfigDict(extra="forbid")

    allow_hosts: list[str] = Field(default_factory=list)
    """Host names (exact, or `*.example.com` for subdomains) the proxy forwards to."""
    port: int = Field(default=3128, ge=1, le=65535)
    """Port of the proxy inside each sandbox (on the sandbox's own loopback)."""


class SandboxConfig(BaseModel):
    """Limits and lifecycle of the per-thread notebook kernels."""

    model_config = ConfigDict(extra="forbid")

    work_root: Path = Path(".relaygate/sandbox")
    """Holds one writable work directory (and a private run directory) per thread."""
    run_root: Path = Field(default_factory=lambda: _default_run_root())
    """Private per-kernel directories for the ZMQ IPC sockets; kept short because a unix
    socket path may not exceed 107 bytes."""
    database_url: str = "sqlite:///.relaygate/sandbox/state.db"
    """Where thread status lives: `sqlite:///relative/path`, `sqlite:////abs/path` or `postgresql://...`."""
    instance: str = Field(default_factory=socket.gethostname)
    """Name of this server in the state table; rows it owned are reset when it restarts."""
    max_kernels: int = Field(default=32, ge=1)
    """Kernels alive at once; the least recently used idle one is stopped to make room."""
    memory_mb: int = Field(default=2048, ge=128)
    cpu_seconds: int = Field(default=3600, ge=1)
    """Total CPU time of a kernel process (RLIMIT_CPU); past it the kernel is killed and recreated."""
    max_processes: int = Field(default=64, ge=4)
    max_file_mb: int = Field(default=1024, ge=1)
    idle_stop_s: float = Field(default=7200.0, gt=0)
    health_interval_s: float = Field(default=30.0, gt=0)
    health_timeout_s: float = Field(default=10.0, gt=0)
    health_retries: int = Field(default=3, ge=1)
    """Failed deep checks tolerated (with exponential backoff) before the kernel is recreated."""
    health_backoff_s: float = Field(default=0.5, ge=0)
    start_timeout_s: float = Field(default=30.0, gt=0)
    interrupt_grace_s: float = Field(default=3.0, gt=0)
    """After a timeout, how long an interrupted cell may take to stop before the kernel is restarted."""
    max_output_chars: int = Field(default=20_000, ge=100)
    uid_base: int = Field(default=200_000, ge=1000)
    uid_count: int = Field(default=100_000, ge=1)
    """Kernels run as uid/gid `uid_base + hash(thread) % uid_count`, never root."""
    python: Path | None = None
    """Interpreter for kernels (needs ipykernel); defaults to the server's own."""
    proxy: ProxyConfig | None = None

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("database_url must start with sqlite:/// or postgresql://")
        return value


class SandboxFile(BaseModel):
    """The whole config file: only the `sandbox:` section is read."""

    model_config = ConfigDict(extra="ignore")

    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)


def load_sandbox_config(path: Path | None) -> SandboxConfig:
    """Read `path` (YAML) or return the defaults when no file is given."""
    if path is None:
        return SandboxConfig()
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return SandboxFile.model_validate(raw).sandbox
