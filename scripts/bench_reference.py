#!/usr/bin/env python3
"""pytorch-grad-cam's throughput on an xcam bundle: the other column of `make bench`.

The model is the bundle itself (features.pt then head.pt, loaded with torch.jit) with the target
layer at the split, and the input is torch.manual_seed(0); torch.randn(batch, C, H, W): the same
weights and input shape as `xcam-worker bench`. Prints one JSON object.

On a GPU (--device cuda) in bf16 or fp16 the backbone and head run in that precision and the
activations the target layer hands pytorch-grad-cam, and the logits, are cast to fp32 (it reads
them through numpy, which has no bf16), as xcam computes its maps in fp32.
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


class Cast(torch.nn.Module):
    """To a precision between the halves: numpy's fp32 on the way out, the model's on the way in."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        return x.to(self.kind)


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
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    a = p.parse_args()
    from pytorch_grad_cam import GradCAM  # noqa: PLC0415

    spec = tomllib.loads((a.bundle / "model.toml").read_text())["input"]
    kind = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[a.precision]
    torch.manual_seed(0)
    x = torch.randn(a.batch, spec["channels"], spec["height"], spec["width"]).to(a.device, kind)
    model = Split(a.bundle).eval().to(a.device, kind)
    if kind != torch.float32:
        model.features.register_forward_hook(lambda _m, _i, out: out.float())
        head = model.head
        model.head = torch.nn.Sequential(Cast(kind), head, Cast(torch.float32))
    cuda = a.device.startswith("cuda")

    def synced(fn):
        def run():
            fn()
            if cuda:
                torch.cuda.synchronize()
        return run

    @synced
    def forward():
        with torch.no_grad():
            model(x)

    cam = GradCAM(model=model, target_layers=[model.features])

    @synced
    def gradcam():
        # targets=None: pytorch-grad-cam explains each image's top class from its own forward pass.
        cam(input_tensor=x, targets=None)

    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": a.device,
        "precision": a.precision,
        "forward_images_per_s": rate(forward, a.batch, a.seconds),
        "gradcam_images_per_s": rate(gradcam, a.batch, a.seconds),
    }))


if __name__ == "__main__":
    main()
