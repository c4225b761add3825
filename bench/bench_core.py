"""`make bench`, core part: speed and memory of our PaDiM as ratios measured in one process (printed, never asserted).

Timings on a shared 2-core machine are noisy, so every speed figure is a ratio of two things measured back to back
in the same process, over several rounds, with the median of the per-round ratios reported:

* R18-Rd100 on bottle (or a synthetic category when the real data or weights are absent): ``Padim.fit`` on the
  preloaded training images against the bare backbone forward (layer1..3) over the same images, and
  ``Padim.predict`` on the test images against the backbone over those; the accuracy of the precision matrices
  against a float64 two-pass reference on the same embeddings; peak RSS.
* WR50-Rd550 scale (random init: its ImageNet weights are not available offline, and cost does not depend on the
  weight values; 1792 -> 550 channels on the 56 x 56 grid of a 224 input): fit of N / 2 and N random images against the
  backbone forward over the same images, each N in a fresh process so that its peak RSS is its own.
* ``python -m padim_repro run`` on bottle in a child process: its peak RSS.

Targets (the performance issues): fit <= 1.5x and predict <= 1.15x the backbone (R18); WR50 fit <= 2x the backbone,
peak RSS <= 8 GB and flat in N; ``run`` R18 peak RSS <= 1 GiB. With ``--device cuda`` (``make bench DEVICE=cuda``) the
same figures on the GPU, images preloaded there and every clock synchronised, batch 32, written beside the CPU's as
``NAME_cuda.json``, with the GPU's own targets: R18 fit <= 2x and predict <= 1.5x the backbone, WR50-Rd550 fit of 209
images <= 5x the backbone with a GPU peak <= 10 GiB, ``run`` of one category <= 10 s; and the time of each exact
inverse of a Cholesky factor on the device (:data:`padim_repro.gaussian.CHOLESKY_INVERSE` keeps the faster one).
Only the stable API (``Padim``, ``PadimConfig``,
``load_category``, ``batches``) is used, so ``bench/before_after.py`` can run this file against another commit.
Where the package has :data:`padim_repro.memory.KEEP` (the malloc policy ``fit`` and ``predict`` run
under), it is set before any clock starts, so that the backbone alone runs under it too.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from padim_repro.config import PadimConfig
from padim_repro.data import batches, load_category
from padim_repro.model import Padim

try:  # the malloc policy Padim.fit and predict run under; older commits (bench/before_after.py) name it otherwise
    from padim_repro.memory import KEEP, set_policy

    def keep_freed_memory() -> bool:
        return set_policy(KEEP)

except ImportError:
    try:
        from padim_repro.memory import keep_freed_memory
    except ImportError:

        def keep_freed_memory() -> bool:
            return False

GIB = 2**30
TARGETS = {"r18_fit_ratio": 1.5, "r18_predict_ratio": 1.15, "wr50_fit_ratio": 2.0, "wr50_peak_rss_gb": 8.0,
           "run_peak_rss_gib": 1.0}  # fmt: skip
GPU_TARGETS = {"r18_fit_ratio": 2.0, "r18_predict_ratio": 1.5, "wr50_fit_ratio": 5.0, "wr50_gpu_peak_gib": 10.0,
               "run_wall_s": 10.0}  # fmt: skip


def _sync() -> None:
    """Wait for the GPU's queued work, so that a clock measures it (nothing on a CPU)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def gpu_peak_mb() -> float | None:
    """The GPU memory allocated at most since the last reset (None without CUDA)."""
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None


