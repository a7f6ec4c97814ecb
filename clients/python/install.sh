#!/usr/bin/env bash
# Sets up clients/python/.venv: the pinned, hash-checked requirements and the package
# (src/ on the venv's path through a .pth file). Safe to run again.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
here="$(pwd)"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "install.sh: $python not found (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "install.sh: creating .venv with $("$python" --version 2>&1)" >&2
  rm -rf .venv
  "$python" -m venv .venv
fi

echo "install.sh: installing requirements.txt (hash-checked)" >&2
.venv/bin/python -m pip install --disable-pip-version-check --no-input --quiet \
  --require-hashes --only-binary=:all: -r requirements.txt

# Put src/ on the venv's import path (no build backend or editable install needed).
site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n' "$here/src" > "$site/clerkmirror_client.pth"

.venv/bin/python -m pip check --disable-pip-version-check >&2
.venv/bin/python -c 'import clerkmirror_client, grpc, grpc_status, google.rpc.error_details_pb2' \
  || { echo "install.sh: clerkmirror_client does not import" >&2; exit 1; }
echo "install.sh: ready: $here/.venv" >&2
