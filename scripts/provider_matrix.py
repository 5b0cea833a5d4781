#!/usr/bin/env python3
"""Prints the providers x features fidelity table (markdown) from the results the
fidelity-matrix tests record in build/provider_matrix.json.

    .venv/bin/python scripts/provider_matrix.py          # runs the matrix tests first
    .venv/bin/python scripts/provider_matrix.py --no-run # only reads the last results
    .venv/bin/python scripts/provider_matrix.py --write  # and puts the tables into README.md

The README's copy is checked cell by cell by the last test of the matrix module, so a
README that disagrees with the tests fails `make test`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "build" / "provider_matrix.json"
README = ROOT / "README.md"
START, END = "<!-- provider-matrix:start -->", "<!-- provider-matrix:end -->"
TEST = "tests/providers/test_fidelity_matrix.py"
FORMAT_NAMES = {"openai": "OpenAI `/v1/chat/completions`", "anthropic": "Anthropic `/v1/messages`"}
FEATURE_NAMES = {
    "text": "text", "system": "system", "multi_turn": "multi-turn", "images": "images (base64)",
    "image_url": "image URLs", "tools": "tools (parallel + results)", "json_schema": "JSON schema",
    "stop_sequences": "stop sequences", "max_tokens": "max tokens", "sampling": "temperature / top_p",
    "stream_tools": "streaming + tool deltas", "usage_cache": "cached-token usage",
    "usage_reasoning": "reasoning usage", "stop_reasons": "stop reasons", "errors": "error mapping",
    "broken_streams": "cut / malformed streams",
}
SYMBOL = {"ok": "✓", "400": "400", "n/a": "n/a", "FAIL": "**FAIL**"}


def run_tests() -> int:
    env = {**os.environ, "RELAYGATE_MATRIX_OUT": str(RESULTS)}
    if RESULTS.exists():
        RESULTS.unlink()
    python = ROOT / ".venv" / "bin" / "python"
    cmd = [str(python if python.exists() else sys.executable), "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST]
    return subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, check=False).returncode


def table(data: dict[str, object], fmt: str) -> str:
    features: list[str] = list(data["features"])  # type: ignore[call-overload]
    providers: list[str] = list(data["providers"])  # type: ignore[call-overload]
    cells: dict[str, dict[str, str]] = data["cells"].get(fmt, {})  # type: ignore[attr-defined]
    lines = ["| provider | " + " | ".join(FEATURE_NAMES.get(f, f) for f in features) + " |",
             "|---" * (len(features) + 1) + "|"]
    for p in providers:
        row = cells.get(p, {})
        lines.append(f"| {p} | " + " | ".join(SYMBOL.get(row.get(f, ""), row.get(f) or "–") for f in features) + " |")
    return "\n".join(lines)


def render(data: dict[str, object]) -> str:
    parts = []
    for fmt in data["inbound"]:  # type: ignore[attr-defined]
        parts.append(f"### Inbound: {FORMAT_NAMES.get(fmt, fmt)}\n\n{table(data, fmt)}\n")
    parts.append("✓ tested on recorded wire bytes · 400 = the provider cannot do it; the client gets a clear 400 · "
                 "n/a = the inbound format has no such feature · **FAIL** = a failing test")
    return "\n".join(parts)


def readme_cells(text: str) -> dict[str, dict[str, dict[str, str]]]:
    """The README's tables back as {format: {provider: {feature: symbol}}}."""
    section = text.partition(START)[2].partition(END)[0]
    by_name = {v: k for k, v in FORMAT_NAMES.items()}
    feature_of = {v: k for k, v in FEATURE_NAMES.items()}
    out: dict[str, dict[str, dict[str, str]]] = {}
    fmt = ""
    features: list[str] = []
    for line in section.splitlines():
        if line.startswith("### Inbound: "):
            fmt = by_name.get(line.removeprefix("### Inbound: ").strip(), "")
        elif line.startswith("| provider |"):
            features = [feature_of.get(c.strip(), c.strip()) for c in line.strip("|").split("|")[1:]]
        elif line.startswith("| ") and fmt and features:
            cols = [c.strip() for c in line.strip("|").split("|")]
            out.setdefault(fmt, {})[cols[0]] = dict(zip(features, cols[1:], strict=False))
    return out


def main() -> int:
    code = 0
    if "--no-run" not in sys.argv:
        code = run_tests()
    if not RESULTS.exists():
        print(f"no results at {RESULTS}: run {TEST}", file=sys.stderr)
        return 1
    data = json.loads(RESULTS.read_text())
    text = render(data)
    print(text)
    if "--write" in sys.argv:
        readme = README.read_text()
        head, _, rest = readme.partition(START)
        _, _, tail = rest.partition(END)
        README.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
