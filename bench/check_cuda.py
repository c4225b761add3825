"""Proof that every command gives the CPU's numbers on a GPU: `make check-cuda`, or on a GPU machine
`python bench/check_cuda.py --data-root D --mt-root M --weights W`.

What it does:

1. cuts a small copy of two MVTec AD categories (the first ``--train`` training images, the first ``--test`` good
   and defective images of each type with their masks) and of the Magnetic Tile dataset (``--mt-free`` defect-free
   tiles, ``--mt-test`` per defect type) into a temporary folder;
2. runs ``python -m padim_repro run`` (each category), ``ablations``, ``beyond`` and ``reproduce`` on the CPU and on
   ``--device``, with ``--no-pages`` (no notebook is executed, so it needs no papermill: a GPU machine may have its
   own torch and no package index; the notebooks are checked on the CPU by the tests), each into its own results
   folder, with the Python that runs this script and the package of this checkout;
3. compares every metric of every run (``metrics.json``: the metrics, per-defect AUROC, interval bounds) and every
   row of every ablation and beyond-the-paper table (``*.csv``), matched by what they describe, and prints the
   largest difference per file and the wall time of each command on each device.

Exit status 0 only when every command succeeded on both devices, every result exists on both and every metric agrees
within ``--tolerance`` (default 1e-4; scores, which are not fractions, within that relative). With ``--device cpu``
it compares the CPU with itself: the test suite does so once on the smallest data, so this script never rots. The
Wide-ResNet-50-2 runs of ``reproduce`` use random weights (its ImageNet weights may be absent; cost and agreement do
not depend on the weight values). At the default sizes it takes about 3 minutes on one H200 with 16 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Metrics compared in the CSV tables (fractions: absolute tolerance) and values compared relatively.
FRACTIONS = {"image_auroc", "pixel_auroc", "pro", "image_f1_max", "image_ap", "pixel_f1_max", "pixel_ap"}
RELATIVE = {"score"}
#: CSV columns that differ between devices by design, besides timings (``seconds*``, ``*_s``): the keys and folders of
#: runs (a run's key holds its device).
VARYING = {"run_dir", "run_key", "embeddings_key"}
MT_KINDS = ("Blowhole", "Break", "Crack", "Fray", "Uneven")


def cut_mvtec(src: Path, dst: Path, category: str, n_train: int, n_test: int) -> None:
    """The first ``n_train`` training images and the first ``n_test`` test images of each type (masks included)."""
    cat = src / category
    for image in sorted((cat / "train" / "good").glob("*.png"))[:n_train]:
        _copy(image, dst / category / "train" / "good" / image.name)
    for folder in sorted(p for p in (cat / "test").iterdir() if p.is_dir()):
        for image in sorted(folder.glob("*.png"))[:n_test]:
            _copy(image, dst / category / "test" / folder.name / image.name)
            if folder.name != "good":
                mask = cat / "ground_truth" / folder.name / f"{image.stem}_mask.png"
                _copy(mask, dst / category / "ground_truth" / folder.name / mask.name)


def cut_magnetic_tile(src: Path, dst: Path, n_free: int, n_test: int) -> None:
    """The first ``n_free`` defect-free tiles and the first ``n_test`` of each defect type, each with its mask."""
    for kind, n in [("Free", n_free)] + [(k, n_test) for k in MT_KINDS]:
        for image in sorted((src / f"MT_{kind}" / "Imgs").glob("*.jpg"))[:n]:
            _copy(image, dst / f"MT_{kind}" / "Imgs" / image.name)
            _copy(image.with_suffix(".png"), dst / f"MT_{kind}" / "Imgs" / f"{image.stem}.png")


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def commands(data: Path, mt: Path, weights: str, categories: list[str], results: Path, device: str,
             sizes: list[str]) -> dict[str, list[str]]:  # fmt: skip
    """Every command of the check on one device, writing under ``results``."""
    common = ["--data-root", str(data), "--results", str(results), "--device", device]
    study = [*common, "--book-dir", str(results / "book"), "--no-pages", *sizes]
    out = {f"run {c}": ["run", "--category", c, *common, "--weights", weights, "--out", str(results / "run" / c),
                        "--no-progress", *sizes] for c in categories}  # fmt: skip
    out["ablations"] = ["ablations", *study, "--weights", weights, "--categories", ",".join(categories)]
    mt_size = ["--mt-size", sizes[sizes.index("--crop") + 1]] if "--crop" in sizes else []
    out["beyond"] = ["beyond", *study, "--weights", weights, "--categories", ",".join(categories), "--mt-root", str(mt),
                     "--seeds", "0", *mt_size]  # fmt: skip
    out["reproduce"] = ["reproduce", *study, "--weights", f"resnet18={weights}", "--weights", "wide_resnet50_2=none"]
    return out


def run_all(cmds: dict[str, list[str]], log: Path) -> tuple[dict[str, float], list[str]]:
    """Run each command with this Python and this checkout's package; (wall seconds per command, failures)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    times, failures = {}, []
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        for name, args in cmds.items():
            fh.write(f"\n$ python -m padim_repro {' '.join(args)}\n")
            fh.flush()
            t0 = time.perf_counter()
            rc = subprocess.run([sys.executable, "-m", "padim_repro", *args], env=env, stdout=fh, stderr=fh,
                                stdin=subprocess.DEVNULL).returncode  # fmt: skip
            times[name] = time.perf_counter() - t0
            print(f"  {name:<16} {times[name]:7.1f} s  exit {rc}", flush=True)
            if rc != 0:
                failures.append(f"{name}: exit status {rc} (see {log})")
    return times, failures


