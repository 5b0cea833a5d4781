"""Shared machinery of the benchmarks: child processes that are always cleaned up, CPU
pinning, the nginx and slow aiohttp upstreams, gateway/peer launchers, wrk runs, RSS and
CPU sampling from /proc. Every target is on 127.0.0.1; every wait is bounded."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV_BIN = REPO / ".venv" / "bin"
HOST = "127.0.0.1"
GATEWAY_CORE = "1"  # the system under test
LOAD_CORE = "0"  # load generator, upstreams, this orchestrator
MASTER_KEY = "sk-bench-master-key"

# A fixed, realistic-size chat completion and a 20-chunk stream (with the usage chunk a
# client gets with stream_options.include_usage).
COMPLETION = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content":
                 "The quick brown fox jumps over the lazy dog. " * 4},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 24, "completion_tokens": 40, "total_tokens": 64},
    "system_fingerprint": "fp_bench",
}
STREAM_CHUNKS = 20


def sse_body(chunks: int = STREAM_CHUNKS) -> bytes:
    def event(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None,
              choices: bool = True) -> bytes:
        obj: dict[str, Any] = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
                               "model": "gpt-4o-mini",
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []}
        if usage is not None:
            obj["usage"] = usage
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    out = [event({"role": "assistant", "content": ""})]
    out += [event({"content": f"word{i} "}) for i in range(chunks)]
    out.append(event({}, "stop"))
    out.append(event({}, None, {"prompt_tokens": 24, "completion_tokens": chunks, "total_tokens": 24 + chunks},
                     choices=False))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def request_body(stream: bool, model: str = "bench", prompt: str = "Say hello.") -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": 64, "temperature": 0}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------- processes

_LIVE: list[subprocess.Popen[bytes]] = []


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin_self(core: str = LOAD_CORE) -> None:
    """The orchestrator (and the Python load clients it runs) stay off the gateway's core."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {int(c) for c in core.split(",")})
    _raise_nofile()


def spawn(argv: Sequence[str], core: str | None, log: Path, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Starts a child in its own process group (so its own children die with it),
    pinned to `core` with taskset, output to `log`."""
    cmd = (["taskset", "-c", core] if core is not None else []) + list(argv)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})}, start_new_session=True,
                                preexec_fn=_raise_nofile)
    _LIVE.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM to the whole process group, SIGKILL after `grace_s`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # a forked worker may outlive its parent; the group id is still the leader's pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc in _LIVE:
        _LIVE.remove(proc)


def stop_all() -> None:
    for proc in list(reversed(_LIVE)):
        stop(proc, 2.0)


def _on_signal(signum: int, _frame: object) -> None:
    stop_all()
    sys.exit(128 + signum)


def install_cleanup() -> None:
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0,
              method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None) -> None:
    """Polls until `url` answers with any HTTP status; fails early if `proc` died."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{tail(log)}")
        try:
            req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
            with urllib.request.urlopen(req, timeout=5) as r:
                r.read()
            return
        except urllib.error.HTTPError:
            return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up after {timeout_s}s ({last}):\n{tail(log)}")


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------- /proc

def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (taskset execs in place, so pid is the program)."""
    kids = _children()
    out, todo = [], [pid]
    while todo and len(out) < 1000:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def rss_kb(pids: Sequence[int]) -> int:
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_s(pids: Sequence[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / tick


def busy_s() -> float:
    """CPU seconds all cores spent not idle, since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class ForeignLoad:
    """CPU used during a measurement by processes this benchmark did not start (other
    people's test suites on a shared machine), in cores: a figure taken while it is high
    is not clean."""

    def __enter__(self) -> ForeignLoad:
        self.t0 = time.monotonic()
        self.busy0 = busy_s()
        self.mine0 = self._mine()
        self.cores = 0.0
        return self

    @staticmethod
    def _mine() -> float:
        own = sum(cpu_s(tree(p.pid)) for p in _LIVE if p.poll() is None)
        r_self = resource.getrusage(resource.RUSAGE_SELF)
        r_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own + r_self.ru_utime + r_self.ru_stime + r_kids.ru_utime + r_kids.ru_stime

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self.t0
        if wall > 0:
            self.cores = max(0.0, (busy_s() - self.busy0) - (self._mine() - self.mine0)) / wall


