"""`make bench`, core part: speed and memory of our PaDiM (figures printed, not asserted).

R18-Rd100 on bottle (or a synthetic category when the real data or weights are absent): fit seconds, inference
seconds per image, the backbone forward alone per image (the physical floor), their ratio, and peak RSS.
Then a WR50-scale fit (random init, 1792 -> 550 channels, 56x56 grid) with N and 2N images, each in its own
process so its peak RSS is its own: flat peak RSS means memory does not grow with the number of training images.
Targets (issue): inference <= 1.3x the backbone forward; WR50-scale fit peak RSS <= 8 GB and flat in N.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from padim_repro.config import PadimConfig
from padim_repro.data import batches, load_category
from padim_repro.metrics import evaluate
from padim_repro.model import Padim
from padim_repro.study.provenance import git_commit
from padim_repro.study.synthetic import make_synthetic_category


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_r18(data_root: str, category: str, weights: str, repeats: int) -> dict:
    """Fit once, then time inference and the backbone alone on the test set, alternating, ``repeats`` times."""
    cfg = PadimConfig(weights=weights, batch_size=32)
    train, test = load_category(data_root, category)
    test_x = torch.cat([x for x, _ in batches(test, 32)])
    model = Padim(cfg, progress=False)
    t0 = time.perf_counter()
    model.fit(batches(train, 32))
    fit_s = time.perf_counter() - t0
    fit_breakdown = dict(model.timings_)
    masks = torch.cat([m for _, m in batches(test, 32)]).numpy()
    infer, floor, breakdowns = [], [], []
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.predict(test_x)
            infer.append((time.perf_counter() - t0) / len(test_x))
            breakdowns.append(dict(model.timings_))
            t0 = time.perf_counter()
            for x in test_x.split(32):
                model.extractor.model(x)
            floor.append((time.perf_counter() - t0) / len(test_x))
    maps, scores = model.predict(test_x)
    t0 = time.perf_counter()
    evaluate(maps, masks, scores, test.labels, test.defect_types)
    metrics_s = time.perf_counter() - t0
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return {
        "metrics_s": metrics_s,
        "category": category, "weights": weights, "n_train": len(train), "n_test": len(test_x),
        "fit_s": fit_s, "fit_breakdown_s": fit_breakdown,
        "infer_per_image_s": med(infer), "backbone_per_image_s": med(floor),
        "ratio_infer_to_backbone": med([a / b for a, b in zip(infer, floor)]),
        "predict_breakdown_s": breakdowns[len(breakdowns) // 2], "peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
    }  # fmt: skip


def bench_wr50_fit(n_images: int, batch_size: int = 16) -> dict:
    """Fit-time memory and speed at WR50-Rd550 scale (random init, random images of 224 px)."""
    cfg = PadimConfig(backbone="wide_resnet50_2", weights="none", batch_size=batch_size)
    model = Padim(cfg, progress=False)
    gen = torch.Generator().manual_seed(0)
    images = (torch.randn(batch_size, 3, 224, 224, generator=gen) for _ in range(n_images // batch_size))
    t0 = time.perf_counter()
    model.fit(images)
    fit_s = time.perf_counter() - t0
    test_x = torch.randn(batch_size, 3, 224, 224, generator=gen)
    t0 = time.perf_counter()
    model.predict(test_x)
    infer_s = (time.perf_counter() - t0) / batch_size
    with tempfile.TemporaryDirectory() as tmp:
        size_mb = model.save(Path(tmp) / "m.pt").stat().st_size / 2**20
    return {"n_images": n_images, "d": int(model.mean_.shape[1]), "n_channels_total": model.extractor.n_channels,
            "grid": list(model.grid_size_), "fit_s": fit_s, "fit_breakdown_s": dict(model.timings_),
            "infer_per_image_s": infer_s, "model_size_mb": size_mb, "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def in_subprocess(kind: str, n: int) -> dict:
    """Run one WR50 scenario in a fresh interpreter so its peak RSS is measured alone."""
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(n)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data/mvtec_ad")
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--weights", default="tv_in1k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wr50-images", type=int, default=200)
    parser.add_argument("--skip-wr50", action="store_true", help="R18 only (an existing --json keeps its WR50 part)")
    parser.add_argument("--json", default=None, help="also write all figures to this JSON file")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, n = args.child[0], int(args.child[1])
        print(json.dumps(bench_wr50_fit(n)))
        return

    # With --skip-wr50 an existing JSON keeps its WR50 section (each section says when and at which commit it ran).
    results: dict = {}
    if args.json and args.skip_wr50 and Path(args.json).is_file():
        results = {k: v for k, v in json.loads(Path(args.json).read_text()).items() if k == "wr50_fit"}
    stamp = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": git_commit()}
    data_root, weights = args.data_root, args.weights
    if not (Path(data_root) / args.category).is_dir() or (weights != "tv_in1k" and not Path(weights).is_file()):
        tmp = tempfile.mkdtemp()
        make_synthetic_category(tmp, args.category, n_train=64, n_test_good=16, n_test_defect=16, size=256)
        print(f"real data or weights absent: synthetic '{args.category}' (random-init weights) instead")
        data_root, weights = tmp, "none"
    r = bench_r18(data_root, args.category, weights, args.repeats) | stamp
    results["r18"] = r
    print(f"R18-Rd100 on {r['category']} ({r['n_train']} train / {r['n_test']} test, {r['threads']} threads):")
    print(f"  fit {r['fit_s']:.1f} s  (backbone {r['fit_breakdown_s']['backbone_s']:.1f} s, "
          f"Gaussian {r['fit_breakdown_s']['gaussian_s']:.1f} s)")
    b = r["predict_breakdown_s"]
    print(f"  inference {1e3 * r['infer_per_image_s']:.1f} ms/image, backbone alone "
          f"{1e3 * r['backbone_per_image_s']:.1f} ms/image, ratio {r['ratio_infer_to_backbone']:.2f} "
          f"(target <= 1.3); breakdown of one pass: backbone {b['backbone_s']:.2f} s, Mahalanobis "
          f"{b['mahalanobis_s']:.2f} s, upsample+blur {b['upsample_blur_s']:.2f} s")
    print(f"  metrics (image/pixel AUROC, PRO) {r['metrics_s']:.2f} s; peak RSS {r['peak_rss_mb']:.0f} MB")
    if not args.skip_wr50:
        n = args.wr50_images
        results["wr50_fit"] = [in_subprocess("fit", n) | stamp, in_subprocess("fit", 2 * n) | stamp]
        for w in results["wr50_fit"]:
            print(f"WR50-Rd550 scale fit, {w['n_images']} images ({w['n_channels_total']} -> {w['d']} channels, "
                  f"grid {w['grid']}): {w['fit_s']:.0f} s, peak RSS {w['peak_rss_mb'] / 1024:.2f} GB, "
                  f"model file {w['model_size_mb'] / 1024:.2f} GB, inference {w['infer_per_image_s']:.2f} s/image")
        a, b2 = results["wr50_fit"]
        print(f"  peak RSS ratio {2 * n} vs {n} images: {b2['peak_rss_mb'] / a['peak_rss_mb']:.3f} "
              "(flat = 1.0; target <= 8 GB)")
    if args.json:
        from padim_repro.storage import write_json

        write_json(args.json, results)


if __name__ == "__main__":
    main()
