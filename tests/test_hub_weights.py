"""The ``weights="tv_in1k"`` path of :func:`padim_repro.backbones.build_backbone` reads timm's hub weights, offline.

With ``weights="tv_in1k"`` the backbone comes from ``timm.create_model("resnet18.tv_in1k", pretrained=True, ...)``,
which asks huggingface_hub for the file ``model.safetensors`` of the repository ``timm/resnet18.tv_in1k`` (and, if
that is missing, for ``pytorch_model.bin``). These tests need no internet: they prepare a Hugging Face hub cache in a
temporary ``HF_HOME``, in the hub's own layout::

    hub/models--timm--resnet18.tv_in1k/
        refs/main                                  (the snapshot's commit hash)
        blobs/<sha256 of the file>                 (the file's content)
        snapshots/<commit hash>/model.safetensors  (-> ../../blobs/<sha256>)

and run each scenario in a fresh Python subprocess with ``HF_HUB_OFFLINE=1`` and a dead proxy (huggingface_hub
reads ``HF_HOME`` / ``HF_HUB_OFFLINE`` into module constants at import time, so a process that has already imported
it cannot be pointed at another cache reliably). They prove that

* the weights in the cache are the ones the model gets, through ``build_backbone`` and through ``FeatureExtractor``:
  the cache holds random weights (every tensor, batch-norm statistics included, unlike timm's default init), and
  every tensor of the loaded model equals the written one, as do the weights' fingerprints;
* an empty cache gives a :class:`~padim_repro.backbones.WeightsError` with a one-line message that says how to pass
  a local checkpoint (``--weights /path/to/checkpoint.pth``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file

from padim_repro.backbones import build_backbone, weights_fingerprint

REPO_ROOT = Path(__file__).resolve().parents[1]
BACKBONE = "resnet18"
TAG = "tv_in1k"
HUB_REPO = f"timm/{BACKBONE}.{TAG}"
LAYERS = ("layer1", "layer2", "layer3")
#: The file timm 1.0 loads for ``timm/<model>.<tag>`` (its first choice; ``pytorch_model.bin`` is the fallback).
WEIGHTS_FILE = "model.safetensors"
#: A made-up snapshot commit hash (40 hex digits, as the hub's).
COMMIT = hashlib.sha1(b"padim-repro offline hub test").hexdigest()
#: Seed of the random weights written to the cache (any seed: the values are not timm's init in any case).
CACHE_SEED = 20240607
#: Unreachable proxy: a request that escapes offline mode fails at once instead of reaching the network.
DEAD_PROXY = "http://127.0.0.1:9"
SUBPROCESS_TIMEOUT_S = 120

# Runs in the subprocess: spies on the file names timm requests from huggingface_hub, then builds the backbone.
_PRELUDE = """
import json, sys
import torch
torch.set_num_threads(1)
import timm.models._hub as timm_hub
from huggingface_hub import constants

requested = []
_download = timm_hub.hf_hub_download

def _spy(*args, **kwargs):
    repo_id = kwargs.get("repo_id", args[0] if args else None)
    requested.append([repo_id, kwargs.get("filename")])
    return _download(*args, **kwargs)

timm_hub.hf_hub_download = _spy
from padim_repro.backbones import WeightsError, build_backbone, weights_fingerprint
from padim_repro.features import FeatureExtractor
LAYERS = ("layer1", "layer2", "layer3")
result = {"hub_cache": constants.HF_HUB_CACHE, "offline": constants.HF_HUB_OFFLINE}
"""

_LOAD_FROM_CACHE = (
    _PRELUDE
    + """
from safetensors.torch import save_file
out = sys.argv[1]
model, result["fingerprint"] = build_backbone("resnet18", LAYERS, "tv_in1k", seed=0)
save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, out + "/backbone.safetensors")
extractor = FeatureExtractor("resnet18", LAYERS, "tv_in1k", 100, 1024)
state = extractor.model.state_dict()
save_file({k: v.detach().contiguous() for k, v in state.items()}, out + "/extractor.safetensors")
result["extractor_weights_id"] = extractor.weights_id
result["extractor_fingerprint"] = weights_fingerprint(extractor.model)
result["requested"] = requested
print(json.dumps(result))
"""
)

_EMPTY_CACHE = (
    _PRELUDE
    + """
errors = []
for build in (lambda: build_backbone("resnet18", LAYERS, "tv_in1k", seed=0),
              lambda: FeatureExtractor("resnet18", LAYERS, "tv_in1k", 100, 1024)):
    try:
        build()
        errors.append(None)
    except WeightsError as exc:
        errors.append({"message": str(exc), "cause": type(exc.__cause__).__name__})