# ---------------------------------------------------------------------------- upstreams

NGINX_CONF = """{preamble}
worker_processes 1;
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log error;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
{locations}
    }}
}}
"""
FAST_LOCATIONS = """
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{completion}';
        }}
        # the stream is too long for a `return` string: a static file, with POST's 405
        # turned into a 200 GET of the same file
        location = /sse/v1/chat/completions {{
            root {tmp}/www;
            default_type text/event-stream;
            add_header cache-control no-cache;
            etag off;
            error_page 405 =200 $uri;
        }}
        location / {{ return 404 '{{"error":{{"message":"not found"}}}}'; }}"""
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")  # Debian: libnginx-mod-http-echo
SLOW_LOCATIONS = """
        location = /v1/chat/completions {{
            default_type application/json;
            echo_sleep {delay_s};
            echo -n '{completion}';
        }}"""


@dataclass
class Upstream:
    """An upstream server; `json_url`/`sse_url` are the OpenAI base URLs (ending in /v1)
    that answer a chat completion and a stream respectively."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    json_base: str
    sse_base: str

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.port}"


def _run_nginx(d: Path, locations: str, preamble: str = "") -> tuple[subprocess.Popen[bytes], int]:
    """nginx with `locations` in its one server, config and logs in `d`: one worker, no
    daemon, pinned to the load core. Returns once it answers."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    d.mkdir(parents=True, exist_ok=True)
    (d / "nginx.conf").write_text(NGINX_CONF.format(preamble=preamble, tmp=d, port=port, locations=locations))
    log = d / "nginx.log"
    proc = spawn([nginx, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "nginx-error.log")],
                 LOAD_CORE, log)
    wait_http(f"http://{HOST}:{port}/v1/chat/completions", proc, log, 15, "POST", b"{}")
    return proc, port


def _completion_json() -> str:
    return json.dumps(COMPLETION, separators=(",", ":"))


def start_nginx(tmp: Path) -> Upstream:
    """nginx with a fixed chat completion at /v1 and a fixed SSE stream at /sse/v1."""
    d = tmp / "nginx"
    sse = d / "www" / "sse" / "v1" / "chat" / "completions"
    sse.parent.mkdir(parents=True, exist_ok=True)
    sse.write_bytes(sse_body())
    proc, port = _run_nginx(d, FAST_LOCATIONS.format(tmp=d, completion=_completion_json()))
    return Upstream("nginx", proc, port, f"http://{HOST}:{port}/v1", f"http://{HOST}:{port}/sse/v1")


def start_slow_nginx(tmp: Path, delay_ms: int) -> Upstream | None:
    """nginx answering the fixed completion after `delay_ms` (the echo module's timer-based
    `echo_sleep`; Debian's nginx-light ships it), or None where that module is missing.
    Unlike bench/slow_upstream.py it is no limit itself: one nginx worker holds thousands of
    sleeping requests for next to no CPU, so the ideal throughput is what it shows."""
    if not ECHO_MODULE.exists():
        return None
    completion = _completion_json()
    if "'" in completion or "$" in completion or "\\" in completion:  # nginx quoting, echo variables
        raise ValueError("the fixed completion cannot be an nginx echo string")
    locations = SLOW_LOCATIONS.format(delay_s=delay_ms / 1000, completion=completion)
    proc, port = _run_nginx(tmp / "nginx-slow", locations, preamble=f"load_module {ECHO_MODULE};")
    return Upstream("nginx echo_sleep", proc, port, f"http://{HOST}:{port}/v1", f"http://{HOST}:{port}/v1")


def start_slow_upstream(tmp: Path, delay_ms: int, chunk_ms: int = 0, chunks: int = STREAM_CHUNKS,
                        name: str = "slow") -> Upstream:
    """bench/slow_upstream.py: answers after `delay_ms`; streams trickle one chunk per `chunk_ms`."""
    port = free_port()
    log = tmp / f"{name}-upstream.log"
    proc = spawn([sys.executable, str(BENCH / "slow_upstream.py"), "--port", str(port), "--delay-ms",
                  str(delay_ms), "--chunk-ms", str(chunk_ms), "--chunks", str(chunks)], LOAD_CORE, log)
    wait_http(f"http://{HOST}:{port}/health", proc, log, 30)
    return Upstream(name, proc, port, f"http://{HOST}:{port}/v1", f"http://{HOST}:{port}/sse/v1")


