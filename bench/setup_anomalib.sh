#!/usr/bin/env bash
# Create / refresh the isolated virtual environment used to benchmark anomalib's PaDiM
# (bench/anomalib_padim.py) against ours.  Idempotent: re-running it on a complete venv
# only verifies the pinned versions and exits.
#
#   bash bench/setup_anomalib.sh            # -> <repo>/.venv-anomalib
#   VENV=/some/where bash bench/setup_anomalib.sh
#
# What is installed and why
# -------------------------
# * The venv is separate from the project's .venv so that anomalib's dependency tree
#   (lightning, jsonargparse, opencv, kornia, ...) never touches ours.
# * torch==2.14.1 + torchvision==0.29.1 first, on their own: these are the only releases
#   available from this machine's local wheel stores (pip is capped through
#   /etc/xdg/pip constraints torch<=2.14.1, torchvision<=0.29.1; other builds would be
#   multi-GB downloads).  The torch wheel is the default CUDA 13 build, so pip also
#   installs the nvidia-* runtime wheels and triton it depends on: torch and its deps
#   are ~5.3 of the venv's 6.3 GB (nvidia 3.2, torch 1.2, triton 0.9), the same as
#   .venv, and unavoidable with this wheel (torch does not import without them).
#   anomalib's own tree adds ~0.8 GB.  The benchmark itself runs on CPU.
# * anomalib==2.7.0: the newest release; its core requirements place no bound on torch
#   (torch>=2.10 / torchvision>=0.25 appear only in its optional cpu/cu126/cu130 extras,
#   which we do not request), so it accepts torch 2.14.1.  We install anomalib's core
#   requirements and no extras.  A smaller `--no-deps` install with only
#   timm/kornia/torchmetrics is not possible: importing
#   anomalib.models.image.padim.torch_model runs anomalib/models/__init__.py (every
#   model) and anomalib/data/__init__.py (every datamodule), which import lightning,
#   jsonargparse, omegaconf, opencv, FrEIA, einops, pandas, scikit-image, ... at module
#   level.
# * The whole resolved tree is pinned through a constraints file (CONSTRAINTS below, from
#   `pip freeze` after the first resolution of anomalib 2.7.0 on Python 3.11), so a
#   rebuilt venv runs the same code on the numerical path: timm 1.0.31 (backbone),
#   kornia 0.9.0 (Gaussian kernel), numpy 2.4.6, scikit-learn 1.9.1 (AUROC),
#   pillow 13.0.0 (image decoding/resizing); lightning 2.6.6 / torchmetrics 1.9.0 are
#   only imported by anomalib.
# * --prefer-binary: everything comes as wheels except FrEIA 0.2 (an anomalib core
#   requirement, sdist only, pure Python, builds in seconds).
#
# Measured on the 2-core dev machine: fresh install ~105 s (torch step ~45 s, anomalib
# step ~35 s, checks ~20 s); re-run on a complete venv ~6 s (the import check); 6.3 GB.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO_ROOT/.venv-anomalib}"
PYTHON="${PYTHON:-python3}"

TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
ANOMALIB_PIN=anomalib==2.7.0

