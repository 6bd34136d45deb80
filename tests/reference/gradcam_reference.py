#!/usr/bin/env python3
"""Reference check of xcam's CAMs against pytorch-grad-cam, the anchor library.

  prepare DIR --bundle B --count N   draw N synthetic radiographs at the bundle's input size
  compare DIR --bundle B             for every <stem>.json xcam-worker wrote into DIR, compute
                                     pytorch-grad-cam's map for the same model, input, label
                                     and target layer, and compare the maps (Pearson r)

The model pytorch-grad-cam sees is the bundle itself (features.pt then head.pt), with the
target layer at the split, so both tools explain exactly the same function.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models" / "tools"))
import reference  # noqa: E402
import synth  # noqa: E402


class Wrap(nn.Module):
    """An eager module around a TorchScript one, so pytorch-grad-cam can hook its output."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)


class Split(nn.Module):
    def __init__(self, bundle: Path):
        super().__init__()
        self.features = Wrap(torch.jit.load(str(bundle / "features.pt")))
        self.head = Wrap(torch.jit.load(str(bundle / "head.pt")))

    def forward(self, x):
        return self.head(self.features(x))


def to_input(pixels: np.ndarray, manifest: dict) -> torch.Tensor:
    spec = manifest["input"]
    assert pixels.shape == (spec["height"], spec["width"]), "reference inputs are drawn at the model's size"
    x = torch.from_numpy(pixels)[None, None]
    if spec["channels"] == 3:
        x = x.repeat(1, 3, 1, 1)
    norm = spec["normalize"]
    if norm["kind"] == "range":
        return x * (norm["high"] - norm["low"]) + norm["low"]
    mean = torch.tensor(norm["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"]).view(1, -1, 1, 1)
    return (x - mean) / std


def prepare(out: Path, bundle: Path, count: int, seed: int) -> None:
    manifest = tomllib.loads((bundle / "model.toml").read_text())
    h, w = manifest["input"]["height"], manifest["input"]["width"]
    synth.write_set(out, seed=seed, count=count, sizes=((h, w),), kinds=("png16",))


def compare(out: Path, bundle: Path, minimum: float) -> int:
    from pytorch_grad_cam import (  # noqa: PLC0415
        EigenCAM,
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
        XGradCAM,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: PLC0415

    methods = {
        "gradcam": GradCAM,
        "gradcam++": GradCAMPlusPlus,
        "hirescam": HiResCAM,
        "xgradcam": XGradCAM,
        "layercam": LayerCAM,
        "eigencam": EigenCAM,
    }
    manifest = tomllib.loads((bundle / "model.toml").read_text())
    labels = manifest["model"]["labels"]
    model = Split(bundle).eval()
    worst, count = 1.0, 0
    for record_path in sorted(out.glob("*.json")):
        if record_path.name == "findings.json":
            continue
        record = json.loads(record_path.read_text())
        x = to_input(reference.gray(Path(record["image"])), manifest)
        for cam_info, files in zip(record["cams"], record["files"]):
            ours = np.load(out / files["cam"])
            with methods[cam_info["method"]](model=model, target_layers=[model.features]) as cam:
                ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(labels.index(cam_info["label"]))])[0]
            if ref.max() <= 0 and ours.max() <= 0:
                r = 1.0  # both blank: the label has no positive evidence anywhere
            else:
                r = float(np.corrcoef(ours.ravel(), ref.ravel())[0, 1])
            worst = min(worst, r)
            count += 1
            if r < minimum:
                print(f"MISMATCH {record_path.stem} {cam_info['label']} {cam_info['method']}: r = {r:.4f}")
    print(f"compared {count} maps; lowest Pearson r = {worst:.5f}")
    return 0 if count > 0 and worst >= minimum else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["prepare", "compare"])
    p.add_argument("dir", type=Path)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--min-r", type=float, default=0.99)
    a = p.parse_args()
    torch.set_num_threads(2)
    if a.mode == "prepare":
        prepare(a.dir, a.bundle, a.count, a.seed)
    else:
        sys.exit(compare(a.dir, a.bundle, a.min_r))


if __name__ == "__main__":
    main()
