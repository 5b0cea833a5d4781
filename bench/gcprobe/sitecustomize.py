"""Loaded into a relaygate process by bench/profile.py (first on PYTHONPATH, so Python
imports it at start-up): times every garbage collection per generation with
`gc.callbacks` and writes the totals to $RELAYGATE_GCPROBE_OUT every second. With
$RELAYGATE_GCPROBE_FREEZE=<seconds> it also calls gc.freeze() that long after start-up
(after the gateway is built), to measure what freezing the start-up heap saves."""

import gc
import json
import os
import threading
import time

_OUT = os.environ.get("RELAYGATE_GCPROBE_OUT")
_stats = {g: {"collections": 0, "total_s": 0.0, "max_s": 0.0} for g in (0, 1, 2)}
_started = [0.0]
_recent: list = []  # [monotonic end, seconds] of the last gen-2 collections


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    took = time.perf_counter() - _started[0]
    s = _stats[info["generation"]]
    s["collections"] += 1
    s["total_s"] += took
    s["max_s"] = max(s["max_s"], took)
    if info["generation"] == 2:
        _recent.append([time.monotonic(), took])
        del _recent[:-1000]


def _writer() -> None:
    freeze_after = float(os.environ.get("RELAYGATE_GCPROBE_FREEZE") or 0)
    t0 = time.monotonic()
    frozen = 0
    for _ in range(100_000):  # bounded: ~28 h
        time.sleep(1)
        if freeze_after and not frozen and time.monotonic() - t0 >= freeze_after:
            gc.collect()
            gc.freeze()
            frozen = gc.get_freeze_count()
        tmp = f"{_OUT}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"pid": os.getpid(), "frozen": frozen, "gens": _stats, "gen2_recent": _recent}, f)
        os.replace(tmp, f"{_OUT}.{os.getpid()}")


if _OUT:
    gc.callbacks.append(_on_gc)
    threading.Thread(target=_writer, name="gcprobe", daemon=True).start()
