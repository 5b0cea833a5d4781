"""Latency at a fixed rate, in rounds: one p99 from one 20 s window is a noisy figure
(4,000 requests at 200/s, so the 40th slowest), so this runs several rounds and interleaves
the targets within each round (upstream direct, the aiohttp pass-through, relaygate), so a
noisy minute on the machine hits all of them alike. Prints every round and, per target, the
median and the worst of the rounds.

Load: wrk paced to Poisson arrivals (bench/harness.py WRK_PACE_LUA), timed in C from send
to last byte. Pinning as in overhead.py: the target on core 1, wrk and nginx on core 0.

`--rate 0` is the closed loop instead (wrk -c32 as fast as the target answers): max req/s
and CPU per request in interleaved rounds, with relaygate's ratio to the pass-through per
round. On a VM whose speed drifts by a third from minute to minute, the median of those
ratios is the figure to trust, not one run of overhead.py.

    .venv/bin/python bench/tail.py [--rounds 5] [--rate 200] [--rate-seconds 20] [--rev HEAD]
        [--against HEAD~1]   # before/after: both relaygates in the same rounds
    .venv/bin/python bench/tail.py --rate 0 --rate-seconds 8 --no-direct   # throughput in rounds
    .venv/bin/python bench/tail.py --rate 0 --no-direct --peers portkey,litellm   # and the peers
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rate", type=float, action="append", help="requests/s (repeatable; default 200)")
    ap.add_argument("--rate-seconds", type=float, default=20)
    ap.add_argument("--modes", default="json,stream", help="json, stream or both (comma-separated)")
    ap.add_argument("--no-direct", action="store_true", help="skip the upstream-direct target")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    ap.add_argument("--keep-tmp", action="store_true")
    ap.add_argument("--rev", help="measure relaygate's src/ at this git revision instead of the work tree")
    ap.add_argument("--against", metavar="REV",
                    help="also measure relaygate at this revision, interleaved (a before/after comparison)")
    ap.add_argument("--peers", default="", help="also measure these peers, installed by bench/peers/setup.sh "
                    "(portkey, litellm; comma-separated): with --rate 0, relaygate's ratio to each per round")
    args = ap.parse_args()
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    have = h.peers_available()
    for peer in peers:
        if peer not in have:
            ap.error(f"--peers takes {', '.join(have)}, not {peer!r}")
        if not have[peer]:
            ap.error(f"{peer} is not installed: bash bench/peers/setup.sh")
    rates = args.rate or [200.0]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("json", "stream") for m in modes):
        ap.error("--modes takes json, stream or json,stream")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    h.pin_self()
    h.install_cleanup()
    measured = h.use_revision(args.rev)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    with h.workdir(args.keep_tmp) as tmp:
        up = h.start_nginx(tmp)
        targets = ([] if args.no_direct else [h.direct(up)]) + [h.start_passthrough(tmp, up),
                                                                 h.start_relaygate(tmp, up)]
        if args.against:
            targets.append(h.start_relaygate_at(tmp, up, args.against))
        targets += [h.start_portkey(tmp, up) if peer == "portkey" else h.start_litellm(tmp, up) for peer in peers]
        total = args.rounds * len(rates) * len(modes) * len(targets)
        done = 0
        for rnd in range(1, args.rounds + 1):
            for rate in rates:
                for mode in modes:
                    for t in targets:
                        done += 1
                        print(f"[{done}/{total}] round {rnd} {rate:.0f}/s {mode} {t.name}", file=sys.stderr,
                              flush=True)
                        if rate:
                            r = h.wrk(tmp, t, mode == "stream", h.PACED_CONNECTIONS, args.rate_seconds, rate=rate)
                        else:
                            r = h.wrk(tmp, t, mode == "stream", MAX_CONNECTIONS, args.rate_seconds)
                        rows.append({"round": rnd, "rate": rate, "mode": mode, "target": t.name, **r.as_dict()})
    doc = {"machine": h.machine(), "relaygate_source": measured, "against": args.against, "rate_seconds": args.rate_seconds,
           "rows": rows, "elapsed_s": round(time.monotonic() - started, 1)}
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    m = doc["machine"]
    print(f"# relaygate tail latency  {m['date']}  commit {m['commit']}  nproc {m['nproc']}  {m['cpu']}  "
          f"Python {m['python']}")
    print(f"relaygate {measured}; {args.rounds} rounds of {args.rate_seconds:.0f} s per target, mode and rate; "
          f"wrk paced (-c{h.PACED_CONNECTIONS}, Poisson arrivals); rate 0: wrk -c{MAX_CONNECTIONS} unpaced\n")
    names = list(dict.fromkeys(r["target"] for r in rows))
    if 0 in rates:
        throughput(rows, modes, names)
    if not [rate for rate in rates if rate]:
        return
    print("| rate | mode | target | p50 ms per round | p99 ms per round | p99 median | p99 worst | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for rate in rates:
        if not rate:
            continue
        for mode in modes:
            for name in names:
                rs = [r for r in rows if r["rate"] == rate and r["mode"] == mode and r["target"] == name]
                p50 = " ".join(f"{r['p50_ms']:.2f}" for r in rs)
                p99 = [r["p99_ms"] for r in rs]
                errs = sum(r["errors"] + r["non_2xx"] for r in rs)
                print(f"| {rate:.0f} | {mode} | {name} | {p50} | {' '.join(f'{v:.2f}' for v in p99)} | "
                      f"{statistics.median(p99):.2f} | {max(p99):.2f} | {errs} |")


def throughput(rows: list[dict[str, Any]], modes: list[str], names: list[str]) -> None:
    """The closed-loop rounds: req/s and CPU per request per round and their medians, and
    each relaygate's ratio to the pass-through within each round."""
    print("| mode | target | req/s per round | req/s median | CPU us/req per round | CPU median | errors |")
    print("|---|---|---|---|---|---|---|")
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if not r["rate"]:
            by.setdefault((r["mode"], r["target"]), []).append(r)
    for mode in modes:
        for name in names:
            rs = by.get((mode, name), [])
            if not rs:
                continue
            rps = [r["rps"] for r in rs]
            cpu = [r["cpu_us_per_req"] for r in rs if r["cpu_us_per_req"] is not None]
            cpu_median = f"{statistics.median(cpu):.0f}" if cpu else "-"
            print(f"| {mode} | {name} | {' '.join(f'{x:,.0f}' for x in rps)} | {statistics.median(rps):,.0f} | "
                  f"{' '.join(f'{c:.0f}' for c in cpu) or '-'} | {cpu_median} | "
                  f"{sum(r['errors'] + r['non_2xx'] for r in rs)} |")
    print()
    base = "aiohttp pass-through"
    for mode in modes:
        ref = by.get((mode, base), [])
        for name in names:
            if not name.startswith("relaygate") or not ref:
                continue
            mine = by.get((mode, name), [])
            pairs = list(zip(mine, ref, strict=True))  # one row of each per round
            rps = [a["rps"] / b["rps"] for a, b in pairs]
            cpu = [b["cpu_us_per_req"] / a["cpu_us_per_req"] for a, b in pairs
                   if a["cpu_us_per_req"] and b["cpu_us_per_req"]]
            print(f"{mode}: {name} / pass-through req/s per round {' '.join(f'{x:.2f}' for x in rps)}x, "
                  f"median {statistics.median(rps):.2f}x; by CPU per request (pass-through's / relaygate's) "
                  f"{' '.join(f'{x:.2f}' for x in cpu)}x, median {statistics.median(cpu) if cpu else float('nan'):.2f}x")
    for mode in modes:
        mine = by.get((mode, "relaygate"), [])
        for name in names:
            if name.startswith(("relaygate", "direct")) or name == base or not mine:
                continue
            pairs = list(zip(mine, by.get((mode, name), []), strict=True))
            rps = [a["rps"] / b["rps"] for a, b in pairs]
            print(f"{mode}: relaygate / {name} req/s per round {' '.join(f'{x:.1f}' for x in rps)}x, "
                  f"median {statistics.median(rps):.1f}x")
    print()


MAX_CONNECTIONS = 32  # the closed loop of overhead.py and compare.py

if __name__ == "__main__":
    main()
