#!/usr/bin/env bash
# Debian's Chromium for the dashboard's browser test, and playwright-core (npm, from the
# committed lock file) to drive it. Idempotent; no browser build is downloaded by a test tool.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
if [[ ! -x /usr/bin/chromium ]]; then
  echo "==> installing Debian's chromium for the browser test"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
fi
if [[ ! -d "$root/tests/browser/node_modules/playwright-core" ]]; then
  npm ci --prefix "$root/tests/browser" --no-audit --no-fund --ignore-scripts
fi
