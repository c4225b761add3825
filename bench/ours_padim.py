"""Our PaDiM on one category, measured exactly as ``bench/anomalib_padim.py`` measures anomalib's.

Same protocol for both: images decoded and preprocessed before the clocks start (resize 256 bicubic, center crop
224, ImageNet normalisation); ``fit_s`` = backbone + embedding + Gaussian fit on the training images;
``inference_s`` = backbone + Mahalanobis + upsampling + blur + max on every test image, ``--batch-size`` at a
time; AUROCs with scikit-learn (through :mod:`padim_repro.metrics`); peak RSS of this process. JSON written
atomically, so ``bench/compare_anomalib.py`` can alternate the two implementations in fresh processes.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from padim_repro.config import PadimConfig
from padim_repro.data import batches, load_category
from padim_repro.metrics import image_auroc, pixel_auroc
from padim_repro.model import Padim
from padim_repro.storage import package_versions, write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", required=True)
    p.add_argument("--category", default="bottle")
    p.add_argument("--weights", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda: where the model and the preloaded images live")
    args = p.parse_args()
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    train, test = load_category(args.data_root, args.category)
    train_x = torch.cat([x for x, _ in batches(train, args.batch_size)])
    test_batches = list(batches(test, args.batch_size))
    test_x, masks = torch.cat([x for x, _ in test_batches]), torch.cat([m for _, m in test_batches]).numpy()
    data_load_s = time.perf_counter() - t0
    cfg = PadimConfig(weights=args.weights, batch_size=args.batch_size, device=args.device)
    train_x, test_x = train_x.to(args.device), test_x.to(args.device)
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)
    fits, infers = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        model = Padim(cfg, progress=False).fit(train_x)
        sync()
        fits.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        maps, scores = model.predict(test_x)
        infers.append(time.perf_counter() - t0)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    write_json(args.json, {
        "implementation": "padim_repro", "category": args.category, "backbone": cfg.backbone, "d": cfg.resolved_d,
        "seed": cfg.seed, "batch_size": args.batch_size, "n_train": len(train), "n_test": len(test),
        "image_auroc": image_auroc(scores, test.labels), "pixel_auroc": pixel_auroc(maps, masks),
        "repeats": args.repeats, "fit_s": med(fits), "inference_s": med(infers),
        "inference_s_per_image": med(infers) / len(test), "fit_s_all": fits, "inference_s_all": infers,
        "data_load_s": data_load_s, "load_average_start_end": [load_start, os.getloadavg()],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(), "versions": package_versions(), "device": args.device,
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None,
    })  # fmt: skip


if __name__ == "__main__":
    main()
