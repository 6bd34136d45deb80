#!/usr/bin/env python3
"""Turn a PyTorch classifier into an xcam model bundle.

A bundle is a directory with model.toml and two TorchScript files split at the Grad-CAM target
layer: features.pt (image -> activations A) and head.pt (A -> logits). The worker runs the
backbone once without autograd and differentiates only the head with respect to A, which is what
makes Grad-CAM cost about as much as a plain forward pass.

Recipes (``--arch``):

  densenet121   torchvision DenseNet-121. Split at ``features.norm5`` (pytorch-grad-cam's
                ``features[-1]``); head = ReLU -> global average pool -> classifier.
  resnet50      torchvision ResNet-50. Split after ``layer4``; head = avgpool -> fc.
  xrv-densenet  torchxrayvision DenseNet-121 weights you already have on disk (``--weights
                FILE``, needs ``pip install torchxrayvision``). 1 channel, 224x224, inputs in
                [-1024, 1024]; the head returns logits (xcam applies the sigmoid), and the
                model's op_threshs become the per-label thresholds.

Examples:

  python models/tools/export.py --arch densenet121 --num-classes 18 --out target/bench-models/densenet121
  python models/tools/export.py --arch resnet50 --weights resnet50.pth --labels labels.txt --out models/resnet50
  python models/tools/export.py --arch xrv-densenet --weights densenet121-res224-all.pt --out models/xrv-all

The export verifies itself: the split model's logits must equal the original's on random input.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402

# The 18 labels torchxrayvision's "all" models output, in order.
XRV_LABELS = [
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema",
    "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass",
    "Hernia", "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum",
]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class GapLinearHead(nn.Module):
    """ReLU (optional) -> global average pool -> linear: the head of DenseNet and ResNet."""

    def __init__(self, classifier: nn.Linear, relu: bool):
        super().__init__()
        self.relu = relu
        self.classifier = classifier

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if self.relu:
            a = F.relu(a)  # not in place: A must stay what the backbone produced
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(a, 1), 1))


class Split(nn.Module):
    """features then head: the model the bundle claims to be, used as the reference."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_list(values) -> str:
    return "[" + ", ".join(toml_str(v) if isinstance(v, str) else repr(float(v)) for v in values) + "]"


def write_bundle(
    out: Path,
    features: nn.Module,
    head: nn.Module,
    *,
    name: str,
    version: str,
    labels: list[str],
    thresholds: list[float],
    height: int,
    width: int,
    channels: int,
    normalize: dict,
    resize: str,
    target_layer: str,
    provenance: str,
    licence: str,
    description: str = "",
    reference: nn.Module | None = None,
) -> Path:
    """Traces both halves, checks them against the reference model and writes the bundle."""
    out.mkdir(parents=True, exist_ok=True)
    features.eval()
    head.eval()
    example = torch.randn(2, channels, height, width)
    with torch.no_grad():
        activations = features(example)
        traced_features = torch.jit.trace(features, example, check_trace=False)
        traced_head = torch.jit.trace(head, activations, check_trace=False)
    traced_features.save(str(out / "features.pt"))
    traced_head.save(str(out / "head.pt"))

    # Verify what was written, loaded back as the worker will load it.
    reference = reference if reference is not None else Split(features, head)
    reference.eval()
    loaded_features = torch.jit.load(str(out / "features.pt"))
    loaded_head = torch.jit.load(str(out / "head.pt"))
    probe = torch.randn(3, channels, height, width)
    with torch.no_grad():
        expected = reference(probe)
        got = loaded_head(loaded_features(probe))
    if expected.shape != (3, len(labels)):
        sys.exit(f"export: the model has {expected.shape[-1]} outputs but {len(labels)} labels were given")
    err = (expected - got).abs().max().item()
    scale = expected.abs().max().item() + 1e-6
    if err > 1e-4 * max(1.0, scale):
        sys.exit(f"export: split model disagrees with the original (max |diff| {err:.3g})")

    if normalize["kind"] == "mean_std":
        norm = (
            f'kind = "mean_std"\nmean = {toml_list(normalize["mean"])}\nstd = {toml_list(normalize["std"])}\n'
        )
    else:
        norm = f'kind = "range"\nlow = {float(normalize["low"])!r}\nhigh = {float(normalize["high"])!r}\n'
    manifest = f"""# xcam model bundle: written by models/tools/export.py; edit the text fields, never the checksums.
[model]
name = {toml_str(name)}
version = {toml_str(version)}
description = {toml_str(description)}
labels = {toml_list(labels)}
thresholds = {toml_list(thresholds)}
provenance = {toml_str(provenance)}
licence = {toml_str(licence)}

[input]
height = {height}
width = {width}
channels = {channels}
resize = {toml_str(resize)}

[input.normalize]
{norm}
[target_layer]
name = {toml_str(target_layer)}

[files]
"features.pt" = "{sha256(out / 'features.pt')}"
"head.pt" = "{sha256(out / 'head.pt')}"
"""
    (out / "model.toml").write_text(manifest)
    print(f"export: wrote {out} ({name} {version}, {len(labels)} labels, split at {target_layer}, "
          f"max |logit diff| {err:.2g})")
    return out


