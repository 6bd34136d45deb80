#!/usr/bin/env python3
"""Train xcam's demo model and write models/demo/ (bundle and sample set).

The demo model is a small CNN that tells whether a synthetic chest radiograph (see synth.py)
holds a nodule and/or an opacity. Its last feature map is 16x16, and its head is global average
pooling and a linear layer, so Grad-CAM can localise what it sees. It trains in a few minutes on
2 CPU cores, deterministically from its seed.

  python models/tools/train_demo.py            # writes models/demo/
  python models/tools/train_demo.py --check    # only reports AUC on a fresh set

Nothing is downloaded: the data are drawn by synth.py.
"""

from __future__ import annotations

import argparse
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synth  # noqa: E402
import reference  # noqa: E402
from export import GapLinearHead, write_bundle  # noqa: E402

SIZE = 128
MEAN, STD = 0.5, 0.25
TRAIN_SEED, VAL_SEED, SAMPLES_SEED, REFERENCE_SEED = 1, 2, 2026, 3


def backbone() -> nn.Sequential:
    def block(cin, cout, stride, k=3):
        return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, 16, 2, k=5),  # 64x64
        *block(16, 32, 2),  # 32x32
        *block(32, 32, 1),
        *block(32, 64, 2),  # 16x16
        *block(64, 64, 1),
    )


def dataset(seed: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    xs = np.empty((count, 1, SIZE, SIZE), np.float32)
    ys = np.empty((count, len(synth.LABELS)), np.float32)
    for i in range(count):
        img, findings = synth.draw(rng, SIZE, SIZE)
        xs[i, 0] = (img - MEAN) / STD
        ys[i] = synth.label_vector(findings)
    return torch.from_numpy(xs), torch.from_numpy(ys)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney) statistic."""
    order = scores.argsort()
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels > 0.5
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate(features, head, x, y) -> list[float]:
    features.eval()
    head.eval()
    with torch.no_grad():
        logits = torch.cat([head(features(x[i:i + 256])) for i in range(0, len(x), 256)])
    return [auc(logits[:, j].numpy(), y[:, j].numpy()) for j in range(y.shape[1])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "demo")
    p.add_argument("--train", type=int, default=6000, help="training images")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.manual_seed(TRAIN_SEED)
    torch.set_num_threads(args.threads)
    started = time.time()

    x, y = dataset(TRAIN_SEED, args.train)
    xv, yv = dataset(VAL_SEED, 1000)
    print(f"train_demo: drew {len(x)} training and {len(xv)} validation images in {time.time() - started:.0f}s")

    features = backbone()
    head = GapLinearHead(nn.Linear(64, len(synth.LABELS)), relu=False)
    params = list(features.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=1e-4)
    steps = args.epochs * ((len(x) + 31) // 32)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(args.epochs):
        features.train()
        head.train()
        perm = torch.randperm(len(x))
        total = 0.0
        for i in range(0, len(x), 32):
            idx = perm[i:i + 32]
            xb = x[idx]
            # Flips are fair augmentations here: findings may sit in either lung.
            if torch.rand(()) < 0.5:
                xb = xb.flip(-1)
            loss = loss_fn(head(features(xb)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        aucs = evaluate(features, head, xv, yv)
        print(f"train_demo: epoch {epoch + 1}/{args.epochs} loss {total / len(x):.4f} "
              f"val AUC {', '.join(f'{l} {a:.3f}' for l, a in zip(synth.LABELS, aucs))} "
              f"({time.time() - started:.0f}s)")

    out: Path = args.out
    write_bundle(
        out, features, head, name="demo", version="1.0.0", labels=synth.LABELS, thresholds=[0.5, 0.5],
        height=SIZE, width=SIZE, channels=1, normalize={"kind": "mean_std", "mean": [MEAN], "std": [STD]},
        resize="stretch", target_layer="features.14 (last ReLU, 64x16x16)",
        description="Demo classifier for synthetic chest radiographs: nodule and opacity.",
        provenance=f"models/tools/train_demo.py, synthetic data (synth.py) seed {TRAIN_SEED}, "
                   f"{len(x)} images, {args.epochs} epochs; validation AUC "
                   + ", ".join(f"{l} {a:.3f}" for l, a in zip(synth.LABELS, aucs)),
        licence="Apache-2.0",
    )
    # What its inputs look like, for the out-of-distribution score: unseen synthetic radiographs.
    reference.synthetic(out, count=2000, seed=REFERENCE_SEED, percentile=99.0, shrinkage=0.05)

    # The sample set: a ZIP of mixed formats and sizes plus the planted findings.
    samples = out / "samples"
    staging = samples / "images"
    rows = synth.write_set(staging, SAMPLES_SEED, 36)
    with zipfile.ZipFile(samples / "samples.zip", "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(staging.glob("cxr_*")):
            info = zipfile.ZipInfo(f.name, date_time=(2026, 1, 1, 0, 0, 0))
            zf.writestr(info, f.read_bytes())
    (staging / "findings.csv").replace(samples / "findings.csv")
    for f in staging.iterdir():
        f.unlink()
    staging.rmdir()
    print(f"train_demo: wrote {samples / 'samples.zip'} ({len({r['file'] for r in rows})} images) "
          f"and findings.csv; total {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
