"""Times the OpenAI stream pass-through decode (StreamPassthrough: SSE split, chunk parse,
usage/finish/text collected, the client's bytes taken) on the benchmark's stream
(`harness.sse_body()`: role, 20 text chunks, finish, usage, [DONE]), fed two ways: the
whole stream in one read (what nginx sends) and one event per read (what a model
generating tokens sends). Each revision runs in its own process, the revisions in
interleaved rounds; the figure is the best round's mean, in microseconds per stream.

    .venv/bin/python bench/decode.py                      # the work tree
    .venv/bin/python bench/decode.py --against HEAD~1     # and another revision, same rounds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

# Runs inside the measured revision's interpreter: prints {"one read": us, "per event": us}.
PROBE = r"""
import json, sys, timeit
sys.path.insert(0, sys.argv[1])
import harness as h
from relaygate.formats.openai import StreamPassthrough
body = h.sse_body()
events = [e + b"\n\n" for e in body.split(b"\n\n") if e]
assert b"".join(events) == body

def one_read():
    d = StreamPassthrough(True)
    d.feed(body)
    d.take()
    d.close()

def per_event():
    d = StreamPassthrough(True)
    for e in events:
        d.feed(e)
        d.take()
    d.close()

n = int(sys.argv[2])
out = {}
for name, fn in (("one read", one_read), ("per event", per_event)):
    fn()
    out[name] = min(timeit.repeat(fn, number=n, repeat=3)) / n * 1e6
print(json.dumps(out))
"""


def measure(env: dict[str, str], number: int) -> dict[str, float]:
    full = {**os.environ, **env}
    proc = subprocess.run(["taskset", "-c", h.GATEWAY_CORE, str(h.VENV_BIN / "python"), "-c", PROBE,
                           str(Path(__file__).resolve().parent),
                           str(number)], capture_output=True, text=True, env=full, cwd=h.REPO)
    if proc.returncode != 0:
        raise SystemExit(f"decode probe failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default=None, help="measure this git revision instead of the work tree")
    ap.add_argument("--against", metavar="REV", help="also measure this revision, in the same rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--number", type=int, default=5000, help="streams decoded per timing")
    args = ap.parse_args()

    targets = [h.export_revision(args.rev)]
    if args.against:
        targets.append(h.export_revision(args.against))
    best: dict[str, dict[str, float]] = {label: {} for label, _ in targets}
    for r in range(args.rounds):
        for label, env in targets:
            for name, us in measure(env, args.number).items():
                best[label][name] = min(us, best[label].get(name, us))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    m = h.machine()
    print(f"# OpenAI pass-through stream decode  {m['date']}  {m['cpu']}  Python {m['python']}")
    print(f"# {len(h.sse_body())} bytes, {h.STREAM_CHUNKS} text chunks; best of {args.rounds} rounds x 3 x "
          f"{args.number} streams")
    print("| revision | one read us/stream | one event per read us/stream |")
    print("|---|---|---|")
    for label, _ in targets:
        print(f"| {label} | {best[label]['one read']:.1f} | {best[label]['per event']:.1f} |")
    if len(targets) == 2:
        a, b = (best[label] for label, _ in targets)
        print(f"\nratio {targets[0][0]} / {targets[1][0]}: one read {a['one read'] / b['one read']:.2f}x, "
              f"per event {a['per event'] / b['per event']:.2f}x")


if __name__ == "__main__":
    main()
