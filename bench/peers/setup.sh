#!/usr/bin/env bash
# Installs the peers bench/compare.py measures relaygate against, into bench/peers/
# (gitignored: venv/ and node_modules/). Each peer is tried on its own: one that fails
# to install is reported and the script carries on. Versions per shared/PEERS.md.
#   LiteLLM proxy 1.109.1  -> bench/peers/venv/bin/litellm
#   Portkey gateway 1.15.2 -> bench/peers/node_modules/@portkey-ai/gateway
# Usage: bash bench/peers/setup.sh [litellm] [portkey]   (default: both)
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LITELLM_VERSION=1.109.1
PORTKEY_VERSION=1.15.2
HONO_NODE_SERVER=1.13.5   # newer versions break Portkey's streaming ("TypeError: immutable")
PY=${PY:-python3}
WANT=("$@")
[ ${#WANT[@]} -eq 0 ] && WANT=(litellm portkey)
status=()

install_litellm() {
  local venv="$HERE/venv"
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv" || return 1
  "$venv/bin/pip" install -q --upgrade pip packaging || return 1
  # 1.109.1 pins certifi>=2026.10.19 and litellm-proxy-extras==0.4.113, which the index
  # here lacks: install the package alone, then its declared [proxy] dependencies with
  # those two relaxed to the newest available.
  "$venv/bin/pip" install -q --no-deps "litellm==$LITELLM_VERSION" || return 1
  local reqs
  reqs="$("$venv/bin/python" - <<'PY'
from importlib.metadata import requires
from packaging.requirements import Requirement
RELAX = {"certifi", "litellm-proxy-extras"}
out = []
for line in requires("litellm") or []:
    r = Requirement(line)
    if r.marker is not None and not any(r.marker.evaluate({"extra": e}) for e in ("", "proxy")):
        continue
    if r.name.lower() in RELAX:
        out.append(r.name)
        continue
    r.marker = None
    out.append(str(r))
print("\n".join(out))
PY
)" || return 1
  echo "litellm: installing $(echo "$reqs" | wc -l) declared dependencies (certifi, litellm-proxy-extras relaxed)"
  # shellcheck disable=SC2086
  echo "$reqs" | xargs -d '\n' "$venv/bin/pip" install -q || return 1
  "$venv/bin/litellm" --version >/dev/null 2>&1 || "$venv/bin/python" -c "import litellm.proxy.proxy_server" || return 1
}

install_portkey() {
  command -v npm >/dev/null || { echo "portkey: npm not found"; return 1; }
  cd "$HERE" || return 1
  cat > package.json <<JSON
{
  "private": true,
  "description": "Peers measured by bench/compare.py (installed by bench/peers/setup.sh)",
  "dependencies": {"@portkey-ai/gateway": "$PORTKEY_VERSION"},
  "overrides": {"@hono/node-server": "$HONO_NODE_SERVER"}
}
JSON
  npm install --no-audit --no-fund --no-package-lock --loglevel=error || return 1
  test -f node_modules/@portkey-ai/gateway/build/start-server.js || return 1
  local got
  got="$(node -p 'require("./node_modules/@hono/node-server/package.json").version')"
  [ "$got" = "$HONO_NODE_SERVER" ] || { echo "portkey: @hono/node-server is $got, wanted $HONO_NODE_SERVER"; return 1; }
}

for peer in "${WANT[@]}"; do
  echo "== $peer"
  start=$(date +%s)
  if "install_$peer"; then
    status+=("$peer: installed ($(( $(date +%s) - start ))s)")
  else
    status+=("$peer: FAILED to install (see output above); compare.py will skip it")
  fi
done
echo "== summary"
printf '%s\n' "${status[@]}"
exit 0
