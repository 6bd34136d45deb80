#!/usr/bin/env python3
"""Train xcam's demo model and write models/demo/ (bundle and sample set).

The demo model is a small CNN that tells whether a synthetic chest radiograph (see synth.py)
holds a nodule and/or an opacity. Its last feature map is 16x16, and its head is global average
pooling and a linear layer, so Grad-CAM can localise what it sees. It trains in a few minutes on
2 CPU cores, deterministically from its seed. Half its training batches get random deletions
filled as the engine's deletion measure fills them (delete_evidence), so that measure reads what
the model uses rather than how it takes the fill.

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
# Training batches given random deletions (see delete_evidence).
DELETION_SHARE = 0.5


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


def dataset(seed: int, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, labels, and per label a mask of the planted finding's box (empty when absent)."""
    rng = np.random.default_rng(seed)
    xs = np.empty((count, 1, SIZE, SIZE), np.float32)
    ys = np.empty((count, len(synth.LABELS)), np.float32)
    boxes = np.zeros((count, len(synth.LABELS), SIZE, SIZE), np.bool_)
    for i in range(count):
        img, findings = synth.draw(rng, SIZE, SIZE)
        xs[i, 0] = (img - MEAN) / STD
        ys[i] = synth.label_vector(findings)
        for f in findings:
            x0, y0, x1, y1 = f.box
            boxes[i, synth.LABELS.index(f.label), y0:y1, x0:x1] = True
    return torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(boxes)


def deletion_orders(n: int) -> torch.Tensor:
    """Random orders of removal, as the faithfulness measures remove pixels: most salient first
    under a random coarse map, a random blob, or a map around a planted finding."""
    coarse = torch.rand(n, 1, 16, 16)
    yy, xx = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    cy, cx = torch.rand(n, 1, 1) * SIZE, torch.rand(n, 1, 1) * SIZE
    sd = 8 + torch.rand(n, 1, 1) * 40
    blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sd**2)).unsqueeze(1)
    coarse = nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    pick = torch.rand(n, 1, 1, 1) < 0.5
    return torch.where(pick, coarse, blob)


def delete_evidence(x: torch.Tensor, y: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Removes a random share of each image's pixels in a random order, filling them as the
    engine's deletion measure does (the mean of the kept pixels within an eighth of the side,
    the blurred image where none is kept). A finding keeps its label in proportion to what is
    left of its box, so the model learns that the fill is not evidence and a removed finding is
    gone: the deletion measure then reads what the model uses, not how it takes the fill."""
    n = len(x)
    saliency = deletion_orders(n)
    # Most of a finding is what a good map removes first: half the orders start on one.
    on_finding = boxes.any(1, keepdim=True).float()
    focus = torch.rand(n, 1, 1, 1) < 0.5
    saliency = torch.where(focus, saliency + 2 * on_finding, saliency)
    # Rank of every pixel (0 the most salient); the first `share` of them are removed.
    rank = saliency.flatten(1).argsort(1, descending=True).argsort(1)
    removed = (torch.rand(n, 1) * 0.9 * SIZE * SIZE).long()
    kept = (rank >= removed).float().view(n, 1, SIZE, SIZE)
    k = SIZE // 8 + 1
    pool = lambda t: nn.functional.avg_pool2d(t, k, 1, k // 2, count_include_pad=False)
    weight = pool(kept)
    canvas = nn.functional.interpolate(nn.functional.adaptive_avg_pool2d(x, SIZE // 16), size=(SIZE, SIZE),
                                       mode="bilinear", align_corners=False)
    fill = torch.where(weight > 1e-3, pool(x * kept) / weight.clamp_min(1e-6), canvas)
    deleted = x * kept + fill * (1 - kept)
    area = boxes.flatten(2).float().sum(2).clamp_min(1)
    left = (boxes.float() * kept).flatten(2).sum(2) / area
    return deleted, y * left


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

    x, y, boxes = dataset(TRAIN_SEED, args.train)
    xv, yv, _ = dataset(VAL_SEED, 1000)
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
            xb, yb, bb = x[idx], y[idx], boxes[idx]
            # Flips are fair augmentations here: findings may sit in either lung.
            if torch.rand(()) < 0.5:
                xb, bb = xb.flip(-1), bb.flip(-1)
            if torch.rand(()) < DELETION_SHARE:
                xb, yb = delete_evidence(xb, yb, bb)
            loss = loss_fn(head(features(xb)), yb)
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