def start_mock_upstream(tmp: Path, latency_ms: int = 0) -> Upstream:
    """`relaygate mock-upstream` (another engineer's): one URL for both; it streams when asked."""
    port = free_port()
    log = tmp / "mock-upstream.log"
    proc = spawn([*relaygate_argv(), "mock-upstream", "--port", str(port), "--latency-ms",
                  str(latency_ms)], LOAD_CORE, log, env=_REV)
    wait_http(f"http://{HOST}:{port}/v1/models", proc, log, 30)
    base = f"http://{HOST}:{port}/v1"
    return Upstream("mock-upstream", proc, port, base, base)


# ---------------------------------------------------------------------------- targets

@dataclass
class Target:
    """Something the load is sent to: `url(stream)` is the chat completions URL,
    `headers` its auth, `model(stream)` the model name a request carries."""

    name: str
    proc: subprocess.Popen[bytes] | None
    json_url: str
    sse_url: str
    headers: dict[str, str] = field(default_factory=dict)
    json_model: str = "bench"
    sse_model: str = "bench-stream"
    auth_note: str = ""
    log: Path | None = None
    sse_headers: dict[str, str] | None = None  # when a stream needs other headers (Portkey's host)

    def url(self, stream: bool) -> str:
        return self.sse_url if stream else self.json_url

    def model(self, stream: bool) -> str:
        return self.sse_model if stream else self.json_model

    def pids(self) -> list[int]:
        return tree(self.proc.pid) if self.proc is not None and self.proc.poll() is None else []


def direct(up: Upstream) -> Target:
    return Target(f"direct ({up.name})", None, up.json_base + "/chat/completions",
                  up.sse_base + "/chat/completions", {"authorization": "Bearer upstream-key"},
                  "gpt-4o-mini", "gpt-4o-mini")


def start_passthrough(tmp: Path, up: Upstream, core: str = GATEWAY_CORE) -> Target:
    port = free_port()
    log = tmp / "passthrough.log"
    proc = spawn([sys.executable, str(BENCH / "passthrough.py"), "--port", str(port), "--upstream", up.origin],
                 core, log)
    wait_http(f"http://{HOST}:{port}/health", proc, log, 30)
    base = f"http://{HOST}:{port}"
    return Target("aiohttp pass-through", proc, base + up.json_base.removeprefix(up.origin) + "/chat/completions",
                  base + up.sse_base.removeprefix(up.origin) + "/chat/completions",
                  {"authorization": "Bearer upstream-key"}, "gpt-4o-mini", "gpt-4o-mini", log=log)


def relaygate_config(tmp: Path, up: Upstream, port: int, extra: dict[str, Any] | None = None) -> Path:
    """Route `bench` (non-streaming) and `bench-stream` (the SSE location of the same
    upstream) to openai-compatible providers; defaults otherwise (exact cache on, ledger,
    metrics, breakers)."""
    state = tmp / "relaygate-state"
    state.mkdir(parents=True, exist_ok=True)
    cfg = {
        "server": {"host": HOST, "port": port, "master_key": MASTER_KEY},
        "state": {"database_url": f"sqlite:///{state}/relaygate.db", "journal_dir": str(state / "journal")},
        "providers": {
            "upstream": {"type": "openai-compatible", "base_url": up.json_base, "api_key": "upstream-key"},
            "upstream-sse": {"type": "openai-compatible", "base_url": up.sse_base, "api_key": "upstream-key"},
        },
        "routes": {
            "bench": {"targets": [{"provider": "upstream", "model": "gpt-4o-mini"}]},
            "bench-stream": {"targets": [{"provider": "upstream-sse", "model": "gpt-4o-mini"}]},
        },
    }
    for section, value in (extra or {}).items():
        cfg[section] = {**cfg.get(section, {}), **value} if isinstance(value, dict) else value
    path = tmp / f"relaygate-{port}.yaml"
    path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    return path


