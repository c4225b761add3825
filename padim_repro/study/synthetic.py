"""Small synthetic datasets in the MVTec AD layout, for tests, benchmarks and demos without the real data.

Each image is a seeded smooth texture (sums of random sinusoids plus noise); defective test images get pasted
ellipses or scratches of another intensity, with their exact binary masks in ``ground_truth``. It is easy enough
that a working PaDiM separates good from defective images, and hard enough that a broken one does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _texture(rng: np.random.Generator, size: int, base_freqs: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    for fx, fy, phase_amp in base_freqs:
        phase = rng.uniform(0, 2 * np.pi)
        img += phase_amp * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)[..., None]
    img += rng.normal(0, 0.05, img.shape)
    img = (img - img.min()) / (np.ptp(img) + 1e-9)
    return (60 + 120 * img).clip(0, 255)


def _defect_mask(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.integers(size // 5, 4 * size // 5, 2)
    if kind == "spot":
        ry, rx = rng.integers(size // 14, size // 7, 2)
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    # "scratch": a thick line segment
    angle = rng.uniform(0, np.pi)
    length, width = size // 3, max(2, size // 32)
    dy, dx = np.sin(angle), np.cos(angle)
    t = (yy - cy) * dy + (xx - cx) * dx
    n = np.abs(-(yy - cy) * dx + (xx - cx) * dy)
    return (np.abs(t) <= length / 2) & (n <= width / 2)


def make_synthetic_category(
    root: str | Path,
    name: str = "synthetic",
    n_train: int = 10,
    n_test_good: int = 4,
    n_test_defect: int = 3,
    size: int = 64,
    defect_types: tuple[str, ...] = ("spot", "scratch"),
    grayscale: bool = False,
    seed: int = 0,
) -> Path:
    """Write a category ``root/name`` in the MVTec AD layout and return its folder.

    ``n_test_defect`` images are written per defect type, each with its ``NNN_mask.png`` (0/255).
    """
    rng = np.random.default_rng(seed)
    freqs = np.column_stack([rng.integers(1, 6, 4), rng.integers(1, 6, 4), rng.uniform(0.5, 1.0, 4)])
    cat = Path(root) / name
    mode = "L" if grayscale else "RGB"

    def save(img: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = img.mean(-1) if grayscale else img
        Image.fromarray(arr.astype(np.uint8), mode).save(path)

    for i in range(n_train):
        save(_texture(rng, size, freqs), cat / "train" / "good" / f"{i:03d}.png")
    for i in range(n_test_good):
        save(_texture(rng, size, freqs), cat / "test" / "good" / f"{i:03d}.png")
    for kind in defect_types:
        for i in range(n_test_defect):
            img = _texture(rng, size, freqs)
            mask = _defect_mask(rng, size, "spot" if kind == "spot" else "scratch")
            img[mask] = 250.0 if rng.random() < 0.5 else 10.0
            save(img, cat / "test" / kind / f"{i:03d}.png")
            mpath = cat / "ground_truth" / kind / f"{i:03d}_mask.png"
            mpath.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((mask * 255).astype(np.uint8), "L").save(mpath)
    return cat
