"""CPU inference backends: ONNX Runtime and OpenVINO give the torch network's logits; auto picks the fastest."""

from __future__ import annotations

import json

import pytest
import torch

from autoseg.errors import AutosegInputError
from autoseg.inference.backends import BACKENDS, choose_backend, exported_onnx, get_backend
from autoseg.model.builders import build_network
from autoseg.plans.network import NetworkConfig


def tiny_network(dimension: int = 3, stages: int = 3) -> torch.nn.Module:
    features = [4, 8, 16, 16, 16, 16, 16][:stages]
    config = NetworkConfig(architecture="unet", dimension=dimension, features_per_stage=features,
                           kernel_sizes=[[3] * dimension] * stages,
                           strides=[[1] * dimension] + [[2] * dimension] * (stages - 1),
                           n_blocks_per_stage_encoder=[1] * stages, n_conv_per_stage_decoder=[1] * (stages - 1))
    torch.manual_seed(0)
    network = build_network(config, 2, 3)
    network.deep_supervision = False
    return network.eval()


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("dimension", [2, 3])
def test_exported_backends_give_the_torch_logits_for_any_window(name, dimension, tmp_path, monkeypatch):
    pytest.importorskip(name)
    pytest.importorskip("onnx")
    monkeypatch.setenv("AUTOSEG_CACHE", str(tmp_path))
    network = tiny_network(dimension)
    run = get_backend(name).prepare(network, 2, dimension)
    for shape in ([1, 2] + [16] * dimension, [2, 2] + [24, 32, 16][:dimension]):
        x = torch.randn(shape)
        with torch.no_grad():
            expected = network(x)
        assert torch.allclose(run(x), expected, atol=1e-4)
    assert exported_onnx(network, 2, dimension).is_file()  # cached: exported once per network


def test_a_deep_network_is_traced_with_an_input_its_downsampling_divides(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv("AUTOSEG_CACHE", str(tmp_path))
    network = tiny_network(2, stages=7)  # total downsampling 64 per axis: a 32x32 example cannot pass
    run = get_backend("onnxruntime").prepare(network, 2, 2)
    x = torch.randn(1, 2, 128, 192)
    with torch.no_grad():
        assert torch.allclose(run(x), network(x), atol=1e-4)


def test_auto_measures_once_and_picks_the_fastest(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOSEG_CACHE", str(tmp_path))
    network = tiny_network()
    best, timings, reason = choose_backend(network, 2, [16, 16, 16])
    available = [name for name in BACKENDS.names() if BACKENDS.get(name).available()]
    assert set(timings) == set(available) and best == min(timings, key=timings.get)
    assert "measured now" in reason
    cached = json.loads((tmp_path / "backend_speed.json").read_text())
    assert list(cached.values())[0] == timings
    assert "measured before" in choose_backend(network, 2, [16, 16, 16])[2]


def test_the_command_line_offers_every_registered_backend_and_auto():
    from autoseg.commands.predict import BACKEND_CHOICES

    assert sorted(BACKEND_CHOICES) == sorted([*BACKENDS.names(), "auto"])


def test_a_missing_backend_library_is_a_one_line_error_naming_the_extra(monkeypatch):
    monkeypatch.setattr(BACKENDS.get("openvino"), "available", lambda: False)
    with pytest.raises(AutosegInputError, match=r"the openvino backend needs openvino: pip install 'autoseg\[fast\]'"):
        get_backend("openvino")
