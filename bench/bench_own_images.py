"""`make bench`, own images: ``predict`` over image files against ``Padim.predict`` on the same images preloaded plus
their decoding alone (printed and written as JSON, never asserted).

The issue's target: scoring files (:func:`padim_repro.images.predict_files`: decode, preprocess, embed, score, in
groups) within 1.3x of (``Padim.predict`` on the preloaded tensors) + (decoding and preprocessing the same files
with no model). Each round measures the three back to back in this process; the median of the per-round ratios is
reported. With ``--workers N`` the files are decoded by N processes beside the backbone (worth it on a GPU; on two
CPU cores they compete with the backbone). ``--maps`` adds what the ``predict`` command does per image after
scoring (the map at the image's size, the float16 ``.npy`` and the overlay PNG), as its own figure.

Data: a test split of MVTec AD (``--data-root`` / ``--category``) when present, else synthetic images written to a
temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from padim_repro.config import PadimConfig
from padim_repro.data import find_samples
from padim_repro.images import ImageFiles, list_images, map_at_image_size, predict_files
from padim_repro.model import Padim
from padim_repro.study.own_images import overlay
from padim_repro.study.synthetic import make_synthetic_category

TARGET = 1.3


def _files(data_root: Path, category: str, tmp: Path) -> tuple[list[Path], list[Path]]:
    """(train, test) image files: the real category when present, else a synthetic one of the same sizes."""
    if (data_root / category / "train" / "good").is_dir():
        return ([s.image_path for s in find_samples(data_root, category, "train")],
                [s.image_path for s in find_samples(data_root, category, "test")])  # fmt: skip
    make_synthetic_category(tmp, "synthetic", n_train=40, n_test_good=40, n_test_defect=40, size=256, seed=0)
    return list_images([tmp / "synthetic" / "train"]), list_images([tmp / "synthetic" / "test"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="data/mvtec_ad")
    ap.add_argument("--category", default="bottle")
    ap.add_argument("--weights", default="tv_in1k")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--maps", action="store_true", help="also time the maps and overlays the command writes")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    config = PadimConfig(weights=args.weights, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        train, test = _files(Path(args.data_root), args.category, Path(tmp))
        model = Padim(config, progress=False)
        model.fit(torch.stack([ImageFiles(train, config)[i] for i in range(len(train))]).split(config.batch_size))
        rounds = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            preloaded = torch.stack([ImageFiles(test, config)[i] for i in range(len(test))])
            decode_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            maps, _ = model.predict(preloaded)
            predict_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            streamed = np.concatenate([m for m, _ in predict_files(model, test, args.workers, progress=False)])
            files_s = time.perf_counter() - t0
            assert np.array_equal(streamed, maps), "predict over files differs from Padim.predict"
            row = {"decode_s": decode_s, "predict_preloaded_s": predict_s, "predict_files_s": files_s,
                   "ratio": files_s / (predict_s + decode_s)}  # fmt: skip
            if args.maps:
                from PIL import Image

                t0 = time.perf_counter()
                for path, amap in zip(test, maps):
                    with Image.open(path) as im:
                        full = map_at_image_size(amap, *im.size, config)
                        overlay(im, full, None, float(np.nanmin(full)), float(np.nanmax(full)))
                row["maps_overlays_per_image_s"] = (time.perf_counter() - t0) / len(test)
            rounds.append(row)
            print(json.dumps(row), file=sys.stderr)
    ratio = statistics.median(r["ratio"] for r in rounds)
    out = {"n_images": len(test), "workers": args.workers, "device": str(model.device), "rounds": rounds,
           "median_ratio": ratio, "target": TARGET, "within_target": ratio <= TARGET}  # fmt: skip
    print(json.dumps({k: v for k, v in out.items() if k != "rounds"}))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