def densenet121_split(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    return model.features, GapLinearHead(model.classifier, relu=True)


def resnet50_split(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    features = nn.Sequential(
        model.conv1, model.bn1, model.relu, model.maxpool,
        model.layer1, model.layer2, model.layer3, model.layer4,
    )
    return features, GapLinearHead(model.fc, relu=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, choices=["densenet121", "resnet50", "xrv-densenet"])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--weights", type=Path, help="a state_dict (.pth) or, for xrv-densenet, the xrv weights file")
    p.add_argument("--num-classes", type=int, help="outputs of a randomly initialised or fine-tuned model")
    p.add_argument("--labels", type=Path, help="text file, one label per line, in output order")
    p.add_argument("--name", help="bundle name (defaults to the output directory's name)")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights")
    p.add_argument("--size", type=int, default=224)
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--reference-images", type=Path, metavar="DIR",
                     help="in-distribution images (at least 40) for the out-of-distribution reference")
    ref.add_argument("--reference-synthetic", type=int, metavar="N",
                     help="the reference from N synthetic radiographs (for test bundles)")
    args = p.parse_args()
    export(args)
    if args.reference_images:
        paths = [f for f in args.reference_images.rglob("*") if f.suffix.lower() in reference.IMAGE_SUFFIXES]
        reference.add_to_bundle(args.out, paths, f"{args.reference_images.name}/")
    elif args.reference_synthetic:
        reference.synthetic(args.out, args.reference_synthetic, seed=3, percentile=99.0, shrinkage=0.05)


def export(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    name = args.name or args.out.name

    if args.arch == "xrv-densenet":
        try:
            import torchxrayvision as xrv  # noqa: PLC0415 - optional, only for this recipe
        except ImportError:
            sys.exit("export: the xrv-densenet recipe needs `pip install torchxrayvision`")
        if not args.weights:
            sys.exit("export: --weights FILE (the torchxrayvision .pt you downloaded) is required")
        model = xrv.models.DenseNet(weights=None, op_threshs=None)
        loaded = torch.load(args.weights, map_location="cpu", weights_only=False)
        model.load_state_dict(loaded.state_dict() if hasattr(loaded, "state_dict") else loaded, strict=False)
        labels = list(getattr(model, "pathologies", XRV_LABELS))
        threshs = getattr(loaded, "op_threshs", None)
        thresholds = [0.5 if t is None or t != t else float(t) for t in (threshs.tolist() if threshs is not None else [0.5] * len(labels))]
        features, head = densenet121_split(model)
        write_bundle(args.out, features, head, name=name, version=args.version, labels=labels,
                     thresholds=thresholds, height=224, width=224, channels=1,
                     normalize={"kind": "range", "low": -1024.0, "high": 1024.0}, resize="letterbox",
                     target_layer="features.norm5",
                     provenance=f"torchxrayvision DenseNet-121 weights from {args.weights.name}",
                     licence="Apache-2.0 (torchxrayvision); check the weights' data licences")
        return

    import torchvision  # noqa: PLC0415 - only the torchvision recipes need it

    labels = [l.strip() for l in args.labels.read_text().splitlines() if l.strip()] if args.labels else None
    num_classes = args.num_classes or (len(labels) if labels else None)
    if num_classes is None:
        sys.exit("export: give --num-classes or --labels")
    labels = labels or (XRV_LABELS[:num_classes] if num_classes <= len(XRV_LABELS) else [f"class_{i}" for i in range(num_classes)])
    builder = torchvision.models.densenet121 if args.arch == "densenet121" else torchvision.models.resnet50
    model = builder(weights=None, num_classes=num_classes)
    provenance = f"torchvision {args.arch}, random weights (seed {args.seed})"
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu"))
        provenance = f"torchvision {args.arch}, weights from {args.weights.name}"
    model.eval()
    split = densenet121_split if args.arch == "densenet121" else resnet50_split
    features, head = split(model)
    write_bundle(args.out, features, head, name=name, version=args.version, labels=labels,
                 thresholds=[0.5] * num_classes, height=args.size, width=args.size, channels=3,
                 normalize={"kind": "mean_std", "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
                 resize="stretch", target_layer="features.norm5" if args.arch == "densenet121" else "layer4",
                 provenance=provenance, licence="BSD-3-Clause (torchvision architecture)")


if __name__ == "__main__":
    main()
