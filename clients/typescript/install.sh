#!/usr/bin/env bash
# Installs the TypeScript client's dependencies exactly as package-lock.json pins them.
# Idempotent: `npm ci` replaces node_modules/ with the locked tree every time.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v npm >/dev/null 2>&1; then
  echo "install.sh: npm is not installed (Node.js 20 or later ships it: https://nodejs.org)" >&2
  exit 1
fi
if ! command -v node >/dev/null 2>&1; then
  echo "install.sh: node is not installed (Node.js 20 or later: https://nodejs.org)" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "install.sh: Node.js $(node --version) is too old: 20 or later is needed" >&2
  exit 1
fi

npm ci --no-audit --no-fund