result["errors"] = errors
result["requested"] = requested
print(json.dumps(result))
"""
)


def _offline_env(hf_home: Path) -> dict[str, str]:
    """The parent's environment with every hub/timm/proxy setting replaced: cache ``hf_home``, offline, dead proxy."""
    dropped = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TIMM_")
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped) and k.lower() not in proxies}
    env.update(
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HTTPS_PROXY=DEAD_PROXY,
        HTTP_PROXY=DEAD_PROXY,
        ALL_PROXY=DEAD_PROXY,
        https_proxy=DEAD_PROXY,
        http_proxy=DEAD_PROXY,
        all_proxy=DEAD_PROXY,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    return env


def _run(code: str, hf_home: Path, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter with the offline hub environment; the JSON it prints last."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=_offline_env(hf_home),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"subprocess printed nothing; stderr:\n{proc.stderr}"
    result = json.loads(lines[-1])
    # The subprocess really used the temporary cache, offline.
    assert Path(result["hub_cache"]) == hf_home / "hub"
    assert result["offline"] is True
    return result


def _random_resnet18_state(seed: int) -> dict[str, torch.Tensor]:
    """A full ``resnet18`` state dict (classifier included, as in timm's hub file) of seeded random values.

    Every tensor is drawn, batch-norm weights, biases and running statistics included, so none equals timm's
    default init (kaiming convolutions, BN weight 1, bias 0, mean 0, var 1).
    """
    with torch.device("meta"):
        template = timm.create_model(BACKBONE, pretrained=False).state_dict()
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, value in template.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(seed % 1000, dtype=value.dtype)
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=g) * 0.05
    return state


def _write_hub_cache(hf_home: Path, state: dict[str, torch.Tensor]) -> Path:
    """Put ``state`` in ``hf_home`` as huggingface_hub caches ``timm/resnet18.tv_in1k``'s weights; the snapshot file."""
    repo_dir = hf_home / "hub" / ("models--" + HUB_REPO.replace("/", "--"))
    (repo_dir / "blobs").mkdir(parents=True)
    staging = repo_dir / "blobs" / "staging.incomplete"
    save_file(state, str(staging))
    blob = staging.replace(repo_dir / "blobs" / hashlib.sha256(staging.read_bytes()).hexdigest())
    snapshot = repo_dir / "snapshots" / COMMIT / WEIGHTS_FILE
    snapshot.parent.mkdir(parents=True)
    try:
        snapshot.symlink_to(Path("..") / ".." / "blobs" / blob.name)  # the hub's layout
    except OSError:  # no symlinks (e.g. Windows without developer mode): the hub then copies the file too
        snapshot.write_bytes(blob.read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    return snapshot


def _assert_same_tensors(loaded: dict[str, torch.Tensor], written: dict[str, torch.Tensor], what: str) -> None:
    assert set(loaded) == {k for k in written if k.split(".")[0] in ("conv1", "bn1", *LAYERS)}, what
    different = [k for k, v in loaded.items() if not torch.equal(v, written[k].to(v.dtype))]
    assert not different, f"{what}: tensors differ from the cached ones: {different[:10]}"


def test_tv_in1k_weights_are_read_from_the_local_hub_cache(tmp_path: Path) -> None:
    """Random weights in a local hub cache are exactly what build_backbone and FeatureExtractor load, offline."""
    hf_home, out = tmp_path / "hf_home", tmp_path / "out"
    out.mkdir()
    written = _random_resnet18_state(CACHE_SEED)
    snapshot = _write_hub_cache(hf_home, written)
    assert torch.equal(load_file(str(snapshot))["conv1.weight"], written["conv1.weight"])

    # The fingerprint of the cached weights, from a model into which they are loaded here; it is not the init's.
    model, init_fingerprint = build_backbone(BACKBONE, LAYERS, "none", seed=0)
    own = model.state_dict()
    model.load_state_dict({k: written[k] for k in own})
    expected = weights_fingerprint(model)
    assert expected != init_fingerprint

    result = _run(_LOAD_FROM_CACHE, hf_home, str(out))

    assert all(repo == HUB_REPO for repo, _ in result["requested"]), result["requested"]
    assert [name for _, name in result["requested"]] == [WEIGHTS_FILE, WEIGHTS_FILE], result["requested"]
    assert result["fingerprint"] == expected
    assert result["extractor_weights_id"] == expected
    assert result["extractor_fingerprint"] == expected
    _assert_same_tensors(load_file(str(out / "backbone.safetensors")), written, "build_backbone")
    _assert_same_tensors(load_file(str(out / "extractor.safetensors")), written, "FeatureExtractor")


def test_empty_hub_cache_offline_gives_one_line_weights_error(tmp_path: Path) -> None:
    """Offline with nothing cached, tv_in1k fails with a one-line WeightsError that says how to pass a checkpoint."""
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()

    result = _run(_EMPTY_CACHE, hf_home)

    assert [name for _, name in result["requested"]][:1] == [WEIGHTS_FILE], result["requested"]
    assert len(result["errors"]) == 2
    for where, error in zip(("build_backbone", "FeatureExtractor"), result["errors"]):
        assert error is not None, f"{where} built a model from an empty cache"
        message = error["message"]
        assert "\n" not in message and "\r" not in message, f"{where}: message is not one line: {message!r}"
        assert "--weights" in message, f"{where}: message does not say how to pass a checkpoint: {message!r}"
        assert f"{BACKBONE}.{TAG}" in message, message
        assert error["cause"] == "LocalEntryNotFoundError", error
    # Nothing reached the cache (no download happened).
    assert not [p for p in hf_home.rglob("*") if p.is_file()], sorted(hf_home.rglob("*"))