# Full resolved tree (pip freeze minus anomalib/torch/torchvision), used as constraints.
CONSTRAINTS="
aiohappyeyeballs==2.7.1 aiohttp==3.14.5 aiosignal==1.4.0 anyio==4.16.0 attrs==26.1.0 click==8.5.1
cloudpickle==3.1.3 contourpy==1.3.3 cuda-bindings==13.5.0 cuda-pathfinder==1.9.1
cuda-toolkit==13.0.3.0 cycler==0.12.1 docstring_parser==0.18.0 einops==0.8.2 filelock==4.3.1
fonttools==4.68.0 FrEIA==0.2 frozenlist==1.8.0 fsspec==2026.9.0 h11==0.16.0 hf-xet==1.8.0
httpcore2==2.16.2 httpx2==2.16.2 huggingface_hub==2.4.0 idna==3.20 imagecodecs==2026.3.6
ImageIO==2.38.1 Jinja2==3.1.6 joblib==1.6.0 jsonargparse==4.46.0 kiwisolver==1.5.1 kornia==0.9.0
kornia_rs==0.2.0 lazy-loader==0.6 lightning==2.6.6 lightning-utilities==0.15.3
markdown-it-py==4.3.0 MarkupSafe==3.0.4 matplotlib==3.11.2 mdurl==0.1.2 mpmath==1.3.0
multidict==7.2.1 narwhals==2.29.0 networkx==3.6.1 numpy==2.4.6 nvidia-cublas==13.1.1.3
nvidia-cuda-cupti==13.0.85 nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96
nvidia-cudnn-cu13==9.24.0.43 nvidia-cufft==12.0.0.61 nvidia-cufile==1.15.1.6
nvidia-curand==10.4.0.35 nvidia-cusolver==12.0.4.66 nvidia-cusparse==12.6.3.3
nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7 nvidia-nvjitlink==13.5.37
nvidia-nvshmem-cu13==3.4.5 nvidia-nvtx==13.0.85 omegaconf==2.4.0 opencv-python-headless==5.0.0.93
packaging==26.4 pandas==3.1.1 pillow==13.0.0 platformdirs==4.14.8 propcache==0.5.4 Pygments==2.21.0
pyparsing==3.3.3 python-dateutil==4.0.0 pytorch-lightning==2.6.6 PyYAML==6.0.4 rich==15.0.0
rich-argparse==1.8.0 safetensors==0.8.0 scikit-image==0.26.0 scikit-learn==1.9.1 scipy==1.17.1
sympy==1.14.0 threadpoolctl==3.8.0 tifffile==2026.3.3 timm==1.0.31 torchmetrics==1.9.0 tqdm==4.70.1
triton==3.8.0 truststore==0.10.5 typeshed_client==2.15.0 typing_extensions==4.16.0 tzdata==2026.6
yarl==1.25.1
"
# Verified by the fast path: the packages on the benchmark's numerical path.
CHECK_PINS=("${TORCH_PINS[@]}" "$ANOMALIB_PIN" timm==1.0.31 kornia==0.9.0 numpy==2.4.6
            scikit-learn==1.9.1 pillow==13.0.0 lightning==2.6.6 torchmetrics==1.9.0)

# Succeeds iff every CHECK_PINS version is installed and the bench's import works.
check_installed() {
  "$VENV/bin/python" - "${CHECK_PINS[@]}" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
bad = []
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have is None or have.split("+")[0] != want:
        bad.append(f"{name}: want {want}, have {have}")
if bad:
    print("setup_anomalib: needs install:", "; ".join(bad))
    sys.exit(1)
import anomalib.models.image.padim.torch_model  # noqa: F401  (the import the bench needs)
PYEOF
}

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup_anomalib: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

if check_installed >/dev/null 2>&1; then
  echo "setup_anomalib: $VENV is complete (anomalib 2.7.0, torch 2.14.1); nothing to do"
  exit 0
fi

CFILE="$(mktemp)"
trap 'rm -f "$CFILE"' EXIT
tr ' ' '\n' <<<"$CONSTRAINTS" | sed '/^$/d' >"$CFILE"

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
PIP_INSTALL=("${PIP[@]}" install --prefer-binary --no-input -c "$CFILE")

# 1. torch/torchvision alone, so the resolver can never pick another build for them.
"${PIP_INSTALL[@]}" "${TORCH_PINS[@]}"
# 2. anomalib (core requirements, no extras) with torch/torchvision held fixed.
"${PIP_INSTALL[@]}" "$ANOMALIB_PIN" "${TORCH_PINS[@]}"

"${PIP[@]}" check
check_installed 2>/dev/null
echo "setup_anomalib: done: $("$VENV/bin/python" -W ignore -c 'import anomalib, torch, timm; print("anomalib", anomalib.__version__, "torch", torch.__version__, "timm", timm.__version__)')"
