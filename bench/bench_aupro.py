"""Benchmark ``padim_repro.metrics.pro.aupro`` on a test-set-sized input.

Generates 100 seeded random anomaly maps of 224x224 (the PaDiM input size)
with ground-truth masks made of elliptical blobs (about 70 % defective images,
1-4 blobs each, some touching), then times ``aupro`` and prints the median of
5 runs.  Run from the repository root with

    PYTHONPATH=. .venv/bin/python bench/bench_aupro.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from scipy import ndimage

from padim_repro.metrics import aupro

N_IMAGES = 100
SIZE = 224
REPEATS = 5
SEED = 0


def make_data(n: int = N_IMAGES, size: int = SIZE, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(maps, masks)``: float32 (n, size, size) maps and bool masks with blob regions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        if rng.random() < 0.3:  # good image: empty mask
            continue
        for _ in range(rng.integers(1, 5)):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(2, 30, 2)
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    noise = rng.normal(size=masks.shape).astype(np.float32)
    maps = ndimage.gaussian_filter(noise, sigma=(0, 4, 4)) * 4.0 + masks * rng.uniform(0.0, 1.5)
    return maps.astype(np.float32), masks


def main() -> None:
    maps, masks = make_data()
    times = []
    value = float("nan")
    for _ in range(REPEATS):
        start = time.perf_counter()
        value = aupro(maps, masks)
        times.append(time.perf_counter() - start)
    print(
        f"aupro: {N_IMAGES} maps of {SIZE}x{SIZE}: {statistics.median(times):.2f} s "
        f"(median of {REPEATS}); value {value:.4f}; "
        f"{int(masks.any(axis=(1, 2)).sum())} defective images, "
        f"{int(masks.sum())} anomalous pixels"
    )


if __name__ == "__main__":
    main()
