#!/usr/bin/env python3
"""Give a model bundle a reference of its training inputs, for xcam's out-of-distribution score.

The reference is the mean and (shrunk) covariance of the pooled target-layer features of
in-distribution images. A worker scores every image by the Mahalanobis distance of its pooled
features from that mean; the bundle's threshold is a high percentile of the scores of held-out
in-distribution images, so about (100 - percentile) % of new in-distribution images pass it.

  python models/tools/reference.py BUNDLE --images DIR       # your in-distribution images
  python models/tools/reference.py BUNDLE --synthetic 2000   # synth.py's radiographs (demo model)

It writes BUNDLE/reference.npz and adds [reference] and its checksum to BUNDLE/model.toml.
A quarter of the images (every fourth, in name order) are held out for the threshold.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synth  # noqa: E402

REFERENCE_FILE = "reference.npz"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm"}


def gray(path: Path) -> np.ndarray:
    """An image as float32 in [0, 1], the way xcam reads it (DICOM through pydicom here)."""
    if path.suffix.lower() == ".dcm":
        import pydicom  # noqa: PLC0415

        ds = pydicom.dcmread(path)
        arr = ds.pixel_array.astype(np.float32)
        arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6)
        return 1.0 - arr if ds.get("PhotometricInterpretation") == "MONOCHROME1" else arr
    img = Image.open(path)
    arr = np.asarray(img)
    if arr.dtype == np.uint16 or img.mode.startswith("I"):
        return arr.astype(np.float32) / 65535.0
    if arr.ndim == 3:
        arr = 0.2126 * arr[..., 0] + 0.7152 * arr[..., 1] + 0.0722 * arr[..., 2]
    return arr.astype(np.float32) / 255.0


def model_input(pixels: np.ndarray, spec: dict) -> np.ndarray:
    """Resize (stretch, or letterbox onto the image's minimum) and normalise, as the worker does."""
    h, w = pixels.shape
    if spec["resize"] == "letterbox" and h != w:
        side = max(h, w)
        square = np.full((side, side), pixels.min(), np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        square[top:top + h, left:left + w] = pixels
        pixels = square
    resized = np.asarray(Image.fromarray(pixels, mode="F").resize((spec["width"], spec["height"]), Image.BILINEAR))
    x = np.repeat(resized[None], spec["channels"], 0)
    norm = spec["normalize"]
    if norm["kind"] == "range":
        return x * (norm["high"] - norm["low"]) + norm["low"]
    mean = np.asarray(norm["mean"], np.float32)[:, None, None]
    std = np.asarray(norm["std"], np.float32)[:, None, None]
    return (x - mean) / std


def pooled_features(bundle: Path, spec: dict, paths: list[Path], batch: int = 32) -> np.ndarray:
    """The spatial mean of the target layer's activations, one row per image."""
    features = torch.jit.load(str(bundle / "features.pt")).eval()
    rows = []
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            x = np.stack([model_input(gray(p), spec) for p in paths[i:i + batch]])
            rows.append(features(torch.from_numpy(x).float()).mean(dim=(2, 3)).double().numpy())
    return np.concatenate(rows)


def fit(train: np.ndarray, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and precision (the inverse of the covariance shrunk towards its mean variance)."""
    mean = train.mean(0)
    cov = np.cov(train, rowvar=False)
    k = cov.shape[0]
    target = np.trace(cov) / k * np.eye(k)
    precision = np.linalg.inv((1 - shrinkage) * cov + shrinkage * target)
    return mean, precision


def scores(feats: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d = feats - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, precision, d), 0))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def add_to_bundle(bundle: Path, paths: list[Path], source: str, percentile: float = 99.0,
                  shrinkage: float = 0.05) -> float:
    """Fits the reference on 3/4 of `paths`, calibrates on the rest, writes it into the bundle."""
    manifest = tomllib.loads((bundle / "model.toml").read_text())
    paths = sorted(paths)
    held_out = paths[3::4]
    train = [p for i, p in enumerate(paths) if i % 4 != 3]
    if len(train) < 20 or len(held_out) < 10:
        sys.exit(f"reference: {len(paths)} images are too few (at least 40)")
    mean, precision = fit(pooled_features(bundle, manifest["input"], train), shrinkage)
    held = scores(pooled_features(bundle, manifest["input"], held_out), mean, precision)
    threshold = float(np.percentile(held, percentile))
    np.savez(bundle / REFERENCE_FILE, mean=mean.astype(np.float32), precision=precision.astype(np.float32))
    calibration = (f"{percentile:g}th percentile of the scores of {len(held_out)} held-out images of {source}; "
                   f"fitted on {len(train)} (covariance shrinkage {shrinkage:g})")
    write_manifest(bundle, threshold, calibration)
    print(f"reference: {bundle / REFERENCE_FILE} ({mean.shape[0]} features); threshold {threshold:.2f} "
          f"(held-out median {np.median(held):.2f})")
    return threshold


def write_manifest(bundle: Path, threshold: float, calibration: str) -> None:
    """Replaces any [reference] table and checksum in model.toml with the new ones."""
    text = (bundle / "model.toml").read_text()
    text = re.sub(r"\[reference\]\n(?:[^\[\n][^\n]*\n|\n)*", "", text)
    text = re.sub(rf'"{re.escape(REFERENCE_FILE)}" = "[0-9a-f]+"\n', "", text)
    section = (f'[reference]\nfile = "{REFERENCE_FILE}"\nthreshold = {threshold:.4f}\n'
               f'calibration = "{calibration}"\n\n')
    text = text.replace("[files]\n", section + "[files]\n", 1)
    text = text.rstrip("\n") + f'\n"{REFERENCE_FILE}" = "{sha256(bundle / REFERENCE_FILE)}"\n'
    (bundle / "model.toml").write_text(text)


def synthetic(bundle: Path, count: int, seed: int, percentile: float, shrinkage: float) -> float:
    """The reference from synth.py's radiographs, written as files of every size and format the
    demo's samples come in, so they reach the model as uploads do."""
    with tempfile.TemporaryDirectory() as tmp:
        synth.write_set(tmp, seed=seed, count=count,
                        sizes=((128, 128), (320, 320), (384, 320), (448, 384), (256, 288)))
        paths = [p for p in Path(tmp).iterdir() if p.suffix in IMAGE_SUFFIXES]
        return add_to_bundle(bundle, paths, f"synth.py radiographs (seed {seed})", percentile, shrinkage)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="a directory of in-distribution images (PNG, JPEG, TIFF, DICOM)")
    source.add_argument("--synthetic", type=int, metavar="N", help="draw N synthetic radiographs with synth.py")
    p.add_argument("--seed", type=int, default=3, help="seed of the synthetic images")
    p.add_argument("--percentile", type=float, default=99.0)
    p.add_argument("--shrinkage", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.images:
        paths = [f for f in a.images.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES]
        add_to_bundle(a.bundle, paths, f"{a.images.name}/", a.percentile, a.shrinkage)
    else:
        synthetic(a.bundle, a.synthetic, a.seed, a.percentile, a.shrinkage)


if __name__ == "__main__":
    main()
