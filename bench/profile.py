"""Profiles relaygate under load: the gateway (one worker, core 1) is sampled by py-spy
(`record --format raw --function --threads --nonblocking`, on core 0) while wrk -t1 -c32
loads it through the nginx upstream, once non-streaming and once streaming. Writes
bench/results/profile-<date>.txt: per phase the functions with the most samples on CPU,
self and inclusive, relaygate's own frames apart, and self time per package.

py-spy does not see the garbage collector, so a last phase starts relaygate with
bench/gcprobe/sitecustomize.py on PYTHONPATH (gc.callbacks timing every collection) and
loads it again, once as it is and once with gc.freeze() called after start-up.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile.py [--seconds 20] [--rate 250] [--out FILE]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def package(file: str) -> str:
    """`relaygate.pipeline`, `aiohttp`, `asyncio`, ... from a frame's file."""
    if "relaygate/" in file:
        parts = file.split("relaygate/", 1)[1].split("/")
        return "relaygate." + (parts[0].removesuffix(".py") if len(parts) > 1 else parts[0].removesuffix(".py"))
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1].split("/")[0].removesuffix(".py")
    m = re.search(r"python3\.\d+/([^/]+)", file)
    if m:
        return m.group(1).removesuffix(".py")
    return file.split("/", 1)[0].removesuffix(".py") if file else "?"