def run_metrics(root: Path) -> dict[str, dict[str, float]]:
    """Every run's numbers by where it lies (a run folder's key, which hashes its device, left out), flattened."""
    out = {}
    for path in sorted(root.rglob("metrics.json")):
        rel = path.parent.relative_to(root).as_posix()
        if rel.startswith("runs/"):
            rel = rel.rsplit("-", 1)[0]  # runs/CATEGORY/BACKBONE-dD-KEY -> runs/CATEGORY/BACKBONE-dD
        out[rel] = dict(_numbers(json.loads(path.read_text())))
    return out


def _numbers(record: dict, prefix: str = ""):
    """(name, value) of the metrics in a metrics.json: each metric, per-defect AUROC, interval estimate and bounds."""
    for key, value in record.items():
        name = prefix + key
        if isinstance(value, dict):
            yield from _numbers(value, name + ".")
        elif isinstance(value, (int, float)) and (
            name in FRACTIONS or name.startswith("per_defect_image_auroc.")
            or (name.startswith("intervals.") and key in ("estimate", "low", "high"))
        ):  # fmt: skip
            yield name, value


def tables(root: Path) -> dict[str, list[dict]]:
    """Every CSV of ablation and beyond-the-paper rows, as records."""
    import pandas as pd

    return {p.relative_to(root).as_posix(): pd.read_csv(p).to_dict("records")
            for d in ("ablations", "beyond") for p in sorted((root / d).rglob("*.csv"))}  # fmt: skip


def _identity(row: dict) -> tuple:
    """What a row describes: its columns that are neither measured values nor different by design."""
    return tuple((k, str(v)) for k, v in row.items()
                 if k not in FRACTIONS | RELATIVE | VARYING and not k.startswith("seconds") and not k.endswith("_s"))


def compare(ref: Path, dev: Path, tolerance: float) -> tuple[list[str], list[str]]:
    """(lines of the largest difference per file, problems) between two results folders."""
    lines, problems = [], []
    a, b = run_metrics(ref), run_metrics(dev)
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            problems.append(f"{name}: metrics.json on one device only")
            continue
        worst = _worst(a[name], b[name], name, tolerance, problems)
        lines.append(f"{name + '/metrics.json':<58} {len(a[name]):5d} values, largest difference {worst:.2e}")
    ta, tb = tables(ref), tables(dev)
    for name in sorted(set(ta) | set(tb)):
        if name not in ta or name not in tb:
            problems.append(f"{name}: on one device only")
            continue
        rows_a, rows_b = ({_identity(r): r for r in t} for t in (ta[name], tb[name]))
        if set(rows_a) != set(rows_b) or len(rows_a) != len(ta[name]):
            problems.append(f"{name}: the rows differ ({len(ta[name])} against {len(tb[name])}, or not the same ones)")
            continue
        worst, n = 0.0, 0
        for key, row in rows_a.items():
            values = {k: v for k, v in row.items() if k in FRACTIONS | RELATIVE}
            n += len(values)
            worst = max(worst, _worst(values, {k: rows_b[key][k] for k in values}, name, tolerance, problems))
        lines.append(f"{name:<58} {n:5d} values, largest difference {worst:.2e}")
    if not lines:
        problems.append("no result to compare")
    return lines, problems


