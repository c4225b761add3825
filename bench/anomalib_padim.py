"""Benchmark anomalib's PaDiM (torch model) on one MVTec AD category.

Runs in its own venv (created by ``bench/setup_anomalib.sh``) and must never import
``padim_repro``::

    .venv-anomalib/bin/python bench/anomalib_padim.py \
        --data-root ../shared/mvtec_ad --category bottle \
        --weights ../shared/weights/resnet18-imagenet-conv1-to-layer3-bnfolded.pth \
        --json out.json

What it does
------------
* Builds ``anomalib.models.image.padim.torch_model.PadimModel`` (backbone resnet18,
  layers layer1..layer3, n_features=100) with ``pre_trained=False`` so that timm never
  tries the hub, then loads the local ImageNet state dict into anomalib's
  ``TimmFeatureExtractor`` (its timm ``features_only`` ResNet-18, truncated after
  layer3) and checks that every parameter and BN buffer of conv1..layer3 came from the
  file (fails loudly otherwise).
* Uses anomalib's own pieces for everything after the images: the feature extractor,
  ``PadimModel.generate_embedding`` (nearest upsampling + concat + channel subset),
  ``PadimModel.fit`` / ``MultiVariateGaussian`` and ``AnomalyMapGenerator``
  (Mahalanobis distance, bilinear upsampling, kornia-kernel Gaussian blur).
* Preprocessing is the paper's (resize 256 bicubic, center crop 224, ImageNet
  normalisation), done here with PIL/torchvision because anomalib's default
  pre-processor differs (see NOTES).
* Fit time = backbone forward + embedding collection + Gaussian fit on train/good
  (images are decoded and preprocessed beforehand, not timed).  Inference time = the
  model forward (backbone + distance + upsampling + blur + max) on every test image,
  ``--batch-size`` images at a time; seconds/image = total / number of test images.
* Image AUROC (score = max of the anomaly map, as in the paper) and pixel AUROC with
  scikit-learn; peak RSS, thread count and versions; JSON written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

# Never touch a model hub: the weights come from a local file.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TIMM_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

import anomalib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from anomalib.models.image.padim.torch_model import PadimModel  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from torchvision import transforms as T  # noqa: E402

BACKBONE = "resnet18"
LAYERS = ["layer1", "layer2", "layer3"]
N_FEATURES = 100
RESIZE = 256
CROP = 224
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
IMG_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}

# What differs from the paper protocol (Defard et al. 2020 and its reference code), found
# by reading anomalib 2.7.0's source in this venv.  Written into the JSON as-is.
NOTES = [
    "Preprocessing: done by this script, not by anomalib: PIL RGB -> Resize(256, bicubic) -> "
    "CenterCrop(224) -> ImageNet Normalize; masks Resize(256, nearest) -> CenterCrop(224) -> >0.5. "
    "This is the paper's protocol. anomalib's own default Padim pre-processor is different: "
    "torchvision v2 Resize((256, 256), bilinear, antialias) + Normalize, no center crop "
    "(feature maps 64x64 instead of 56x56), so anomalib's published numbers use another protocol.",
    "Channel selection: anomalib draws the 100 of 448 channels with torch.randperm(448)[:100] "
    "from the global torch RNG in PadimModel.__init__ (after timm's weight init has consumed "
    "RNG), not random.sample(range(448), 100) after random.seed(1024) as the paper's reference "
    "code; a different random subset (see channel_idx). --channel-selection paper swaps in "
    "the reference-code subset (same anomalib code otherwise).",
    "Embedding: layer2/layer3 maps are upsampled to layer1's 56x56 with F.interpolate(nearest) "
    "and concatenated; equivalent to the reference code's unfold/fold embedding_concat.",
    "Gaussian: per-position mean; covariance with numpy.cov semantics, unbiased (divides by N-1), "
    "+0.01*I inside the loop and again +1e-5*I before inversion, so the effective epsilon is "
    "0.01001 (paper: 0.01). Everything in float32 with torch.linalg.inv (reference code: "
    "numpy.cov in float64, inverse float64 per position).",
    "Distance: sqrt of the Mahalanobis quadratic form (clamped at 0), as the paper.",
    "Upsampling: bilinear, align_corners=False, from 56x56 to the 224x224 input size, as the "
    "reference code.",
    "Blur: anomalib GaussianBlur2d, sigma=4, kernel 33x33 (2*int(4*sigma+0.5)+1, i.e. scipy's "
    "truncate=4.0 radius 16) built with kornia.get_gaussian_kernel2d and normalised, padding "
    "'same' with torch F.pad mode 'reflect' (mirror without repeating the edge pixel: "
    "d c b | a b c d). The reference code uses scipy.ndimage.gaussian_filter(sigma=4) whose "
    "default mode 'reflect' repeats the edge pixel (d c b a | a b c d): only the 16-pixel "
    "border differs.",
    "Scores: image score = max of the blurred anomaly map (anomalib pred_score = amax), as the "
    "paper; raw Mahalanobis units, no normalisation (the reference code min-max normalises over "
    "the test set, which does not change AUROC).",
    "Backbone: timm resnet18 features_only (pre_trained=False, no hub access) loaded from the "
    "local ImageNet state dict (BN folded: weight 1, mean 0, var 1-1e-5); eval mode throughout "
    "(anomalib's fit path normally calls the model in train mode, where TimmFeatureExtractor "
    "forces the backbone to eval anyway; here the same embedding code is called in eval mode).",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, type=Path, help="MVTec AD root (CATEGORY/train, test, ground_truth)")
    p.add_argument("--category", required=True)
    p.add_argument("--weights", required=True, type=Path, help="ResNet-18 state dict (torchvision key layout)")
    p.add_argument("--json", required=True, type=Path, help="output JSON path (written atomically)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=1024)
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="time fit and inference this many times each; fit_s / inference_s are the medians (all in *_all)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda: where the model and the preloaded images live")
    p.add_argument(
        "--channel-selection",
        choices=["anomalib", "paper"],
        default="anomalib",
        help="anomalib: its torch.randperm subset (default); "
        "paper: random.sample(range(448), 100) after random.seed(seed)",
    )
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data


def _images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMG_EXTS)


def list_split(root: Path, category: str) -> tuple[list[Path], list[tuple[Path, int, Path | None]]]:
    """Train/good paths and test (path, label, mask path or None) in the official layout."""
    cat = root / category
    train_dir = cat / "train" / "good"
    if not train_dir.is_dir():
        raise FileNotFoundError(f"no {train_dir}")
    train = _images(train_dir)
    test: list[tuple[Path, int, Path | None]] = []
    for defect_dir in sorted(d for d in (cat / "test").iterdir() if d.is_dir()):
        for img in _images(defect_dir):
            if defect_dir.name == "good":
                test.append((img, 0, None))
            else:
                mask = cat / "ground_truth" / defect_dir.name / f"{img.stem}_mask.png"
                if not mask.is_file():
                    raise FileNotFoundError(f"missing mask {mask}")
                test.append((img, 1, mask))
    if not train or not test:
        raise RuntimeError(f"empty split for {category}: {len(train)} train, {len(test)} test")
    return train, test


IMAGE_TF = T.Compose(
    [
        T.Resize(RESIZE, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(CROP),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
)
MASK_TF = T.Compose([T.Resize(RESIZE, interpolation=T.InterpolationMode.NEAREST), T.CenterCrop(CROP), T.ToTensor()])


def load_images(paths: list[Path]) -> torch.Tensor:
    return torch.stack([IMAGE_TF(Image.open(p).convert("RGB")) for p in paths])


def load_masks(items: list[tuple[Path, int, Path | None]]) -> np.ndarray:
    out = np.zeros((len(items), CROP, CROP), dtype=np.uint8)
    for i, (_, _, mask) in enumerate(items):
        if mask is not None:
            out[i] = (MASK_TF(Image.open(mask).convert("L"))[0] > 0.5).numpy()
    return out


# ---------------------------------------------------------------------------- model


def load_backbone_weights(model: PadimModel, weights: Path) -> dict:
    """Load the local ImageNet state dict into anomalib's timm feature extractor.

    Every parameter and buffer of the truncated backbone (conv1..layer3) must come from
    the file with the same shape; BN ``num_batches_tracked`` counters are the only
    tolerated gap (they do not affect eval-mode outputs).
    """
    timm_model = model.feature_extractor.feature_extractor
    state = torch.load(weights, map_location="cpu", weights_only=True)
    target = timm_model.state_dict()
    unused = sorted(k for k in state if k not in target)
    missing = sorted(k for k in target if k not in state)
    missing_real = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing_real:
        raise RuntimeError(f"weights file lacks {len(missing_real)} backbone tensors, e.g. {missing_real[:5]}")
    bad_shape = [k for k in target if k in state and tuple(state[k].shape) != tuple(target[k].shape)]
    if bad_shape:
        raise RuntimeError(f"shape mismatch for {bad_shape[:5]}")
    # the used layers must be present in the model at all (layer names of the file)
    used_prefixes = ("conv1.", "bn1.", *(f"{layer}." for layer in LAYERS))
    not_in_model = [k for k in state if k.startswith(used_prefixes) and k not in target]
    if not_in_model:
        raise RuntimeError(f"file tensors of used layers absent from anomalib's backbone: {not_in_model[:5]}")
    result = timm_model.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)
    if [k for k in result.missing_keys if not k.endswith("num_batches_tracked")] or result.unexpected_keys:
        raise RuntimeError(f"load_state_dict: {result}")
    after = timm_model.state_dict()
    for k in target:
        if k in state and not torch.equal(after[k], state[k].to(after[k].dtype)):
            raise RuntimeError(f"{k} not loaded")
    n_params = sum(1 for _ in timm_model.named_parameters())
    n_loaded_params = sum(1 for k, _ in timm_model.named_parameters() if k in state)
    if n_loaded_params != n_params:
        raise RuntimeError(f"only {n_loaded_params}/{n_params} backbone parameters loaded")
    return {
        "tensors_in_file": len(state),
        "backbone_tensors": len(target),
        "loaded_tensors": len(target) - len(missing),
        "loaded_parameters": n_loaded_params,
        "backbone_parameters": n_params,
        "not_loaded": missing,  # num_batches_tracked only
        "file_tensors_unused": unused,  # layer4/fc would appear here; the file has none
    }


def build_model(args: argparse.Namespace) -> tuple[PadimModel, dict]:
    model = PadimModel(backbone=BACKBONE, layers=list(LAYERS), pre_trained=False, n_features=N_FEATURES)
    if model.n_features_original != 448 or model.feature_extractor.out_dims != [64, 128, 256]:
        raise RuntimeError(f"unexpected backbone dims {model.feature_extractor.out_dims}")
    load_info = load_backbone_weights(model, args.weights)
    if args.channel_selection == "paper":
        random.seed(args.seed)
        idx = torch.tensor(random.sample(range(model.n_features_original), N_FEATURES))
        model.idx.copy_(idx)
    model.eval()
    return model.to(args.device), load_info


def fit(model: PadimModel, train_x: torch.Tensor, batch_size: int) -> None:
    """anomalib's training path (feature extractor -> generate_embedding -> memory bank ->
    PadimModel.fit -> MultiVariateGaussian), called in eval mode."""
    bank = []
    for i in range(0, len(train_x), batch_size):
        features = model.feature_extractor(train_x[i : i + batch_size])
        bank.append(model.generate_embedding(features))
    model.memory_bank = bank
    model.fit()


def peak_rss_mb() -> float:
    # Linux: ru_maxrss in KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001
        return None


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.repeats < 1 or args.batch_size < 1:
        raise SystemExit("--repeats and --batch-size must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    load_avg_start = os.getloadavg()
    rss = {"after_imports_mb": current_rss_mb()}
    train_paths, test_items = list_split(args.data_root, args.category)

    t0 = time.perf_counter()
    train_x = load_images(train_paths)
    test_x = load_images([p for p, _, _ in test_items])
    labels = np.array([lab for _, lab, _ in test_items])
    masks = load_masks(test_items)
    load_s = time.perf_counter() - t0
    train_x, test_x = train_x.to(args.device), test_x.to(args.device)
    sync = torch.cuda.synchronize if torch.device(args.device).type == "cuda" else (lambda: None)
    rss["peak_after_data_load_mb"] = peak_rss_mb()

    with torch.inference_mode():
        model, load_info = build_model(args)

        fit_times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fit(model, train_x, args.batch_size)
            sync()
            fit_times.append(time.perf_counter() - t0)
        rss["peak_after_fit_mb"] = peak_rss_mb()

        infer_times = []
        for _ in range(args.repeats):
            maps, scores = [], []
            t0 = time.perf_counter()
            for i in range(0, len(test_x), args.batch_size):
                out = model(test_x[i : i + args.batch_size])
                maps.append(out.anomaly_map)
                scores.append(out.pred_score)
            sync()
            infer_times.append(time.perf_counter() - t0)
        rss["peak_after_inference_mb"] = peak_rss_mb()

    load_avg_end = os.getloadavg()
    fit_s = float(np.median(fit_times))
    infer_s = float(np.median(infer_times))
    anomaly_maps = torch.cat(maps).squeeze(1).cpu().numpy()
    image_scores = torch.cat(scores).reshape(-1).cpu().numpy()
    if anomaly_maps.shape != (len(test_items), CROP, CROP):
        raise RuntimeError(f"unexpected anomaly map shape {anomaly_maps.shape}")
    if not np.allclose(image_scores, anomaly_maps.reshape(len(anomaly_maps), -1).max(1)):
        raise RuntimeError("pred_score is not the max of the anomaly map")
    image_auroc = float(roc_auc_score(labels, image_scores))
    pixel_auroc = float(roc_auc_score(masks.reshape(-1), anomaly_maps.reshape(-1)))

    result = {
        "implementation": "anomalib",
        "model": "anomalib.models.image.padim.torch_model.PadimModel",
        "category": args.category,
        "backbone": BACKBONE,
        "layers": LAYERS,
        "n_features": N_FEATURES,
        "channel_selection": args.channel_selection,
        "channel_idx": model.idx.tolist(),
        "seed": args.seed,
        "batch_size": args.batch_size,
        "input": {"resize": RESIZE, "resize_interpolation": "bicubic", "crop": CROP, "normalize": "imagenet"},
        "n_train": len(train_paths),
        "n_test": len(test_items),
        "n_test_anomalous": int(labels.sum()),
        "image_auroc": image_auroc,
        "pixel_auroc": pixel_auroc,
        "repeats": args.repeats,
        "fit_s": fit_s,
        "inference_s": infer_s,
        "inference_s_per_image": infer_s / len(test_items),
        "fit_s_all": fit_times,
        "inference_s_all": infer_times,
        "load_average_start_end": [list(load_avg_start), list(load_avg_end)],
        "cpu_count": os.cpu_count(),
        "data_load_s": load_s,
        "peak_rss_mb": peak_rss_mb(),
        "rss_stages": rss,
        "torch_threads": torch.get_num_threads(),
        "device": args.device,
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.device(args.device).type == "cuda" else None,
        "timing_notes": (
            "fit_s / inference_s: medians over `repeats` runs (each run in *_all). "
            "fit_s = backbone + embedding collection + Gaussian fit on preloaded, preprocessed "
            "train images; inference_s = model forward (backbone, Mahalanobis, upsample, blur, max) "
            "on preloaded, preprocessed test images, batch_size at a time; image decoding and "
            "preprocessing are in data_load_s only. peak_rss_mb = ru_maxrss of the whole process "
            "(includes the preloaded images and the imported anomalib stack)."
        ),
        "weights": {"path": str(args.weights), **load_info},
        "versions": {
            "anomalib": anomalib.__version__,
            "torch": torch.__version__,
            "torchvision": _version("torchvision"),
            "timm": _version("timm"),
            "kornia": _version("kornia"),
            "numpy": np.__version__,
            "scikit-learn": _version("scikit-learn"),
            "pillow": _version("pillow"),
            "python": platform.python_version(),
        },
        "notes": NOTES,
    }
    write_json_atomic(args.json, result)
    print(
        f"anomalib-padim {args.category}: image AUROC {image_auroc:.4f} pixel AUROC {pixel_auroc:.4f} "
        f"fit {fit_s:.2f}s infer {result['inference_s_per_image'] * 1000:.1f} ms/img "
        f"peak RSS {result['peak_rss_mb']:.0f} MB threads {result['torch_threads']} "
        f"(anomalib {anomalib.__version__}, torch {torch.__version__}) -> {args.json}"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
