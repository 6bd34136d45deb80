#!/usr/bin/env bash
# Installs libtorch (from the PyPI torch wheel, ~2.6 GB the first time) plus the Python tools the
# model scripts and tests use (torchvision, pytorch-grad-cam, pydicom and its radiograph test
# data), into a per-user venv keyed by version. Idempotent: a second run downloads nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/torch-env.sh"
. "$here/venv.sh"
ensure_venv "$TORCH_VENV" "torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION grad-cam==$GRADCAM_VERSION numpy pillow pydicom==3.0.2 pydicom-data==1.0.0"
