#!/usr/bin/env bash
# schemathesis (PyPI) in a per-user venv keyed by version, for the API contract test in
# `make test`. Idempotent: a second run downloads nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/torch-env.sh"
. "$here/venv.sh"
ensure_venv "$SCHEMATHESIS_VENV" "schemathesis==$SCHEMATHESIS_VERSION"