def _virtual_key(tmp: Path, cfg: Path, base: str) -> tuple[str, str]:
    """A virtual key from `relaygate keys create --json` when that command exists, else the
    master key. Returns (key, note)."""
    argv = [*relaygate_argv(), "keys", "create", "--name", "bench", "--json",
            "--url", base, "--master-key", MASTER_KEY]
    env = {**os.environ, "RELAYGATE_CONFIG": str(cfg), "RELAYGATE_MASTER_KEY": MASTER_KEY, **_REV}
    try:
        out = subprocess.run(argv, capture_output=True, timeout=60, cwd=tmp, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return MASTER_KEY, f"master key (keys create failed: {exc})"
    if out.returncode == 0:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            data = json.loads(out.stdout.decode().strip().splitlines()[-1])
            return str(data["key"]), f"virtual key {data.get('id', '?')}"
    err = (out.stderr or out.stdout).decode(errors="replace").strip().splitlines()
    reason = "no `relaygate keys` command" if any("No such command" in e for e in err) else (
        err[-1][:120] if err else f"exit {out.returncode}")
    return MASTER_KEY, f"master key ({reason})"


# relaygate from a committed revision instead of the work tree (others edit src/ while
# benchmarks run): `use_revision("HEAD")` exports src/ of that commit to a temp dir that
# goes first on PYTHONPATH of every relaygate this process starts.
_REV: dict[str, str] = {}


def use_revision(rev: str | None) -> str:
    """Returns what is measured: `work tree (<HEAD>+changes)` or `<rev> (<sha>)`."""
    label, env = export_revision(rev)
    _REV.update(env)
    return label


def export_revision(rev: str | None) -> tuple[str, dict[str, str]]:
    """(what is measured, the environment that makes relaygate run it): the work tree when
    `rev` is None, else src/ of that commit exported to a temp dir."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev or "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    if not rev:
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True).stdout.strip()
        return f"work tree ({head}{' + uncommitted changes in src/' if dirty else ''})", {}
    dest = Path(tempfile.mkdtemp(prefix="relaygate-src-"))
    atexit.register(shutil.rmtree, dest, True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", head, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return f"commit {head}", {"PYTHONPATH": str(dest / "src")}


@contextlib.contextmanager
def revision_env(env: dict[str, str]) -> Iterator[None]:
    """relaygates started inside run with `env` (from `export_revision`, plus any variables
    of their own) instead of the revision chosen by `use_revision`."""
    before = dict(_REV)
    _REV.clear()
    _REV.update(env)
    try:
        yield
    finally:
        _REV.clear()
        _REV.update(before)


def start_relaygate_at(tmp: Path, up: Upstream, rev: str) -> Target:
    """relaygate at another revision beside the one `use_revision` chose (a before/after
    in the same rounds), named `relaygate commit <sha>`."""
    label, env = export_revision(rev)
    with revision_env(env):
        t = start_relaygate(tmp, up)
    t.name = f"relaygate {label}"
    return t


def relaygate_argv() -> list[str]:
    if _REV:
        return [str(VENV_BIN / "python"), "-m", "relaygate.cli"]
    return [str(VENV_BIN / "relaygate")]


def start_relaygate(tmp: Path, up: Upstream, workers: int = 1, core: str | None = GATEWAY_CORE,
                    extra_argv: Sequence[str] = (), wrapper: Sequence[str] = (),
                    extra_config: dict[str, Any] | None = None) -> Target:
    port = free_port()
    cfg = relaygate_config(tmp, up, port, extra_config)
    log = tmp / f"relaygate-{port}.log"
    argv = [*wrapper, *relaygate_argv(), "serve", "--config", str(cfg), "--log-level", "warning",
            *extra_argv]
    if workers > 1:
        argv += ["--workers", str(workers)]
    proc = spawn(argv, core, log, cwd=tmp, env=_REV)
    base = f"http://{HOST}:{port}"
    wait_http(base + "/health", proc, log, 60)
    key, note = _virtual_key(tmp, cfg, base)
    name = "relaygate" if workers == 1 else f"relaygate --workers {workers}"
    t = Target(name, proc, base + "/v1/chat/completions", base + "/v1/chat/completions",
               {"authorization": f"Bearer {key}"}, "bench", "bench-stream", note, log)
    status, body = post(t.json_url, request_body(False), t.headers)
    if status != 200:
        raise RuntimeError(f"relaygate smoke request: {status} {body[:300]!r}\n{tail(log)}")
    return t


PEERS = BENCH / "peers"
LITELLM_BIN = PEERS / "venv" / "bin" / "litellm"
PORTKEY_JS = PEERS / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
LITELLM_KEY = "sk-litellm-bench"


def start_litellm(tmp: Path, up: Upstream, core: str = GATEWAY_CORE) -> Target:
    port = free_port()
    cfg = tmp / "litellm.yaml"
    # model names its price map knows (else it runs an extra diagnostic on every request)
    cfg.write_text(json.dumps({
        "model_list": [
            {"model_name": "bench", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": up.json_base,
                                                       "api_key": "upstream-key"}},
            {"model_name": "bench-stream", "litellm_params": {"model": "openai/gpt-4o-mini",
                                                              "api_base": up.sse_base, "api_key": "upstream-key"}},
        ],
        "general_settings": {"master_key": LITELLM_KEY},
        "litellm_settings": {"telemetry": False},
    }))
    log = tmp / "litellm.log"
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY,
           "DISABLE_SCHEMA_UPDATE": "True", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"}
    proc = spawn([str(LITELLM_BIN), "--config", str(cfg), "--host", HOST, "--port", str(port),
                  "--num_workers", "1"], core, log, cwd=tmp, env=env)
    base = f"http://{HOST}:{port}"
    wait_http(base + "/health/liveliness", proc, log, 180)
    t = Target("LiteLLM 1.109.1", proc, base + "/v1/chat/completions", base + "/v1/chat/completions",
               {"authorization": f"Bearer {LITELLM_KEY}"}, "bench", "bench-stream", "master key", log)
    status, body = post(t.json_url, request_body(False), t.headers, 60)
    if status != 200:
        raise RuntimeError(f"litellm smoke request: {status} {body[:300]!r}\n{tail(log)}")
    return t


def start_portkey(tmp: Path, up: Upstream, core: str = GATEWAY_CORE) -> Target:
    port = free_port()
    log = tmp / "portkey.log"
    proc = spawn(["node", str(PORTKEY_JS), "--headless", f"--port={port}"], core, log, cwd=PEERS,
                 env={"NODE_ENV": "production"})
    base = f"http://{HOST}:{port}"
    wait_http(base + "/", proc, log, 60)
    # Portkey is a pass-through in the upstream's format: the custom host picks the location.
    t = Target("Portkey 1.15.2", proc, base + "/v1/chat/completions", base + "/v1/chat/completions",
               {"authorization": "Bearer upstream-key", "x-portkey-provider": "openai",
                "x-portkey-custom-host": up.json_base}, "gpt-4o-mini", "gpt-4o-mini", "upstream key", log)
    t.sse_headers = {**t.headers, "x-portkey-custom-host": up.sse_base}
    status, body = post(t.json_url, request_body(False, "gpt-4o-mini"), t.headers)
    if status != 200:
        raise RuntimeError(f"portkey smoke request: {status} {body[:300]!r}\n{tail(log)}")
    return t


def headers_for(t: Target, stream: bool) -> dict[str, str]:
    return t.sse_headers or t.headers if stream else t.headers


def peers_available() -> dict[str, bool]:
    return {"litellm": LITELLM_BIN.exists(), "portkey": PORTKEY_JS.exists() and shutil.which("node") is not None}


# ---------------------------------------------------------------------------- wrk

WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{headers}
local model = "{model}"
local stream = {stream}
local n = 0
-- a different prompt on every request, so an exact cache misses
request = function()
  n = n + 1
  local body = '{{"model":"' .. model .. '","messages":[{{"role":"user","content":"Say hello, request ' ..
    n .. ' of thread ' .. tostring(wrk.thread):sub(-8) .. '."}}],"max_tokens":64,"temperature":0'
  if stream then body = body .. ',"stream":true' end
  return wrk.format(nil, nil, nil, body .. '}}')
end
"""

# Paced: each connection sends, waits for the answer, then a random pause (exponential,
# mean `period_ms`) before its next request. Memoryless pauses keep the connections out of
# step (constant pauses let them fall into bursts that queue behind each other), so the
# requests of all connections together arrive about as a Poisson stream of
# connections / (period + latency) per second.
PACED_CONNECTIONS = 40
WRK_PACE_LUA = """
math.randomseed(os.time())
delay = function()
  return math.floor(-math.log(1 - math.random()) * {period_ms})
end
"""


@dataclass
class WrkResult:
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    errors: int
    non_2xx: int
    cpu_us_per_req: float | None = None
    foreign_cores: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v * 60000 if unit == "m" else v


def wrk(tmp: Path, t: Target, stream: bool, connections: int, seconds: float, timeout_s: int = 10,
        rate: float | None = None) -> WrkResult:
    """wrk -t1 -c<connections> on the load core; CPU per request of the target's processes
    read from /proc around the run. With `rate`, paced (WRK_PACE_LUA) to about that many
    requests/s in all; otherwise as fast as the target answers."""
    hdrs = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers_for(t, stream).items())
    script = tmp / f"wrk-{os.getpid()}-{time.monotonic_ns()}.lua"
    lua = WRK_LUA.format(headers=hdrs, model=t.model(stream), stream="true" if stream else "false")
    if rate is not None:
        lua += WRK_PACE_LUA.format(period_ms=max(1, round(connections / rate * 1000)))
    script.write_text(lua)
    pids = t.pids()
    duration = max(1, round(seconds))
    with ForeignLoad() as foreign:
        cpu0 = cpu_s(pids)
        out = subprocess.run(
            ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
             f"--timeout={timeout_s}s", "--latency", "-s", str(script), t.url(stream)],
            capture_output=True, text=True, timeout=duration + timeout_s + 60, preexec_fn=_raise_nofile)
        cpu1 = cpu_s(pids)
    text = out.stdout
    if out.returncode != 0 or "Requests/sec" not in text:
        raise RuntimeError(f"wrk failed ({out.returncode}): {text}\n{out.stderr}")
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))  # type: ignore[union-attr]
    reqs = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M))
    errs = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errs = sum(int(x) for x in m.groups())
    m2 = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non2xx = int(m2.group(1)) if m2 else 0
    cpu = (cpu1 - cpu0) / reqs * 1e6 if pids and reqs else None
    return WrkResult(rps, reqs, _ms(lat.get("50", "nan")), _ms(lat.get("99", "nan")), errs, non2xx, cpu,
                     round(foreign.cores, 2))


