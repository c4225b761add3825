"""Ours vs anomalib's PaDiM, alternated A B A B ... in fresh processes on the same data, weights and protocol.

This machine is noisy, so absolute times are not comparable across runs: each pair runs back to back and the
per-pair ratio (anomalib / ours) is the figure to read, with medians over the pairs. Needs ``.venv-anomalib``
(``bash bench/setup_anomalib.sh``). Target (issue): our inference per image at least 2x faster, metrics within 0.01.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from padim_repro.storage import write_json

HERE = Path(__file__).resolve().parent
ANOMALIB_PY = HERE.parent / ".venv-anomalib" / "bin" / "python"


def run(python: str | Path, script: str, args: list[str]) -> dict:
    """Run one benchmark script in a fresh interpreter and return its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        subprocess.run([str(python), str(HERE / script), *args, "--json", str(out)], check=True)
        return json.loads(out.read_text())


def export_weights(spec: str) -> str:
    """Save the ResNet-18 weights ``spec`` resolves to (e.g. the hub's tv_in1k) as a state-dict file."""
    import torch

    from padim_repro.backbones import build_backbone

    model, _ = build_backbone("resnet18", ("layer1", "layer2", "layer3"), spec, seed=0)
    path = Path(tempfile.mkdtemp()) / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", required=True)
    p.add_argument("--category", default="bottle")
    p.add_argument("--weights", required=True)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--json", default="results/bench/anomalib_vs_ours.json")
    p.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto, for both implementations (default %(default)s)")
    p.add_argument("--anomalib-python", default=str(ANOMALIB_PY),
                   help="the interpreter that has anomalib (default: .venv-anomalib's)")  # fmt: skip
    args = p.parse_args()
    from padim_repro.config import resolve_device

    args.device = str(resolve_device(args.device))
    if args.device.startswith("cuda"):  # the GPU's figures beside the CPU's
        args.json = str(Path(args.json).with_name(f"{Path(args.json).stem}_cuda{Path(args.json).suffix}"))
    if not Path(args.anomalib_python).exists() and not shutil.which(args.anomalib_python):
        sys.exit(f"{args.anomalib_python} missing: run `bash bench/setup_anomalib.sh` first")
    weights = args.weights
    if not Path(weights).is_file():  # e.g. tv_in1k: give both implementations the same tensors, from one file
        weights = export_weights(weights)
    common = ["--data-root", args.data_root, "--category", args.category, "--weights", weights, "--device", args.device]
    pairs = []
    for i in range(args.pairs):
        ours = run(sys.executable, "ours_padim.py", common)
        theirs = run(args.anomalib_python, "anomalib_padim.py", common)
        theirs.pop("channel_idx", None)
        pairs.append({"ours": ours, "anomalib": theirs})
        print(f"pair {i + 1}: inference ms/image ours {1e3 * ours['inference_s_per_image']:.1f}, anomalib "
              f"{1e3 * theirs['inference_s_per_image']:.1f}; fit s ours {ours['fit_s']:.1f}, anomalib "
              f"{theirs['fit_s']:.1f}")  # fmt: skip
    med = statistics.median
    summary = {
        key: {
            "ours_median": med(pr["ours"][key] for pr in pairs),
            "anomalib_median": med(pr["anomalib"][key] for pr in pairs),
            "ratio_anomalib_over_ours_per_pair": [pr["anomalib"][key] / pr["ours"][key] for pr in pairs],
        }
        for key in ("inference_s_per_image", "fit_s", "peak_rss_mb")
    }
    for key in summary:
        summary[key]["ratio_median"] = med(summary[key]["ratio_anomalib_over_ours_per_pair"])
    metrics = {m: {"ours": pairs[0]["ours"][m], "anomalib": pairs[0]["anomalib"][m]}
               for m in ("image_auroc", "pixel_auroc")}
    write_json(args.json, {"category": args.category, "weights": args.weights, "device": args.device, "pairs": pairs,
                           "summary": summary, "metrics": metrics, "notes_anomalib": pairs[0]["anomalib"].get("notes")})
    for key, s in summary.items():
        print(f"{key}: ours {s['ours_median']:.4g}, anomalib {s['anomalib_median']:.4g}, "
              f"anomalib/ours per pair {[round(r, 2) for r in s['ratio_anomalib_over_ours_per_pair']]}")
    for m, v in metrics.items():
        print(f"{m}: ours {v['ours']:.4f}, anomalib {v['anomalib']:.4f}, diff {v['ours'] - v['anomalib']:+.4f}")


if __name__ == "__main__":
    main()