def short(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    f = m.group("file")
    for marker in ("site-packages/", "src/", "python3.11/"):
        if marker in f:
            f = f.split(marker, 1)[1]
    return f"{m.group('func')} ({f})"


def analyse(raw: Path, top: int) -> list[str]:
    stacks: list[tuple[list[str], int]] = []
    threads: collections.Counter[str] = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = "?"
        while frames and frames[0].startswith(("thread (", "process ")):
            if frames[0].startswith("thread ("):
                thread = frames[0]
            frames = frames[1:]
        threads[thread] += int(count)
        stacks.append((frames, int(count)))
    total = sum(c for _, c in stacks)
    if not total:
        return ["no samples (py-spy saw the process idle?)"]
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    own_self: collections.Counter[str] = collections.Counter()
    own_incl: collections.Counter[str] = collections.Counter()
    pkg: collections.Counter[str] = collections.Counter()
    for frames, c in stacks:
        if not frames:
            continue
        leaf = frames[-1]
        self_t[short(leaf)] += c
        m = FRAME.match(leaf)
        pkg[package(m.group("file") if m else leaf)] += c
        # the innermost relaygate frame owns the time spent below it in libraries
        own = [f for f in frames if "relaygate/" in f]
        if own:
            own_self[short(own[-1])] += c
        for f in {short(f) for f in frames}:
            incl[f] += c
        for f in {short(f) for f in own}:
            own_incl[f] += c

    def block(title: str, counter: collections.Counter[str], n: int) -> list[str]:
        out = [f"  {title}"]
        for name, c in counter.most_common(n):
            out.append(f"    {100 * c / total:5.1f}%  {name}")
        return out

    lines = [f"  {total} samples on CPU"]
    lines += block("by thread:", threads, 8)
    lines += block("self time by package (leaf frame's package):", pkg, 15)
    lines += block("self time, top functions (leaf frame):", self_t, top)
    lines += block("relaygate code, inclusive (samples with this frame on the stack):", own_incl, top)
    lines += block("relaygate code, 'owned' (innermost relaygate frame: its own work plus the library "
                   "calls it makes directly):", own_self, top)
    lines += block("all frames, inclusive:", incl, top)
    return lines


def thread_cpu(pid: int) -> dict[tuple[int, str], float]:
    """CPU seconds (user + system) of each thread of `pid`, by (tid, name), from /proc."""
    out: dict[tuple[int, str], float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[(int(tid), name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def thread_lines(before: dict[tuple[int, str], float], after: dict[tuple[int, str], float],
                 requests: int) -> list[str]:
    """Each thread's share of the process's CPU over the window, from /proc: the check on
    py-spy's 'by thread' (on 2026-12-03 py-spy gave aiosqlite's worker 10.9 % of the samples
    where /proc gave it 6.0 % of the CPU)."""
    used = {k: after[k] - before.get(k, 0.0) for k in after}
    total = sum(used.values())
    lines = ["  CPU by thread (/proc, not sampled):"]
    for (tid, name), sec in sorted(used.items(), key=lambda kv: -kv[1]):
        if sec > 0 and total > 0:
            lines.append(f"    {100 * sec / total:5.1f}%  {name} ({tid}): {sec * 1e6 / max(requests, 1):,.1f} us/req")
    return lines


def gc_phase(tmp: Path, seconds: int) -> list[str]:
    """Collections per generation under wrk -c32 (json), as is and with gc.freeze()."""
    lines = [f"## garbage collection under wrk -t1 -c32 json for {seconds} s (gc.callbacks, bench/gcprobe)"]
    up = h.start_nginx(tmp)
    for variant, freeze in (("as is", ""), ("gc.freeze() 3 s after start", "3")):
        probe = tmp / f"gc-{len(variant)}"
        path = ":".join(p for p in (str(h.BENCH / "gcprobe"), h._REV.get("PYTHONPATH")) if p)
        with h.revision_env({**h._REV, "PYTHONPATH": path, "RELAYGATE_GCPROBE_OUT": str(probe),
                             "RELAYGATE_GCPROBE_FREEZE": freeze}):
            t = h.start_relaygate(tmp, up)
        time.sleep(5)
        h.wrk(tmp, t, False, 32, 2)
        assert t.proc is not None
        before = h.read_gc_probe(probe, t.proc.pid)
        since = time.monotonic()
        w = h.wrk(tmp, t, False, 32, seconds)
        time.sleep(1.5)
        after = h.read_gc_probe(probe, t.proc.pid)
        lines.append(f"  {variant}: {w.rps:,.0f} req/s, p99 {w.p99_ms:.1f} ms, other load {w.foreign_cores:.2f} cores"
                     f", frozen objects {after.get('frozen', 0):,}")
        for g in ("0", "1", "2"):
            a, b = after["gens"][g], before["gens"][g]
            n = a["collections"] - b["collections"]
            total = a["total_s"] - b["total_s"]
            longest = (max((d for end, d in after["gen2_recent"] if end >= since), default=0.0) if g == "2"
                       else a["max_s"])
            lines.append(f"    gen {g}: {n:5d} collections, {1000 * total:8.1f} ms in total "
                         f"({100 * total / seconds:4.1f} % of the time), longest {1000 * longest:6.1f} ms"
                         + (" (since start)" if g != "2" else ""))
        h.stop(t.proc)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=20, help="sampling time per phase")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-gc", action="store_true", help="skip the garbage-collection phase")
    ap.add_argument("--gc-seconds", type=int, default=15)
    ap.add_argument("--rev", default=None, help="measure relaygate's src/ at this git revision (e.g. HEAD) "
                    "instead of the work tree, which others may be editing")
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(h.VENV_BIN / "py-spy")
    if not Path(spy).exists():
        sys.exit("py-spy not found: .venv/bin/pip install py-spy")
    out = args.out or h.BENCH / "results" / f"profile-{time.strftime('%Y-%m-%d')}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    h.pin_self()
    h.install_cleanup()
    measured = h.use_revision(args.rev)
    m = h.machine()
    report = [f"# relaygate profile {m['date']}  commit {m['commit']}  nproc {m['nproc']}  {m['cpu']}  "
              f"Python {m['python']}",
              f"# py-spy record --format raw --function --threads --nonblocking --rate {args.rate} "
              f"--duration {args.seconds} (core 0) while wrk -t1 -c32 loads the gateway (core 1); "
              "nginx upstream; every prompt differs (exact cache misses)"]
    with h.workdir() as tmp:
        up = h.start_nginx(tmp)
        t = h.start_relaygate(tmp, up)
        report.append(f"# relaygate {measured}, auth: {t.auth_note}; percentages are of samples on CPU (idle excluded)")
        assert t.proc is not None
        for stream in (False, True):
            mode = "stream" if stream else "json"
            h.wrk(tmp, t, stream, 32, 3)  # warm-up
            raw = tmp / f"profile-{mode}.txt"
            log = tmp / f"py-spy-{mode}.log"
            spy_proc = h.spawn([spy, "record", "--pid", str(t.proc.pid), "--format", "raw", "--function",
                                "--threads", "--nonblocking", "--rate", str(args.rate), "--duration",
                                str(args.seconds), "-o", str(raw)], h.LOAD_CORE, log)
            time.sleep(1)
            cpu0 = thread_cpu(t.proc.pid)
            w = h.wrk(tmp, t, stream, 32, args.seconds - 2)
            cpu1 = thread_cpu(t.proc.pid)
            try:
                spy_proc.wait(args.seconds + 30)
            except subprocess.TimeoutExpired:
                h.stop(spy_proc)
            if not raw.exists():
                sys.exit(f"py-spy wrote nothing:\n{h.tail(log)}")
            report.append("")
            report.append(f"## {mode}: {w.rps:,.0f} req/s under profiling, CPU {w.cpu_us_per_req or 0:,.0f} us/req, "
                          f"p99 {w.p99_ms:.1f} ms, errors {w.errors + w.non_2xx}, other load "
                          f"{w.foreign_cores:.2f} cores")
            report += thread_lines(cpu0, cpu1, w.requests)
            report += analyse(raw, args.top)
        if not args.no_gc:
            h.stop_all()
            report.append("")
            report += gc_phase(tmp, args.gc_seconds)
    out.write_text("\n".join(report) + "\n")
    print("\n".join(report))
    print(f"\nwritten to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