def _reset_gpu_peak() -> None:
    if torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size (Linux reports KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def _seconds(f) -> float:
    _sync()
    t0 = time.perf_counter()
    f()
    _sync()
    return time.perf_counter() - t0


def backbone_forward(model: Padim, images: torch.Tensor, batch_size: int) -> None:
    """The bare backbone (layer1..3 of the timm feature model) over ``images``: the physical floor of PaDiM."""
    with torch.inference_mode():
        for x in images.split(batch_size):
            model.extractor.model(x.contiguous(memory_format=torch.channels_last))


def paired_ratio(work, floor, rounds: int) -> tuple[float, list[float]]:
    """Median over ``rounds`` of work / floor, floor timed just before and just after each work."""
    ratios = []
    for _ in range(rounds):
        a, w, b = _seconds(floor), _seconds(work), _seconds(floor)
        ratios.append(w / ((a + b) / 2))
    return statistics.median(ratios), ratios


def precision_error(model: Padim, train: torch.Tensor) -> float:
    """Largest per-position relative error (Frobenius) of the model's precision against a float64 two-pass
    reference computed from the same embeddings (the backbone run again over ``train``)."""
    with torch.inference_mode():
        emb = torch.cat([model.extractor(x) for x in train.split(model.config.batch_size)]).cpu()
    n, d = emb.shape[:2]
    x = emb.movedim(1, -1).reshape(n, -1, d).transpose(0, 1).to(torch.float64)  # (P, N, d)
    xc = x - x.mean(dim=1, keepdim=True)
    cov = xc.transpose(1, 2) @ xc / (n - 1) + model.config.epsilon * torch.eye(d, dtype=torch.float64)
    ref = torch.linalg.inv(cov.cpu())
    err = (model.precision_.double().cpu() - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)
    return float(err.max())


def bench_r18(data_root: str, category: str, weights: str, rounds: int, device: str = "cpu",
              batch_size: int | None = None) -> dict:  # fmt: skip
    """R18-Rd100: fit and predict against the backbone, paired rounds in this process (images preloaded on the
    device; default batch size: the package's)."""
    cfg = PadimConfig(weights=weights, device=device, batch_size=batch_size or PadimConfig().batch_size)
    bs = cfg.batch_size  # for both the model and the backbone alone
    train, test = load_category(data_root, category)
    model = Padim(cfg, progress=False)
    train_x = torch.cat([x for x, _ in batches(train, bs)]).to(model.device)
    test_x = torch.cat([x for x, _ in batches(test, bs)]).to(model.device)
    model.extractor  # built before any clock starts
    keep_freed_memory()  # so that the backbone alone runs under the policy fit and predict run under
    fit_ratio, fit_rounds = paired_ratio(lambda: model.fit(train_x), lambda: backbone_forward(model, train_x, bs),
                                         max(3, rounds // 2))  # fmt: skip
    fit_breakdown = dict(model.timings_)
    _reset_gpu_peak()
    fit_s = _seconds(lambda: model.fit(train_x))
    fit_gpu_peak = gpu_peak_mb()
    predict_ratio, predict_rounds = paired_ratio(lambda: model.predict(test_x),
                                                 lambda: backbone_forward(model, test_x, bs), rounds)  # fmt: skip
    predict_s = _seconds(lambda: model.predict(test_x))
    with tempfile.TemporaryDirectory() as tmp:  # the model's size as stored, beside the paper's Table VIII
        size_mb = model.save(Path(tmp) / "m.pt").stat().st_size / 2**20
    return {"category": category, "weights": weights, "n_train": len(train), "n_test": len(test),
            "fit_ratio": fit_ratio, "fit_ratio_rounds": fit_rounds, "fit_s": fit_s, "fit_breakdown_s": fit_breakdown,
            "predict_ratio": predict_ratio, "predict_ratio_rounds": predict_rounds,
            "predict_per_image_s": predict_s / len(test), "predict_breakdown_s": dict(model.timings_),
            "backbone_per_image_s": _seconds(lambda: backbone_forward(model, test_x, bs)) / len(test),
            "batch_size": bs, "model_size_mb": size_mb,
            "precision_rel_error_max": precision_error(model, train_x), "peak_rss_mb": peak_rss_mb(),
            "threads": torch.get_num_threads(), "device": str(model.device), "fit_gpu_peak_mb": fit_gpu_peak}  # fmt: skip


def system_seconds() -> float:
    """CPU time this process has spent in the kernel (page faults, mostly)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def first_touch_s_per_gib() -> float:
    """Seconds to write 1 GiB of memory this process has not used before. On the virtual machines of ``make bench``
    a page the guest has not touched lately is backed by the host on its first write: 3 to 8 s per GiB for the first
    GiB of fresh processes within one hour here, 0.1 s for memory freed a moment before. A WR50-Rd550 fit must write
    its 3.6 GB model once, the backbone alone nothing as large."""
    t0 = time.perf_counter()
    block = torch.ones(2**28)  # 1 GiB of float32, written once
    seconds = time.perf_counter() - t0
    del block
    return seconds


def bench_wr50(n_images: int, batch_size: int = 16, device: str = "cpu") -> dict:
    """WR50-Rd550-scale fit of ``n_images`` random 224 px images against the backbone over the same images (the
    mean of one pass just before and one just after the fit: the machine's speed drifts by 10% over a minute), with
    the kernel time of both and the machine's cost of fresh memory (:func:`first_touch_s_per_gib`, measured first).
    On a GPU the images are made there once (preloaded, as the R18 figures), and predict of 83 images is timed too."""
    touch = first_touch_s_per_gib()
    cfg = PadimConfig(backbone="wide_resnet50_2", weights="none", batch_size=batch_size, device=device)
    model = Padim(cfg, progress=False)
    model.extractor
    keep_freed_memory()
    on_gpu = model.device.type == "cuda"
    preloaded = torch.randn(n_images, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(model.device) \
        if on_gpu else None  # fmt: skip

    def images():
        if preloaded is not None:
            return preloaded.split(batch_size)
        gen = torch.Generator().manual_seed(0)  # the same images for both passes
        sizes = [min(batch_size, n_images - start) for start in range(0, n_images, batch_size)]  # all n_images
        return (torch.randn(n, 3, 224, 224, generator=gen) for n in sizes)

    def floor():
        with torch.inference_mode():
            for x in images():
                model.extractor.model(x.contiguous(memory_format=torch.channels_last))

    if on_gpu:
        floor()  # warm-up: cuDNN's choice of kernels
    sys0 = system_seconds()
    before = _seconds(floor)
    sys1 = system_seconds()
    _reset_gpu_peak()
    fit_s = _seconds(lambda: model.fit(images()))
    fit_gpu_peak = gpu_peak_mb()
    sys2 = system_seconds()
    backbone_s = (before + _seconds(floor)) / 2  # timed just before and just after, as paired_ratio does
    backbone_system_s = (sys1 - sys0 + system_seconds() - sys2) / 2
    # Inference of the fitted model on 32 other random images (the paper's Table VII times WR50-Rd550 too; random
    # weights: the cost does not depend on their values).
    fit_breakdown = dict(model.timings_)
    test = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(model.device)
    predict_per_image_s = _seconds(lambda: model.predict(test)) / len(test)
    predict = {}
    if on_gpu:  # and against the backbone, 83 images as bottle's test set
        test_x = preloaded[:83]
        model.predict(test_x)
        predict_s = min(_seconds(lambda: model.predict(test_x)) for _ in range(3))
        backbone_83 = min(_seconds(lambda: backbone_forward(model, test_x, batch_size)) for _ in range(3))
        predict = {"predict_s": predict_s, "predict_backbone_s": backbone_83, "predict_ratio": predict_s / backbone_83,
                   "predict_n_images": len(test_x)}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        size_mb = model.save(Path(tmp) / "m.pt").stat().st_size / 2**20
    return {"device": str(model.device), "batch_size": batch_size, "fit_gpu_peak_mb": fit_gpu_peak, **predict,
            "n_images": n_images, "d": int(model.mean_.shape[1]), "n_channels_total": model.extractor.n_channels,
            "predict_per_image_s": predict_per_image_s,
            "grid": list(model.grid_size_), "fit_s": fit_s, "backbone_s": backbone_s, "fit_ratio": fit_s / backbone_s,
            "fit_breakdown_s": fit_breakdown, "fit_system_s": sys2 - sys1, "backbone_system_s": backbone_system_s,
            "first_touch_s_per_gib": touch, "model_size_mb": size_mb, "peak_rss_mb": peak_rss_mb()}


def bench_inverse(device: str = "cpu") -> dict:
    """Seconds of each exact inverse of a Cholesky factor (:data:`padim_repro.gaussian.CHOLESKY_INVERSE`), float32,
    for R18-Rd100 and WR50-Rd550 statistics (3,136 positions of d = 100, 550): on a GPU all positions at once, best of
    3; on a CPU one chunk of :func:`~padim_repro.gaussian.position_slices` on one thread, as a worker computes it."""
    from padim_repro import gaussian

    dev = torch.device(device)
    out = {}
    for d in (100, 550):
        p = 3136 if dev.type == "cuda" else len(range(3136)[gaussian.position_slices(3136, d)[0]])
        x = torch.randn(p, d + 8, d, generator=torch.Generator().manual_seed(0)).to(dev)
        chol = torch.linalg.cholesky(x.mT @ x / d + 0.01 * torch.eye(d, device=dev))
        del x
        with gaussian.torch_threads(1 if dev.type == "cpu" else None):
            for name, fn in (("potri", gaussian._potri), ("trsm_gemm", gaussian._trsm_gemm)):
                fn(chol)
                out[f"d{d}_{name}_s"] = min(_seconds(lambda: fn(chol)) for _ in range(3))
        out[f"d{d}_positions"] = p
    out["chosen"] = gaussian.CHOLESKY_INVERSE[dev.type == "cuda"].__name__.lstrip("_")
    return out


def run_rss(data_root: str, category: str, weights: str, device: str = "cpu") -> dict:
    """Peak RSS of ``python -m padim_repro run`` (R18) on ``category``, in a child process, after that of
    ``python -m padim_repro --help`` (the interpreter with torch, torchvision and timm imported: the floor of any
    run; measured first, since the children's peak is a maximum over them); and its wall time."""
    subprocess.run([sys.executable, "-m", "padim_repro", "--help"], capture_output=True, check=True)
    floor_mb = peak_rss_mb(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "padim_repro", "run", "--category", category, "--data-root", data_root,
               "--weights", weights, "--out", str(Path(tmp) / "run"), "--no-progress", "--device", device]  # fmt: skip
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr)
        wall = time.perf_counter() - t0
        timings = json.loads((Path(tmp) / "run" / "metrics.json").read_text())["timings"]
        return {"peak_rss_mb": peak_rss_mb(resource.RUSAGE_CHILDREN), "imports_rss_mb": floor_mb, "wall_s": wall,
                "timings": timings}  # fmt: skip


def child(kind: str, *args: str) -> dict:
    """Run one scenario in a fresh interpreter so that its peak RSS is measured alone."""
    out = subprocess.run([sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def verdict(value: float, target: float) -> str:
    return f"target <= {target:g}: {'met' if value <= target else 'NOT met'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data/mvtec_ad")
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--weights", default="tv_in1k")
    parser.add_argument("--rounds", type=int, default=7, help="paired rounds of predict (fit: half as many)")
    parser.add_argument("--wr50-images", type=int, default=None, help="default: 200 on a CPU, 209 (bottle's) on a GPU")
    parser.add_argument("--skip-wr50", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the package's on a CPU, 32 on a GPU")
    parser.add_argument("--json", default=None, help="also write all figures to this JSON file (a GPU's figures go "
                        "beside it, as NAME_cuda.json)")  # fmt: skip
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "wr50":
            # before_after.py passes N only (an older commit's child takes nothing else)
            result = bench_wr50(int(rest[0]), *([int(rest[1]), rest[2]] if len(rest) > 1 else []))
        elif kind == "r18":
            result = bench_r18(rest[0], rest[1], rest[2], int(rest[3]))
        else:
            result = run_rss(*rest)
        print(json.dumps(result))
        return

    from padim_repro.config import resolve_device

    device = str(resolve_device(args.device))
    on_gpu = device.startswith("cuda")
    targets = GPU_TARGETS if on_gpu else TARGETS
    batch_size = args.batch_size or (32 if on_gpu else None)
    data_root, weights = args.data_root, args.weights
    if not (Path(data_root) / args.category).is_dir() or (weights != "tv_in1k" and not Path(weights).is_file()):
        from padim_repro.study.synthetic import make_synthetic_category

        data_root = tempfile.mkdtemp()
        # bottle's size: 209 training, 20 good and 63 defective test images
        make_synthetic_category(data_root, args.category, n_train=209, n_test_good=20, n_test_defect=63, size=256)
        weights = "none"
        print(f"real data or weights absent: synthetic '{args.category}' (random-init weights) instead")
    from padim_repro.study.provenance import provenance

    results: dict = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **provenance(), "device": device,
                     "gpu": torch.cuda.get_device_name(device) if on_gpu else None}  # fmt: skip
    r = results["r18"] = bench_r18(data_root, args.category, weights, args.rounds, device, batch_size)
    gpu = f", {results['gpu']}, fit GPU peak {r['fit_gpu_peak_mb'] / 1024:.2f} GiB" if on_gpu else ""
    print(f"R18-Rd100 on {r['category']} ({r['n_train']} train / {r['n_test']} test, {r['threads']} threads, "
          f"batch {r['batch_size']}, {device}{gpu}):")
    print(f"  fit / backbone {r['fit_ratio']:.2f} (rounds {[round(x, 2) for x in r['fit_ratio_rounds']]}; "
          f"{verdict(r['fit_ratio'], targets['r18_fit_ratio'])}); fit {r['fit_s']:.3f} s")
    print(f"  predict / backbone {r['predict_ratio']:.2f} (rounds {[round(x, 2) for x in r['predict_ratio_rounds']]}; "
          f"{verdict(r['predict_ratio'], targets['r18_predict_ratio'])}); "
          f"{1e3 * r['predict_per_image_s']:.2f} ms/image")  # fmt: skip
    print(f"  precision vs float64 reference: max relative error {r['precision_rel_error_max']:.1e}; "
          f"peak RSS {r['peak_rss_mb']:.0f} MB; model file {r['model_size_mb']:.0f} MB")
    inv = results["inverse"] = bench_inverse(device)
    print("  inverse of the Cholesky factor (s): " + ", ".join(
        f"d={d} ({inv[f'd{d}_positions']} positions) potri {inv[f'd{d}_potri_s']:.4f}, solve + GEMM "
        f"{inv[f'd{d}_trsm_gemm_s']:.4f}" for d in (100, 550)) + f"; the package uses {inv['chosen']}")  # fmt: skip
    rr = results["run"] = child("run", data_root, args.category, weights, device)
    print(f"`python -m padim_repro run` on {args.category}: {rr['wall_s']:.1f} s wall"
          + (f" ({verdict(rr['wall_s'], targets['run_wall_s'])})" if on_gpu else "")
          + f", of which fit {rr['timings']['fit_s']:.2f} s, predict {rr['timings']['predict_s']:.2f} s, bootstrap "
          f"{rr['timings']['bootstrap_s']:.2f} s; peak RSS {rr['peak_rss_mb'] / 1024:.2f} GiB"
          + ("" if on_gpu else f" ({verdict(rr['peak_rss_mb'] / 1024, targets['run_peak_rss_gib'])})")
          + f", of which the imports alone {rr['imports_rss_mb'] / 1024:.2f} GiB")  # fmt: skip
    if not args.skip_wr50:
        n = args.wr50_images or (209 if on_gpu else 200)
        wr50_batch = str(batch_size or 16)
        # N / 2 beside N (the target's 200) shows the peak flat in the number of images at half the cost of 2N
        results["wr50_fit"] = [child("wr50", str(n // 2), wr50_batch, device), child("wr50", str(n), wr50_batch, device)]
        for w in results["wr50_fit"]:
            memory = (f"GPU peak {w['fit_gpu_peak_mb'] / 1024:.2f} GiB "
                      f"({verdict(w['fit_gpu_peak_mb'] / 1024, targets['wr50_gpu_peak_gib'])})" if on_gpu else
                      f"peak RSS {w['peak_rss_mb'] / 1024:.2f} GB ({verdict(w['peak_rss_mb'] / 1024, targets['wr50_peak_rss_gb'])})"
                      f"; kernel time fit {w['fit_system_s']:.0f} s, backbone {w['backbone_system_s']:.0f} s; fresh "
                      f"memory {w['first_touch_s_per_gib']:.2f} s/GiB")  # fmt: skip
            print(f"WR50-Rd550 scale, {w['n_images']} images ({w['n_channels_total']} -> {w['d']} channels, grid "
                  f"{w['grid']}): fit {w['fit_s']:.2f} s, backbone {w['backbone_s']:.3f} s, fit / backbone "
                  f"{w['fit_ratio']:.2f} ({verdict(w['fit_ratio'], targets['wr50_fit_ratio'])}); {memory}; model "
                  f"file {w['model_size_mb'] / 1024:.2f} GB")  # fmt: skip
            if "predict_s" in w:
                print(f"  predict of {w['predict_n_images']} images {w['predict_s']:.4f} s, backbone "
                      f"{w['predict_backbone_s']:.4f} s, ratio {w['predict_ratio']:.2f}")
        a, b = results["wr50_fit"]
        key = "fit_gpu_peak_mb" if on_gpu else "peak_rss_mb"
        print(f"  peak {'GPU memory' if on_gpu else 'RSS'} {n} vs {n // 2} images: {b[key] / a[key]:.3f} (flat = 1.0)")
    results["targets"] = targets
    if args.json:
        path = Path(args.json)
        path = path.with_name(f"{path.stem}_cuda{path.suffix}") if on_gpu else path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