def _worst(a: dict[str, float], b: dict[str, float], where: str, tolerance: float, problems: list[str]) -> float:
    """The largest difference between two sets of values (relative for scores); a problem for each one too large."""
    worst = 0.0
    for key, x in a.items():
        y = b.get(key)
        if y is None or (isinstance(x, float) and math.isnan(x)) != (isinstance(y, float) and math.isnan(y)):
            problems.append(f"{where}: {key} is {x} on one device and {y} on the other")
            continue
        if isinstance(x, float) and math.isnan(x):
            continue
        diff = abs(x - y) / (max(abs(x), 1.0) if key in RELATIVE else 1.0)
        worst = max(worst, diff)
        if diff > tolerance:
            problems.append(f"{where}: {key} differs by {diff:.2e} ({x} against {y})")
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data/mvtec_ad", help="MVTec AD (at least two categories)")
    parser.add_argument("--mt-root", default=None, help="Magnetic Tile (default: magnetic_tile beside --data-root)")
    parser.add_argument("--weights", default="tv_in1k", help="ResNet-18 weights: tv_in1k (hub) or a local checkpoint")
    parser.add_argument("--device", default="cuda", help="the device checked against the CPU (default %(default)s)")
    parser.add_argument("--categories", default="bottle,transistor", help="two categories (default %(default)s)")
    parser.add_argument("--train", type=int, default=32, help="training images per category (default %(default)s)")
    parser.add_argument("--test", type=int, default=4, help="test images per type (default %(default)s)")
    parser.add_argument("--mt-free", type=int, default=40, help="defect-free Magnetic Tile images")
    parser.add_argument("--mt-test", type=int, default=4, help="Magnetic Tile images per defect type")
    parser.add_argument("--resize", type=int, default=None, help="smaller images for a quick check (default: 256)")
    parser.add_argument("--crop", type=int, default=None, help="with --resize (default: 224)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--work", default=None, help="folder for the data copy and results (default: a temporary "
                        "one, removed at the end)")  # fmt: skip
    args = parser.parse_args(argv)
    data_root = Path(args.data_root)
    mt_root = Path(args.mt_root) if args.mt_root else data_root.parent / "magnetic_tile"
    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    for path in [*(data_root / c for c in categories), mt_root]:
        if not path.is_dir():
            print(f"error: {path} is not a folder (--data-root, --categories, --mt-root)", file=sys.stderr)
            return 2
    weights = str(Path(args.weights).resolve()) if Path(args.weights).is_file() else args.weights
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="check_cuda_"))
    try:
        return _check(args, data_root, mt_root, weights, categories, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def _check(args: argparse.Namespace, data_root: Path, mt_root: Path, weights: str, categories: list[str],
           work: Path) -> int:  # fmt: skip
    import torch

    data, mt = work / "data" / "mvtec_ad", work / "data" / "magnetic_tile"
    for c in categories:
        cut_mvtec(data_root, data, c, args.train, args.test)
    cut_magnetic_tile(mt_root, mt, args.mt_free, args.mt_test)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"check_cuda: torch {torch.__version__}, GPU {gpu}, {os.cpu_count()} cores; {', '.join(categories)} "
          f"({args.train} train, {args.test} test per type), Magnetic Tile ({args.mt_free} free, {args.mt_test} per "
          f"defect type); {args.device} against cpu", flush=True)  # fmt: skip
    sizes = [*(["--resize", str(args.resize)] if args.resize else []), *(["--crop", str(args.crop)] if args.crop else [])]
    times, failures = {}, []
    for device, label in (("cpu", "reference"), (args.device, "checked")):
        print(f"{label}: {device}", flush=True)
        results = work / f"results-{label}"
        times[label], failed = run_all(commands(data, mt, weights, categories, results, device, sizes),
                                       work / f"{label}.log")  # fmt: skip
        failures += [f"{device}: {f}" for f in failed]
    lines, problems = compare(work / "results-reference", work / "results-checked", args.tolerance)
    print("\n".join(["comparison (largest absolute difference; scores relative):", *lines]))
    print("wall time (s):  command           cpu   " + args.device)
    for name in times["reference"]:
        print(f"                {name:<16} {times['reference'][name]:6.1f} {times['checked'].get(name, math.nan):6.1f}")
    print(f"                {'all':<16} {sum(times['reference'].values()):6.1f} {sum(times['checked'].values()):6.1f}")
    for problem in failures + problems:
        print(f"FAIL {problem}")
    if failures:
        for label in ("reference", "checked"):
            log = work / f"{label}.log"
            if log.is_file():
                print(f"--- end of {log.name} ---\n" + "\n".join(log.read_text().splitlines()[-40:]))
    print("check_cuda: " + ("FAILED" if failures or problems else f"OK, every value within {args.tolerance:g}"))
    return 1 if failures or problems else 0


if __name__ == "__main__":
    sys.exit(main())
