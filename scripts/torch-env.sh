# Sourced by the other scripts and the Makefile: where the libtorch venv lives.
# The venv sits outside the checkout, keyed by the torch version, so every clone on
# this machine (and CI) shares one 5 GB install.
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.28.0}"
GRADCAM_VERSION="${GRADCAM_VERSION:-1.5.7}"
XCAM_CACHE="${XCAM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xcam}"
TORCH_VENV="$XCAM_CACHE/torch-$TORCH_VERSION"
TORCH_PYTHON="$TORCH_VENV/bin/python"
# schemathesis, for the API contract test; its own venv beside torch's.
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
SCHEMATHESIS_VENV="$XCAM_CACHE/schemathesis-$SCHEMATHESIS_VERSION"
