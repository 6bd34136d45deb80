#!/usr/bin/env python3
"""pytorch-grad-cam's throughput on an xcam bundle: the other column of `make bench`.

The model is the bundle itself (features.pt then head.pt, loaded with torch.jit) with the target
layer at the split, and the input is torch.manual_seed(0); torch.randn(batch, C, H, W): the same
weights and the same input as `xcam-worker bench`. Prints one JSON object.
"""

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reference"))
from gradcam_reference import Split  # noqa: E402


def rate(fn, batch: int, seconds: float) -> float:
    for _ in range(2):
        fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    from pytorch_grad_cam import GradCAM  # noqa: PLC0415

    spec = tomllib.loads((a.bundle / "model.toml").read_text())["input"]
    torch.manual_seed(0)
    x = torch.randn(a.batch, spec["channels"], spec["height"], spec["width"])
    model = Split(a.bundle).eval()

    def forward():
        with torch.no_grad():
            model(x)

    cam = GradCAM(model=model, target_layers=[model.features])

    def gradcam():
        # targets=None: pytorch-grad-cam explains each image's top class from its own forward pass.
        cam(input_tensor=x, targets=None)

    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "forward_images_per_s": rate(forward, a.batch, a.seconds),
        "gradcam_images_per_s": rate(gradcam, a.batch, a.seconds),
    }))


if __name__ == "__main__":
    main()
