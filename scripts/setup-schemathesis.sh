#!/usr/bin/env bash
# schemathesis (PyPI) in a per-user venv keyed by version, for the API contract test in
# `make test`. Idempotent: a second run downloads nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/torch-env.sh"

stamp="$SCHEMATHESIS_VENV/.xcam-ready"
want="schemathesis==$SCHEMATHESIS_VERSION"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "==> installing $want into $SCHEMATHESIS_VENV (one time)"
mkdir -p "$XCAM_CACHE"
python3 -m venv "$SCHEMATHESIS_VENV"
"$SCHEMATHESIS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$want"
"$SCHEMATHESIS_VENV/bin/schemathesis" --version
echo "$want" > "$stamp"
