"""What relaygate adds on top of its upstream: one run measures the upstream directly, a
minimal aiohttp pass-through (bench/passthrough.py, the plain-Python floor) and relaygate,
non-streaming and streaming, and prints the ratios.

Figures per target and mode:
  max req/s      wrk -t1 -c32 (closed loop, every request a different prompt)
  CPU us/req     CPU time of the target's processes (/proc) / requests in that wrk run
  p50/p99 @rate  wrk paced to about the rate (default 200 req/s): 40 connections, each
                 pausing a random (exponential) time after every answer, so requests arrive
                 as a Poisson stream; latency timed by wrk in C, from send to last byte
  added p50      p50 @rate of the target minus p50 @rate of the upstream direct
  open-loop      the same rate from bench/loadgen.py (Python, one request every 1/rate s
                 whatever the answers, timed from its scheduled send): immune to
                 coordinated omission, but its own jitter (about 1.5 ms at p99 against
                 nginx here) is in every figure

Pinning: the target on core 1 (taskset), wrk / nginx / this script on core 0.

    .venv/bin/python bench/overhead.py [--quick] [--json] [--upstream nginx|mock]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402
from loadgen import fixed_rate  # noqa: E402


def measure(tmp: Path, t: h.Target, stream: bool, args: argparse.Namespace) -> dict[str, Any]:
    """wrk max throughput, then the fixed-rate latency, for one target and mode."""
    h.wrk(tmp, t, stream, args.connections, args.warmup_seconds)  # warm-up, discarded
    w = h.wrk(tmp, t, stream, args.connections, args.wrk_seconds)
    p = h.wrk(tmp, t, stream, h.PACED_CONNECTIONS, args.rate_seconds, rate=args.rate)
    r = asyncio.run(fixed_rate(t.url(stream), h.headers_for(t, stream), t.model(stream), stream, args.rate,
                               args.rate_seconds))
    return {"target": t.name, "stream": stream, "wrk": w.as_dict(), "paced": p.as_dict(), "open_loop": r.as_dict()}


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test, noisy figures)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    ap.add_argument("--upstream", choices=["nginx", "mock"], default="nginx",
                    help="nginx (fixed answers, fastest) or `relaygate mock-upstream`")
    ap.add_argument("--connections", type=int, default=32, help="wrk -c")
    ap.add_argument("--wrk-seconds", type=float, default=10)
    ap.add_argument("--warmup-seconds", type=float, default=3)
    ap.add_argument("--rate", type=float, default=200, help="fixed rate, requests/s")
    ap.add_argument("--rate-seconds", type=float, default=20)
    ap.add_argument("--keep-tmp", action="store_true", help="keep configs and logs in the temp dir")
    ap.add_argument("--rev", default=None, help="measure relaygate's src/ at this git revision (e.g. HEAD) "
                    "instead of the work tree, which others may be editing")


def apply_quick(args: argparse.Namespace) -> None:
    if args.quick:
        args.wrk_seconds, args.warmup_seconds, args.rate_seconds = 3, 1, 5


def start_upstream(tmp: Path, kind: str) -> h.Upstream:
    return h.start_nginx(tmp) if kind == "nginx" else h.start_mock_upstream(tmp)


def fmt(v: float | None, digits: int = 2) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:,.{digits}f}" if digits else f"{v:,.0f}"


def table(rows: list[dict[str, Any]], direct_name: str) -> str:
    head = ("| target | mode | max req/s | vs direct | wrk p50 ms | wrk p99 ms | CPU us/req | "
            "@rate req/s | p50 ms @rate | p99 ms @rate | added p50 ms | open-loop p50 / p99 ms | errors | "
            "other load (cores) |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    base: dict[bool, dict[str, Any]] = {r["stream"]: r for r in rows if r["target"] == direct_name}
    for r in rows:
        b = base.get(r["stream"])
        w, p, q = r["wrk"], r["paced"], r["open_loop"]
        added = p["p50_ms"] - b["paced"]["p50_ms"] if b and r is not b else None
        errs = w["errors"] + w["non_2xx"] + p["errors"] + p["non_2xx"] + q["errors"]
        lines.append(
            f"| {r['target']} | {'stream' if r['stream'] else 'json'} | {fmt(w['rps'], 0)} | "
            f"{h.ratio(w['rps'], b['wrk']['rps']) if b else '-'} | {fmt(w['p50_ms'])} | {fmt(w['p99_ms'])} | "
            f"{fmt(w['cpu_us_per_req'], 0)} | {fmt(p['rps'], 0)} | {fmt(p['p50_ms'])} | {fmt(p['p99_ms'])} | "
            f"{fmt(added) if added is not None else '-'} | {fmt(q['p50_ms'])} / {fmt(q['p99_ms'])} | {errs} | "
            f"{max(w['foreign_cores'], p['foreign_cores'], q['foreign_cores']):.2f} |")
    return "\n".join(lines)


def ratios(rows: list[dict[str, Any]], gw: str, ref: str, direct_name: str) -> list[str]:
    out = []
    for stream in (False, True):
        by = {r["target"]: r for r in rows if r["stream"] == stream}
        if gw not in by or ref not in by or direct_name not in by:
            continue
        g, p, d = by[gw], by[ref], by[direct_name]
        mode = "stream" if stream else "json"
        out.append(
            f"{mode}: relaygate/direct max req/s {h.ratio(g['wrk']['rps'], d['wrk']['rps'])}, "
            f"pass-through/direct {h.ratio(p['wrk']['rps'], d['wrk']['rps'])}, "
            f"relaygate/pass-through {h.ratio(g['wrk']['rps'], p['wrk']['rps'])}; "
            f"p50 @{d['paced']['rps']:.0f}/s added: relaygate {g['paced']['p50_ms'] - d['paced']['p50_ms']:+.2f} ms, "
            f"pass-through {p['paced']['p50_ms'] - d['paced']['p50_ms']:+.2f} ms "
            f"({h.ratio(g['paced']['p50_ms'] - d['paced']['p50_ms'], p['paced']['p50_ms'] - d['paced']['p50_ms'])}); "
            f"p99 relaygate {g['paced']['p99_ms']:.2f} ms; "
            f"CPU/req relaygate/pass-through "
            f"{h.ratio(g['wrk']['cpu_us_per_req'], p['wrk']['cpu_us_per_req'])}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(ap)
    args = ap.parse_args()
    apply_quick(args)
    h.pin_self()
    h.install_cleanup()
    measured = h.use_revision(args.rev)
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    with h.workdir(args.keep_tmp) as tmp:
        up = start_upstream(tmp, args.upstream)
        targets = [h.direct(up), h.start_passthrough(tmp, up), h.start_relaygate(tmp, up)]
        for stream in (False, True):
            for t in targets:
                print(f"... {t.name} {'stream' if stream else 'json'}", file=sys.stderr, flush=True)
                rows.append(measure(tmp, t, stream, args))
        auth = targets[2].auth_note
        if args.keep_tmp:
            print(f"logs and configs kept in {tmp}", file=sys.stderr)
    doc = {"machine": h.machine(), "upstream": args.upstream, "connections": args.connections,
           "wrk_seconds": args.wrk_seconds, "rate": args.rate, "rate_seconds": args.rate_seconds,
           "relaygate_auth": auth, "relaygate_source": measured, "rows": rows,
           "elapsed_s": round(time.monotonic() - started, 1)}
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    m = doc["machine"]
    print(f"# relaygate overhead  {m['date']}  commit {m['commit']}  nproc {m['nproc']}  {m['cpu']}  "
          f"Python {m['python']}")
    print(f"upstream {args.upstream}; wrk -t1 -c{args.connections} {args.wrk_seconds:.0f}s; at a rate of "
          f"{args.rate:.0f} req/s for {args.rate_seconds:.0f}s: wrk paced (-c{h.PACED_CONNECTIONS}, Poisson "
          f"arrivals), then the open-loop Python client; relaygate {measured}, auth: {auth}\n")
    print(table(rows, targets[0].name))
    print()
    for line in ratios(rows, "relaygate", "aiohttp pass-through", targets[0].name):
        print(line)


if __name__ == "__main__":
    main()
