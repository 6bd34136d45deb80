#!/usr/bin/env bash
# Installs libtorch (from the PyPI torch wheel) plus the Python tools the model scripts and tests
# use (torchvision, pytorch-grad-cam, pydicom and its radiograph test data),
# into a per-user venv keyed by version. Idempotent: a second run downloads nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/torch-env.sh"

stamp="$TORCH_VENV/.xcam-ready"
want="torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION grad-cam==$GRADCAM_VERSION numpy pillow pydicom==3.0.2 pydicom-data==1.0.0"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

echo "==> installing libtorch $TORCH_VERSION into $TORCH_VENV (one time, ~2.6 GB download)"
mkdir -p "$XCAM_CACHE"
python3 -m venv "$TORCH_VENV"
"$TORCH_PYTHON" -m pip install --quiet --disable-pip-version-check --upgrade pip
# shellcheck disable=SC2086
"$TORCH_PYTHON" -m pip install --quiet --disable-pip-version-check $want
"$TORCH_PYTHON" -c 'import torch; print("==> torch", torch.__version__, "at", torch.__file__)'
echo "$want" > "$stamp"