# ---------------------------------------------------------------------------- misc

@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="relaygate-bench-"))
    try:
        yield d
    finally:
        stop_all()
        if not keep:
            shutil.rmtree(d, ignore_errors=True)


def machine() -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    # How fast this machine runs Python today, printed in every header: the same pass-through
    # ran 7,276 req/s on one 2-vCPU VM and 2,543 on another of the same kind (190-280 us here
    # on 2026-12-03), and every absolute figure moves with it.
    calib = min(timeit.repeat("sum(range(10000))", number=100, repeat=5)) / 100 * 1e6
    model = f"{model} (sum(range(10**4)) {calib:.0f} us)"
    return {"nproc": str(os.cpu_count()), "cpu": model, "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "commit": rev}


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or a != a or b != b:
        return "-"
    return f"{a / b:.2f}x"


def read_gc_probe(probe: Path, pid: int) -> dict[str, Any]:
    """What bench/gcprobe wrote for the gateway process `pid`: collections and their time
    per generation. (Other Python processes started with the same environment, such as the
    one that creates the virtual key, write their files beside it.)"""
    path = probe.parent / f"{probe.name}.{pid}"
    if not path.exists():
        raise RuntimeError(f"the gc probe wrote nothing for pid {pid}")
    return json.loads(path.read_text())  # type: ignore[no-any-return]
