"""CPU per streamed token: what nginx's one-read stream does not show. A model sends its
stream one event per write, so a gateway pays its per-read costs (upstream read, decode,
client write) once per token. bench/slow_upstream.py sends --chunks text events one every
--chunk-ms; wrk -c<--connections> streams through each target (the aiohttp pass-through,
relaygate, and with --against relaygate at another revision) in interleaved rounds, and
the CPU of the target's processes is divided by the streams and by their events.

The slow upstream is Python on the load core, so streams/s is its limit, not the
gateway's; the figure is the gateway's CPU per event.

    .venv/bin/python bench/tokens.py [--rounds 3] [--chunks 100] [--against HEAD~1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8, help="wrk window per target and round")
    ap.add_argument("--chunks", type=int, default=100, help="text events per stream")
    ap.add_argument("--chunk-ms", type=int, default=1)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rev", help="measure relaygate's src/ at this git revision instead of the work tree")
    ap.add_argument("--against", metavar="REV", help="also measure relaygate at this revision, interleaved")
    args = ap.parse_args()
    if args.rounds < 1 or args.chunks < 1:
        ap.error("--rounds and --chunks must be at least 1")
    h.pin_self()
    h.install_cleanup()
    measured = h.use_revision(args.rev)
    events = args.chunks + 4  # role, the text, finish, usage, [DONE]
    cpu: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    with h.workdir() as tmp:
        up = h.start_slow_upstream(tmp, 0, chunk_ms=args.chunk_ms, chunks=args.chunks, name="tokens")
        targets = [h.start_passthrough(tmp, up), h.start_relaygate(tmp, up)]
        if args.against:
            targets.append(h.start_relaygate_at(tmp, up, args.against))
        for t in targets:
            h.wrk(tmp, t, True, args.connections, 2)  # warm-up
        for rnd in range(1, args.rounds + 1):
            for t in targets:
                print(f"round {rnd}/{args.rounds} {t.name}", file=sys.stderr, flush=True)
                w = h.wrk(tmp, t, True, args.connections, args.seconds)
                if w.cpu_us_per_req is not None:
                    cpu.setdefault(t.name, []).append(w.cpu_us_per_req)
                errors[t.name] = errors.get(t.name, 0) + w.errors + w.non_2xx
    m = h.machine()
    print(f"# CPU per streamed token  {m['date']}  commit {m['commit']}  nproc {m['nproc']}  {m['cpu']}  "
          f"Python {m['python']}")
    print(f"relaygate {measured}; {events} events per stream, one every {args.chunk_ms} ms; wrk -c{args.connections}, "
          f"{args.rounds} rounds of {args.seconds:.0f} s\n")
    print("| target | CPU us/stream per round | median | CPU us per event | errors |")
    print("|---|---|---|---|---|")
    base = statistics.median(cpu["aiohttp pass-through"]) if cpu.get("aiohttp pass-through") else None
    for t in targets:
        vs = cpu.get(t.name, [])
        if not vs:
            continue
        med = statistics.median(vs)
        rel = f" ({med / base:.2f}x the pass-through)" if base and t.name != "aiohttp pass-through" else ""
        print(f"| {t.name} | {' '.join(f'{v:,.0f}' for v in vs)} | {med:,.0f} | {med / events:.1f}{rel} | "
              f"{errors.get(t.name, 0)} |")


if __name__ == "__main__":
    main()
