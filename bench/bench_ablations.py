"""Wall time of the ablation suite (padim_repro.study.ablations), cold or warm, without the notebooks.

    .venv/bin/python bench/bench_ablations.py --data-root ../shared/mvtec_ad \
        --weights ../shared/weights/resnet18-imagenet-conv1-to-layer3-bnfolded.pth --categories bottle,transistor

Runs the experiments in the order the notebooks do, into a temporary results folder (never the committed one), from
scratch (nothing is cached between experiments but what each computes itself). Prints the seconds per experiment
and category, the load average of the machine before and after (the machine is shared: other jobs slow everything
down), and writes the same as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from padim_repro.storage import write_json
from padim_repro.study import ablations as ab
from padim_repro.study.ablations.experiments import EXPERIMENTS
from padim_repro.study.provenance import provenance


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--categories", default="bottle,transistor")
    p.add_argument("--experiments", default=",".join(EXPERIMENTS))
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="also write the timings as JSON here")
    args = p.parse_args()
    categories = [c for c in args.categories.split(",") if c]
    with tempfile.TemporaryDirectory(prefix="bench_ablations_") as tmp:
        record = {"categories": categories, "load_before": os.getloadavg(), "experiments": {}}
        t_all = time.perf_counter()
        for name in args.experiments.split(","):
            t0 = time.perf_counter()
            df = ab.run_experiment(name, args.data_root, args.weights, categories, Path(tmp) / "results", args.device)
            manifest = json.loads(ab.results_path(Path(tmp) / "results", name).with_suffix(".json").read_text())
            record["experiments"][name] = {"seconds": round(time.perf_counter() - t0, 1), "rows": len(df),
                                           "per_category": {c: {k: g[k] for k in ("seconds", "embeddings_seconds")}
                                                            for c, g in manifest["groups"].items()}}  # fmt: skip
            print(f"{name:>10}: {record['experiments'][name]['seconds']:7.1f} s  ({len(df)} rows)", flush=True)
        record["total_seconds"] = round(time.perf_counter() - t_all, 1)
        record["load_after"] = os.getloadavg()
    print(f"{'total':>10}: {record['total_seconds']:7.1f} s = {record['total_seconds'] / 60:.1f} min "
          f"(load average before {record['load_before'][0]:.1f}, after {record['load_after'][0]:.1f}; "
          f"{os.cpu_count()} CPUs)")  # fmt: skip
    if args.out:
        write_json(args.out, {**record, **provenance()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
