"""The core figures of ``bench/bench_core.py`` for two commits, measured side by side in one run.

    .venv/bin/python bench/before_after.py --before d085f8b --data-root ../shared/mvtec_ad \
        --weights ../shared/weights/resnet18-imagenet-conv1-to-layer3-bnfolded.pth

The other commit is checked out in a temporary git worktree (removed at the end) and imported through PYTHONPATH;
each scenario runs in a fresh process, alternating before / after, so that both meet the same machine load. Every
scenario uses only the API both versions share. Prints one table; ``--json`` also writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def scenario(tree: Path, *args: str) -> dict:
    """One ``bench_core.py --child`` scenario with the package of ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, str(HERE / "bench_core.py"), "--child", *args], cwd=tree, env=env,
                         capture_output=True, text=True)  # fmt: skip
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="the commit to compare with (e.g. the last one before a change)")
    p.add_argument("--data-root", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--category", default="bottle")
    p.add_argument("--wr50-images", type=int, default=200)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    data, weights = str(Path(args.data_root).resolve()), str(Path(args.weights).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.before], cwd=REPO, check=True,
                       capture_output=True)  # fmt: skip
        try:
            trees = {"before": old, "after": REPO}
            results: dict = {name: {} for name in trees}
            for kind, extra in (("r18", [data, args.category, weights, "5"]), ("run", [data, args.category, weights]),
                                ("wr50", [str(args.wr50_images)])):  # fmt: skip
                for name, tree in trees.items():
                    results[name][kind] = scenario(tree, kind, *extra)
                    print(f"{kind} {name}: done", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, capture_output=True)
    rows = [("R18 fit / backbone", "r18", "fit_ratio", 1), ("R18 predict / backbone", "r18", "predict_ratio", 1),
            ("R18 fit (s)", "r18", "fit_s", 1), ("R18 Gaussian part of the fit (s)", "r18", "gaussian", 1),
            ("R18 precision max rel. error vs float64", "r18", "precision_rel_error_max", 1),
            ("`run` R18 peak RSS (GiB)", "run", "peak_rss_mb", 1 / 1024),
            (f"WR50 fit / backbone, {args.wr50_images} images", "wr50", "fit_ratio", 1),
            ("WR50 fit (s)", "wr50", "fit_s", 1), ("WR50 fit peak RSS (GiB)", "wr50", "peak_rss_mb", 1 / 1024)]
    for name in results:
        results[name]["r18"]["gaussian"] = results[name]["r18"]["fit_breakdown_s"].get("gaussian_s", float("nan"))
    print(f"{'figure':45s} {'before ' + args.before:>16s} {'after':>10s}")
    for label, kind, key, scale in rows:
        b, a = (results[n][kind][key] * scale for n in ("before", "after"))
        print(f"{label:45s} {b:16.3g} {a:10.3g}")
    if args.json:
        Path(args.json).write_text(json.dumps({"before": args.before, **results}, indent=1))


if __name__ == "__main__":
    main()
