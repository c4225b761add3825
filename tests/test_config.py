"""padim_repro.config: validation of every field (one-line messages naming the field) and device resolution."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from padim_repro.config import PadimConfig, resolve_device
from padim_repro.scoring import anomaly_maps

#: The fields and defaults (the paper's protocol); validation must not change them.
DEFAULTS = {
    "backbone": "resnet18",
    "layers": ("layer1", "layer2", "layer3"),
    "d": None,
    "seed": 1024,
    "epsilon": 0.01,
    "sigma": 4.0,
    "resize": 256,
    "crop": 224,
    "interpolation": "bicubic",
    "weights": "tv_in1k",
    "batch_size": 8,
    "device": "auto",
    # tiling (padim_repro.tiling), off by default: the paper's protocol
    "tile": None,
    "stride": None,
    "image_size": None,
}


def _refused(field: str, **kwargs: object) -> str:
    """The message of the ValueError that ``PadimConfig(**kwargs)`` raises; it must be one line naming ``field``."""
    with pytest.raises(ValueError) as info:
        PadimConfig(**kwargs)
    msg = str(info.value)
    assert "\n" not in msg and field in msg, msg
    return msg


def test_fields_and_defaults_unchanged() -> None:
    config = PadimConfig()
    assert {f.name: getattr(config, f.name) for f in dataclasses.fields(config)} == DEFAULTS
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sigma = 2.0  # type: ignore[misc]


def test_dict_round_trip_unchanged() -> None:
    config = PadimConfig(d=0, seed=3, sigma=0, epsilon=1, layers=["layer2"], device="cuda:1", batch_size=4)
    assert config.layers == ("layer2",)
    assert PadimConfig.from_dict(config.to_dict()) == config


# -- sigma ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sigma", [math.inf, -math.inf, math.nan, -1.0, pytest.param(10**400, id="10**400"), "x", None, True]
)
def test_sigma_must_be_a_finite_number(sigma: object) -> None:
    """``--sigma inf`` used to pass and crash later with a traceback."""
    msg = _refused("sigma", sigma=sigma)
    assert msg.startswith("sigma must be a finite number")


def test_sigma_blur_radius_must_fit_the_anomaly_map() -> None:
    """The radius int(4 * sigma + 0.5) must be smaller than the map (the crop); the message gives the bound."""
    crop = 56
    limit = (crop - 0.5) / 4  # 13.875: int(4 * 13.875 + 0.5) = 56, one too many
    for sigma in (limit, 20.0, 1e308):
        msg = _refused("sigma", sigma=sigma, resize=64, crop=crop)
        assert msg.startswith("sigma must be < 13.875") and "--sigma" in msg and "--crop" in msg
    largest = math.nextafter(limit, 0)
    assert int(4 * largest + 0.5) == crop - 1
    config = PadimConfig(sigma=largest, resize=64, crop=crop)
    maps = anomaly_maps(torch.rand(2, 14, 14, dtype=torch.float64), crop, config.sigma)  # the blur accepts it
    assert maps.shape == (2, crop, crop) and torch.isfinite(maps).all()
    PadimConfig(sigma=0, resize=1, crop=1)  # no blur fits any map


# -- epsilon --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("epsilon", [math.nan, math.inf, 0, 0.0, -0.01, "x", None])
def test_epsilon_must_be_finite_and_positive(epsilon: object) -> None:
    """NaN used to pass and fail later with a misleading "use epsilon > 0"; 0 fails on rank-deficient covariances."""
    msg = _refused("epsilon", epsilon=epsilon)
    assert msg.startswith("epsilon must be a finite number > 0") and "--epsilon" in msg


# -- integers and names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", -1), ("seed", 1.5), ("seed", "1"), ("seed", True), ("seed", None),
        ("resize", 0), ("resize", 25.6), ("crop", 0), ("crop", -4),
        ("batch_size", 0), ("batch_size", "8"),
        ("d", -1), ("d", 2.5), ("d", "abc"),
    ],
)  # fmt: skip
def test_integer_fields(field: str, value: object) -> None:
    kwargs = {field: value, **({"resize": 300} if field == "crop" else {})}
    msg = _refused(field, **kwargs)
    assert msg.startswith(f"{field} must be an integer >= ")
    assert ("--" + field.replace("_", "-")) in msg  # the option as the command line spells it


def test_crop_must_not_exceed_resize() -> None:
    assert "--crop" in _refused("crop", resize=64, crop=80)
    PadimConfig(resize=64, crop=64)


@pytest.mark.parametrize(("field", "value"), [("backbone", ""), ("backbone", None), ("backbone", 18),
                                              ("weights", ""), ("weights", "  "), ("weights", None)])  # fmt: skip
def test_backbone_and_weights_must_be_non_empty_strings(field: str, value: object) -> None:
    assert _refused(field, **{field: value}).startswith(f"{field} must be a non-empty string")


@pytest.mark.parametrize("layers", ["layer1", (), ["layer1", ""], [1, 2], 3])
def test_layers_must_be_a_list_of_names(layers: object) -> None:
    _refused("layers", layers=layers)


@pytest.mark.parametrize("interpolation", ["cubic", None, 3])
def test_interpolation_must_be_known(interpolation: object) -> None:
    _refused("interpolation", interpolation=interpolation)


# -- device ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_spellings_accepted(device: str) -> None:
    assert PadimConfig(device=device).device == device


@pytest.mark.parametrize("device", ["gpu", "", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cpu:0", None])
def test_device_spelling_refused(device: object) -> None:
    assert "--device" in _refused("device", device=device)


def test_resolve_device_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError) as info:
        resolve_device("cuda")
    assert str(info.value) == "device 'cuda' was asked for but no CUDA device is available; use --device cpu or auto"
    with pytest.raises(ValueError, match="device 'cuda:0' was asked for but no CUDA device"):
        resolve_device("cuda:0")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu")


def test_resolve_device_index_beyond_the_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError) as info:
        resolve_device("cuda:2")
    msg = str(info.value)
    assert "\n" not in msg and "'cuda:2'" in msg and "2 CUDA device" in msg and "--device" in msg


# -- from_dict ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [("d", "abc"), ("sigma", "x"), ("epsilon", None), ("seed", "1"), ("layers", 3), ("layers", "layer1"),
     ("batch_size", "8"), ("resize", 25.6), ("crop", None), ("device", 0), ("backbone", None), ("weights", 1),
     ("interpolation", ["bicubic"])],
)  # fmt: skip
def test_from_dict_wrong_types_name_the_field(field: str, value: object) -> None:
    """Model files are read back with from_dict: a wrong type is a ValueError naming the field, not a TypeError."""
    data = {**PadimConfig().to_dict(), field: value}
    with pytest.raises(ValueError) as info:
        PadimConfig.from_dict(data)
    assert field in str(info.value) and "\n" not in str(info.value)


def test_from_dict_needs_a_dict() -> None:
    with pytest.raises(ValueError, match="dict"):
        PadimConfig.from_dict(["sigma", 4.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown PadimConfig fields"):
        PadimConfig.from_dict({"sigmaa": 4.0})
