"""Shared fixtures: a small synthetic MVTec-layout data root, a fast config, and the paths of the real data.

The real data (MVTec AD categories and ImageNet ResNet-18 weights) live in ``../shared`` beside the repository
root; tests that need them are skipped, with the missing path in the reason, when they are absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from padim_repro.config import PadimConfig
from padim_repro.study.synthetic import make_synthetic_category

# Keep the unit suite light on a small shared machine.
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SHARED_MVTEC = SHARED / "mvtec_ad"
SHARED_WEIGHTS = SHARED / "weights" / "resnet18-imagenet-conv1-to-layer3-bnfolded.pth"

#: The paper's ResNet layers.
R18_LAYERS = ("layer1", "layer2", "layer3")

#: Names of the synthetic categories written by the ``synthetic_root`` fixture.
RGB_CATEGORY = "synthetic"
GRAY_CATEGORY = "synthetic_gray"
SYNTHETIC_SIZE = 64


def _missing(*paths: Path) -> list[str]:
    return [str(p) for p in paths if not p.exists()]


def requires(*paths: Path) -> pytest.MarkDecorator:
    """Skip marker for tests that need ``paths``; the reason names each missing one."""
    missing = _missing(*paths)
    return pytest.mark.skipif(bool(missing), reason=f"shared data not found: {', '.join(missing)}")


#: Needs the real MVTec AD categories and the ImageNet ResNet-18 checkpoint.
requires_shared = requires(SHARED_MVTEC, SHARED_WEIGHTS)
#: Needs only the ImageNet ResNet-18 checkpoint.
requires_shared_weights = requires(SHARED_WEIGHTS)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with one RGB and one grayscale synthetic category (64x64, 10 train, 4 good + 6 defect test).

    Session-scoped and shared: tests must not modify it (copy it first, see ``synthetic_copy``).
    """
    root = tmp_path_factory.mktemp("synthetic_mvtec")
    make_synthetic_category(root, RGB_CATEGORY, size=SYNTHETIC_SIZE, seed=0)
    make_synthetic_category(root, GRAY_CATEGORY, size=SYNTHETIC_SIZE, grayscale=True, seed=1)
    return root


@pytest.fixture
def synthetic_copy(tmp_path: Path) -> Path:
    """A private, modifiable data root holding one fresh RGB synthetic category (for the bad-input tests)."""
    make_synthetic_category(tmp_path, RGB_CATEGORY, n_train=3, n_test_good=1, n_test_defect=1, size=32, seed=0)
    return tmp_path


@pytest.fixture
def small_config() -> PadimConfig:
    """PaDiM-R18-Rd100 on 64 px images with random weights, on CPU: fast and fully deterministic."""
    return PadimConfig(resize=64, crop=56, weights="none", batch_size=8, device="cpu")


@pytest.fixture(scope="session")
def resnet18_state() -> dict[str, torch.Tensor]:
    """State dict of a complete random timm resnet18 (with layer4 and fc), with non-trivial batch-norm buffers."""
    with torch.random.fork_rng():
        torch.manual_seed(123)
        model = timm.create_model("resnet18", pretrained=False)
    # give the batch norms non-trivial statistics so that a mix-up of buffers would show
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn_like(buf) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand_like(buf) + 0.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


def partial_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without layer4 and fc: what a conv1..layer3 checkpoint (like the shared one) holds."""
    return {k: v for k, v in state.items() if not k.startswith(("layer4.", "fc."))}


def save_state(state: object, path: Path) -> Path:
    """``torch.save`` ``state`` to ``path``; returns the path."""
    torch.save(state, path)
    return path
