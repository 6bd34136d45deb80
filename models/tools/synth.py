"""Synthetic chest-like radiographs with planted findings, for the demo model and its tests.

Each image has a trunk, two lung fields, a mediastinum and heart, a spine, ribs, a random
exposure (gamma, contrast, offset) and noise. Findings are planted inside the lung fields at
random places and sizes:

  nodule   a small, well-defined round density
  opacity  a large, ill-defined patchy density

Geometry is in fractions of the image, so the same scene can be drawn at any size and aspect
ratio; boxes are returned in pixels of the drawn image. Everything is a function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABELS = ["nodule", "opacity"]


@dataclass
class Finding:
    label: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, inclusive-exclusive


def _ellipse(xx, yy, cx, cy, rx, ry, soft):
    d = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return 1.0 / (1.0 + np.exp(np.clip((d - 1.0) / soft, -60, 60)))


def _point_in_lung(rng, lungs):
    cx, cy, rx, ry = lungs[rng.integers(2)]
    while True:
        u, v = rng.uniform(-1, 1, size=2)
        if u * u + v * v < 0.55:
            return cx + u * rx, cy + v * ry


def draw(rng: np.random.Generator, height: int, width: int, p_finding: float = 0.45):
    """One radiograph as float32 in [0, 1], and the findings planted in it."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    xx /= width
    yy /= height
    img = np.full((height, width), 0.05, np.float32)

    trunk = _ellipse(xx, yy, 0.5, 0.55, rng.uniform(0.42, 0.48), rng.uniform(0.55, 0.65), 0.04)
    img += 0.42 * trunk
    lung_y = rng.uniform(0.42, 0.48)
    lungs = []
    lung_mask = np.zeros_like(img)
    for side in (-1, 1):
        cx = 0.5 + side * rng.uniform(0.17, 0.21)
        rx, ry = rng.uniform(0.12, 0.16), rng.uniform(0.25, 0.31)
        lungs.append((cx, lung_y, rx, ry))
        lung_mask = np.maximum(lung_mask, _ellipse(xx, yy, cx, lung_y, rx, ry, 0.06))
    img -= 0.30 * lung_mask

    # Ribs: bright arcs that curve down towards the sides, visible over the lungs.
    spacing = rng.uniform(0.055, 0.07)
    offsets = (np.arange(10) * spacing + 0.12 + rng.uniform(-0.02, 0.02)).astype(np.float32)
    curve = rng.uniform(0.5, 0.9)
    arc = yy[None] - (offsets[:, None, None] + curve * (xx[None] - 0.5) ** 2)
    ribs = np.exp(-((arc / 0.011) ** 2)).max(axis=0)
    img += 0.10 * ribs * lung_mask

    heart = _ellipse(xx, yy, 0.5 + rng.uniform(0.02, 0.06), rng.uniform(0.6, 0.66),
                     rng.uniform(0.10, 0.15), rng.uniform(0.10, 0.14), 0.08)
    mediastinum = _ellipse(xx, yy, 0.5, 0.4, 0.06, 0.3, 0.1)
    spine = np.exp(-(((xx - 0.5) / 0.03) ** 2)) * (yy > 0.05)
    img += 0.25 * np.maximum(heart, mediastinum) + 0.15 * spine

    findings: list[Finding] = []
    if rng.random() < p_finding:
        cx, cy = _point_in_lung(rng, lungs)
        r = rng.uniform(0.026, 0.05)
        d2 = ((xx - cx) / r) ** 2 + ((yy - cy) / (r * width / height)) ** 2
        img += rng.uniform(0.28, 0.42) * np.exp(-d2 * 1.2) * (1 / (1 + np.exp((np.sqrt(d2) - 1.2) * 6)))
        findings.append(Finding("nodule", _box(cx, cy, 1.2 * r, 1.2 * r * width / height, width, height)))
    if rng.random() < p_finding:
        cx, cy = _point_in_lung(rng, lungs)
        r = rng.uniform(0.07, 0.12)
        patch = np.zeros_like(img)
        xs, ys = [cx], [cy]
        for _ in range(rng.integers(3, 6)):
            px, py = cx + rng.uniform(-0.6, 0.6) * r, cy + rng.uniform(-0.6, 0.6) * r
            pr = r * rng.uniform(0.4, 0.7)
            patch = np.maximum(patch, np.exp(-(((xx - px) / pr) ** 2 + ((yy - py) / pr) ** 2) * 1.5))
            xs += [px - pr, px + pr]
            ys += [py - pr, py + pr]
        texture = 0.75 + 0.25 * rng.random(img.shape).astype(np.float32)
        img += rng.uniform(0.2, 0.3) * patch * texture * lung_mask
        box = (min(xs) * width, min(ys) * height, max(xs) * width, max(ys) * height)
        findings.append(Finding("opacity", _clip(box, width, height)))

    # Exposure and detector noise.
    img = np.clip(img, 0, 1) ** rng.uniform(0.75, 1.35)
    img = img * rng.uniform(0.8, 1.1) + rng.uniform(-0.05, 0.08)
    img += rng.normal(0, rng.uniform(0.008, 0.03), img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), findings


def _box(cx, cy, rx, ry, width, height):
    return _clip(((cx - rx) * width, (cy - ry) * height, (cx + rx) * width, (cy + ry) * height), width, height)


def _clip(box, width, height):
    x0, y0, x1, y1 = box
    return (max(0, int(x0)), max(0, int(y0)), min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1))))


def label_vector(findings: list[Finding]) -> list[float]:
    present = {f.label for f in findings}
    return [1.0 if label in present else 0.0 for label in LABELS]


def write_image(path, img: np.ndarray, kind: str) -> None:
    """Saves as 8-bit PNG ("png8"), 16-bit PNG ("png16") or JPEG ("jpeg")."""
    from PIL import Image  # noqa: PLC0415 - only writers need Pillow

    if kind == "png16":
        Image.fromarray((img * 65535).round().astype(np.uint16)).save(path, format="PNG")
    elif kind == "png8":
        Image.fromarray((img * 255).round().astype(np.uint8)).save(path, format="PNG")
    elif kind == "jpeg":
        Image.fromarray((img * 255).round().astype(np.uint8)).save(path, format="JPEG", quality=92)
    else:
        raise ValueError(kind)


def write_set(out_dir, seed: int, count: int, sizes=((320, 320), (384, 320), (448, 384), (256, 288)),
              kinds=("png8", "png16", "jpeg")) -> list[dict]:
    """Draws `count` images into out_dir with a CSV of findings; returns the CSV rows."""
    import csv  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        kind = kinds[i % len(kinds)]
        img, findings = draw(rng, h, w)
        name = f"cxr_{i:04d}.{'jpg' if kind == 'jpeg' else 'png'}"
        write_image(out / name, img, kind)
        if not findings:
            rows.append({"file": name, "label": "", "x0": "", "y0": "", "x1": "", "y1": "", "width": w, "height": h, "format": kind})
        for f in findings:
            x0, y0, x1, y1 = f.box
            rows.append({"file": name, "label": f.label, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "width": w, "height": h, "format": kind})
    with open(out / "findings.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "label", "x0", "y0", "x1", "y1", "width", "height", "format"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="Write a synthetic radiograph set with a findings CSV.")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--count", type=int, default=200)
    a = p.parse_args()
    write_set(a.out, a.seed, a.count)
