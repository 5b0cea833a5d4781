"""relaygate beside the upstream direct (the limit), the aiohttp pass-through (the Python
floor) and the peers installed by bench/peers/setup.sh (LiteLLM proxy, Portkey gateway),
one target at a time on the same core, every figure also given as a ratio to the upstream
direct measured in the same run.

Phases, each with a freshly started target:
  A  nginx upstream (fixed answers): max req/s with wrk -t1 -c32, json and stream; p50/p99
     latency at about --rate req/s (wrk paced to Poisson arrivals, as in bench/overhead.py);
     then a soak at --soak-rate for --soak-seconds (the open-loop Python client of
     bench/loadgen.py) with the target's RSS (process tree, /proc) at start, end and max
  B  slow upstream (nginx with the echo module's `echo_sleep`, else bench/slow_upstream.py;
     answers after --slow-ms): wrk -c<--concurrency>,
     throughput (ideal = concurrency / delay), p99 and errors. A closed-loop window counts
     no request still in flight at its end: each connection loses about one delay's worth,
     so the window (--slow-seconds, 30) bounds what even a perfect target can show at
     1 - delay / window (98.3 %; the former 15 s window capped it at 96.7 %)
  C  trickling SSE upstream (one chunk every 2 s): --streams streams open at once; the
     target's idle and peak RSS

relaygate runs with its default pipeline: auth (a virtual key when `relaygate keys`
exists, else the master key), limits, the exact cache enabled (every prompt differs, so
it misses), routing, the usage ledger, metrics. `--workers 1,2` adds `serve --workers 2`
(both cores, sharing them with the load generator: only 1 vs 2 can be shown here).

    .venv/bin/python bench/compare.py [--quick] [--json] [--soak-seconds 600] [--only relaygate,litellm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402
from loadgen import fixed_rate, hold_streams  # noqa: E402
from overhead import fmt  # noqa: E402

Factory = Callable[[Path, h.Upstream], h.Target]


def factories(args: argparse.Namespace) -> list[tuple[str, Factory | None]]:
    out: list[tuple[str, Factory | None]] = [
        ("direct", lambda tmp, up: h.direct(up)),
        ("passthrough", h.start_passthrough),
    ]
    for n in args.workers:
        core = h.GATEWAY_CORE if n == 1 else f"{h.LOAD_CORE},{h.GATEWAY_CORE}"
        out.append((f"relaygate-w{n}" if n > 1 else "relaygate",
                    lambda tmp, up, n=n, core=core: h.start_relaygate(tmp, up, workers=n, core=core)))
    have = h.peers_available()
    out.append(("litellm", h.start_litellm if have["litellm"] else None))
    out.append(("portkey", h.start_portkey if have["portkey"] else None))
    if args.only:
        out = [(k, f) for k, f in out if k in args.only or k == "direct"]
    return out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def phase_a(tmp: Path, t: h.Target, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stream in (False, True):
        mode = "stream" if stream else "json"
        h.wrk(tmp, t, stream, 32, args.warmup_seconds)
        out[f"max_{mode}"] = h.wrk(tmp, t, stream, 32, args.wrk_seconds).as_dict()
        out[f"rate_{mode}"] = h.wrk(tmp, t, stream, h.PACED_CONNECTIONS, args.rate_seconds, rate=args.rate).as_dict()
    if args.soak_seconds > 0 and t.proc is not None:
        samples: list[int] = []

        def tick() -> None:
            samples.append(h.rss_kb(t.pids()))

        tick()
        soak = asyncio.run(fixed_rate(t.url(False), t.headers, t.model(False), False, args.soak_rate,
                                      args.soak_seconds, on_tick=tick))
        tick()
        out["soak"] = {"seconds": args.soak_seconds, "rate": args.soak_rate, "ok": soak.ok, "errors": soak.errors,
                       "p99_ms": soak.p99_ms, "rss_start_mb": round(samples[0] / 1024, 1),
                       "rss_end_mb": round(samples[-1] / 1024, 1), "rss_max_mb": round(max(samples) / 1024, 1)}
    return out


def phase_b(tmp: Path, t: h.Target, args: argparse.Namespace) -> dict[str, Any]:
    r = h.wrk(tmp, t, False, args.concurrency, args.slow_seconds, timeout_s=10)
    d = r.as_dict()
    d["ideal_rps"] = args.concurrency / (args.slow_ms / 1000)
    return {"slow": d}


def phase_c(t: h.Target, args: argparse.Namespace) -> dict[str, Any]:
    if t.proc is None:
        return {}
    r = asyncio.run(hold_streams(t.url(True), h.headers_for(t, True), t.model(True), args.streams, t.pids,
                                 hold_s=3, open_timeout_s=45, total_timeout_s=120))
    return {"streams": r.as_dict()}


def run_target(key: str, factory: Factory, args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"key": key}
    with h.workdir(args.keep_tmp) as tmp:
        up = h.start_nginx(tmp)
        t = factory(tmp, up)
        res["name"], res["auth"] = t.name, t.auth_note
        res["rss_start_mb"] = round(h.rss_kb(t.pids()) / 1024, 1) if t.proc else None
        log(f"{t.name}: phase A (nginx)")
        res.update(phase_a(tmp, t, args))
        h.stop_all()
        slow = h.start_slow_nginx(tmp, args.slow_ms) or h.start_slow_upstream(tmp, args.slow_ms)
        res["slow_upstream"] = slow.name
        t = factory(tmp, slow)
        log(f"{t.name}: phase B ({args.concurrency} connections, {args.slow_ms} ms upstream)")
        res.update(phase_b(tmp, t, args))
        h.stop_all()
        if key != "direct":
            trickle = h.start_slow_upstream(tmp, 0, chunk_ms=2000, chunks=15, name="trickle")
            t = factory(tmp, trickle)
            log(f"{t.name}: phase C ({args.streams} open streams)")
            res.update(phase_c(t, args))
        if args.keep_tmp:
            log(f"kept {tmp}")
    return res


def _r(a: float | None, b: float | None) -> str:
    return h.ratio(a, b)


def tables(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    d = next((r for r in results if r["key"] == "direct"), None)
    out = []
    head = ("| target | max req/s json | x direct | max streams/s | x direct | CPU us/req json | "
            f"p50 ms @{args.rate:.0f}/s | p99 ms @{args.rate:.0f}/s | p50 added ms | p99 x direct | "
            "stream p50 ms | stream p99 ms | errors | other load (cores) |")
    out += [head, "|---" * (head.count("|") - 1) + "|"]
    for r in results:
        if "max_json" not in r:
            out.append(f"| {r.get('name', r['key'])} | {r.get('error', 'not run')} |" + " |" * 12)
            continue
        mj, ms, rj, rs = r["max_json"], r["max_stream"], r["rate_json"], r["rate_stream"]
        errs = sum(x["errors"] + x.get("non_2xx", 0) for x in (mj, ms, rj, rs))
        out.append(
            f"| {r['name']} | {fmt(mj['rps'], 0)} | {_r(mj['rps'], d and d['max_json']['rps'])} | "
            f"{fmt(ms['rps'], 0)} | {_r(ms['rps'], d and d['max_stream']['rps'])} | "
            f"{fmt(mj['cpu_us_per_req'], 0)} | {fmt(rj['p50_ms'])} | {fmt(rj['p99_ms'])} | "
            f"{fmt(rj['p50_ms'] - d['rate_json']['p50_ms']) if d and r is not d else '-'} | "
            f"{_r(rj['p99_ms'], d and d['rate_json']['p99_ms'])} | {fmt(rs['p50_ms'])} | {fmt(rs['p99_ms'])} | "
            f"{errs} | {max(x['foreign_cores'] for x in (mj, ms, rj, rs)):.2f} |")
    out.append("")
    slow = next((r["slow_upstream"] for r in results if "slow_upstream" in r), "slow upstream")
    head = (f"| target | {args.concurrency} conns to a {args.slow_ms} ms upstream ({slow}): req/s | x direct | p99 ms | "
            f"errors (socket/non-2xx) | {args.streams} open streams: opened | stream errors | RSS idle MB | "
            f"RSS peak MB | soak RSS start -> end (max) MB | soak errors |")
    out += [head, "|---" * (head.count("|") - 1) + "|"]
    for r in results:
        if "slow" not in r:
            continue
        s, st, so = r["slow"], r.get("streams"), r.get("soak")
        out.append(
            f"| {r['name']} | {fmt(s['rps'], 0)} (ideal {s['ideal_rps']:.0f}) | "
            f"{_r(s['rps'], d and d['slow']['rps'])} | {fmt(s['p99_ms'], 0)} | {s['errors']}/{s['non_2xx']} | "
            f"{st['opened'] if st else '-'} | {st['errors'] if st else '-'} | "
            f"{st['rss_idle_mb'] if st else '-'} | {st['rss_peak_mb'] if st else '-'} | "
            + (f"{so['rss_start_mb']} -> {so['rss_end_mb']} ({so['rss_max_mb']}) | {so['errors']} |" if so
               else "- | - |"))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs, 200 streams/conns, 20 s soak")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", type=lambda s: s.split(","), default=None,
                    help="targets: passthrough,relaygate,relaygate-w2,litellm,portkey (direct always runs)")
    ap.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
                    help="relaygate worker counts to measure (default 1,2)")
    ap.add_argument("--wrk-seconds", type=float, default=10)
    ap.add_argument("--warmup-seconds", type=float, default=10,
                    help="wrk warm-up before each max req/s run (LiteLLM speeds up for ~20 s)")
    ap.add_argument("--rate", type=float, default=50, help="fixed rate for latency (req/s); LiteLLM saturates "
                    "far below overhead.py's 200")
    ap.add_argument("--rate-seconds", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=1000)
    ap.add_argument("--slow-ms", type=int, default=500)
    ap.add_argument("--slow-seconds", type=float, default=30,
                    help="wrk window for the slow upstream: requests in flight at its end are not counted")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--soak-seconds", type=float, default=600)
    ap.add_argument("--soak-rate", type=float, default=50)
    ap.add_argument("--keep-tmp", action="store_true")
    ap.add_argument("--rev", default=None, help="measure relaygate's src/ at this git revision (e.g. HEAD) "
                    "instead of the work tree, which others may be editing")
    args = ap.parse_args()
    if args.quick:
        args.wrk_seconds, args.warmup_seconds, args.rate_seconds, args.slow_seconds = 3, 2, 5, 5
        args.concurrency, args.streams = 200, 200
        args.soak_seconds = min(args.soak_seconds, 20)
    h.pin_self()
    h.install_cleanup()
    measured = h.use_revision(args.rev)
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    for key, factory in factories(args):
        if factory is None:
            skipped.append(f"{key}: not installed (run bash bench/peers/setup.sh)")
            continue
        try:
            results.append(run_target(key, factory, args))
        except Exception as exc:  # a peer that fails to start is reported, the run goes on
            log(f"{key} failed: {exc}")
            results.append({"key": key, "name": key, "error": f"failed: {str(exc).splitlines()[0][:200]}"})
    doc = {"machine": h.machine(), "relaygate_source": measured, "args": vars(args), "results": results,
           "skipped": skipped, "elapsed_s": round(time.monotonic() - started, 1)}
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    m = doc["machine"]
    print(f"# relaygate vs peers  {m['date']}  commit {m['commit']}  nproc {m['nproc']}  {m['cpu']}  "
          f"Python {m['python']}")
    print(f"wrk -t1 -c32 {args.wrk_seconds:.0f}s; wrk paced to {args.rate:.0f} req/s (-c{h.PACED_CONNECTIONS}, "
          f"Poisson arrivals) for {args.rate_seconds:.0f}s; "
          f"soak {args.soak_seconds:.0f}s at {args.soak_rate:.0f} req/s; elapsed {doc['elapsed_s']:.0f}s; "
          f"relaygate {measured}")
    for r in results:
        if r.get("auth"):
            print(f"{r['name']} auth: {r['auth']}")
    for s in skipped:
        print(f"skipped {s}")
    print()
    print(tables(results, args))


if __name__ == "__main__":
    main()
