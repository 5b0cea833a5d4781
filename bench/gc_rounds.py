"""Garbage collection under load, revisions side by side: relaygate at each revision in
turn within every round (so a slow minute on the machine hits them alike), under
wrk -t1 (32 connections unless told) as fast as it answers, with bench/gcprobe timing every collection through
`gc.callbacks`. Prints per round and revision: req/s, CPU per request, p99, and the
collections of each generation with the time they took.

    .venv/bin/python bench/gc_rounds.py --revs HEAD~1,HEAD [--rounds 4] [--seconds 30] [--stream]
        [--connections 1000 --slow-ms 500]   # many requests in flight: the upstream answers late

A collection walks every object the collector tracks in its generation, so what the
gateway keeps alive between requests (ledger records until their flush, cache entries,
alert windows) shows up here as collections and milliseconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--revs", required=True, help="comma-separated git revisions, e.g. HEAD~1,HEAD")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=30, help="measured window per revision and round")
    ap.add_argument("--stream", action="store_true", help="streamed requests instead of JSON ones")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections")
    ap.add_argument("--slow-ms", type=int, default=0,
                    help="an nginx upstream that answers after this long (echo_sleep) instead of at once")
    args = ap.parse_args()
    h.pin_self()
    h.install_cleanup()
    revs = [(rev, *h.export_revision(rev)) for rev in args.revs.split(",")]
    m = h.machine()
    print(f"# gc rounds {m['date']}  nproc {m['nproc']}  {m['cpu']}  Python {m['python']}; "
          f"wrk -t1 -c{args.connections} {'stream' if args.stream else 'json'} for {args.seconds} s per revision and round"
          + (f", upstream answers after {args.slow_ms} ms (ideal {args.connections * 1000 / args.slow_ms:,.0f} req/s)"
             if args.slow_ms else ""))
    with h.workdir() as tmp:
        up = h.start_slow_nginx(tmp, args.slow_ms) if args.slow_ms else h.start_nginx(tmp)
        if up is None:
            sys.exit("the nginx echo module is missing: make sysdeps")
        for n in range(1, args.rounds + 1):
            for rev, label, env in revs:
                probe = tmp / f"gc-{n}-{rev.replace('/', '_')}"
                path = ":".join(p for p in (str(h.BENCH / "gcprobe"), env.get("PYTHONPATH")) if p)
                with h.revision_env({**env, "PYTHONPATH": path, "RELAYGATE_GCPROBE_OUT": str(probe)}):
                    t = h.start_relaygate(tmp, up)
                assert t.proc is not None
                time.sleep(3)
                h.wrk(tmp, t, args.stream, args.connections, 3)  # warm-up
                time.sleep(1.2)  # the probe writes every second
                before = h.read_gc_probe(probe, t.proc.pid)
                w = h.wrk(tmp, t, args.stream, args.connections, args.seconds)
                time.sleep(1.2)
                after = h.read_gc_probe(probe, t.proc.pid)
                gens = []
                for g in "012":
                    a, b = after["gens"][g], before["gens"][g]
                    gens.append(f"gen {g}: {a['collections'] - b['collections']:3d} in "
                                f"{1000 * (a['total_s'] - b['total_s']):6.1f} ms")
                print(f"round {n}  {label:16s} {w.rps:7,.0f} req/s  {w.cpu_us_per_req or 0:4.0f} us/req  "
                      f"p99 {w.p99_ms:5.1f} ms  errors {w.errors + w.non_2xx}  other load {w.foreign_cores:.2f}  | " + " | ".join(gens), flush=True)
                h.stop(t.proc)


if __name__ == "__main__":
    main()
