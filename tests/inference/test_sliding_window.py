"""Tests for autoseg.inference.sliding_window (fake networks, CPU only, fast)."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from torch import nn

from autoseg.inference.sliding_window import (
    SlidingWindowOptions,
    gaussian_importance_map,
    predict_sliding_window,
    predict_sliding_window_per_mirroring,
    predict_volume_with_2d_network,
    predict_volume_with_2d_network_per_mirroring,
    sliding_window_starts,
)
from autoseg.preprocessing.neighbour_slices import stack_neighbour_slices


@pytest.fixture(autouse=True)
def _single_thread():
    """Many tiny tensor ops: intra-op threads only add synchronisation cost (and are
    slow on shared CPUs), so run these tests single-threaded."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --------------------------------------------------------------------------- fake networks


class OneHotNet(nn.Module):
    """Logit k = 30 * (input == k): softmax is (almost exactly) one-hot of an integer input."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(self.num_classes, dtype=x.dtype).view(1, -1, *([1] * (x.ndim - 2)))
        return 30.0 * (x == classes).to(x.dtype)


class ConstantNet(nn.Module):
    """Same logits at every voxel, whatever the input."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0], self.logits.numel(), *x.shape[2:])
        return self.logits.view(1, -1, *([1] * (x.ndim - 2))).expand(shape).clone()


class PositionalNet(nn.Module):
    """Logits = a_k * input + a fixed random function of the position inside the patch,
    so the network is not mirror-symmetric."""

    def __init__(self, num_classes: int, patch: tuple[int, ...], seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.scale = torch.randn(num_classes, generator=gen).view(1, -1, *([1] * len(patch)))
        self.pos = torch.randn((1, num_classes, *patch), generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x[:, :1] + self.pos


def pointwise_net(in_channels: int, num_classes: int, seed: int = 0) -> nn.Module:
    """1x1 conv: output at a voxel depends on that voxel only, so stitching is exact."""
    torch.manual_seed(seed)
    return nn.Conv3d(in_channels, num_classes, kernel_size=1).eval()


def conv_net(
    ndim: int, in_channels: int, num_classes: int, seed: int = 0, symmetric: bool = False
) -> nn.Module:
    """Small conv net with zero padding, so its output depends on the window position."""
    conv = nn.Conv3d if ndim == 3 else nn.Conv2d
    torch.manual_seed(seed)
    net = nn.Sequential(
        conv(in_channels, 4, 3, padding=1), nn.LeakyReLU(), conv(4, num_classes, 3, padding=1)
    ).eval()
    if symmetric:  # kernels symmetric under every flip -> the network is flip-equivariant
        with torch.no_grad():
            for layer in (net[0], net[2]):
                w = layer.weight
                dims = list(range(2, w.ndim))
                sym = sum(torch.flip(w, list(c)) for r in range(len(dims) + 1)
                          for c in itertools.combinations(dims, r))
                w.copy_(sym)
    return net


def integer_image(shape: tuple[int, ...], num_classes: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_classes, shape, generator=gen).float()


def whole_image_probs(net: nn.Module, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(net(image[None]), dim=1)[0]


# --------------------------------------------------------------------------- window starts


@pytest.mark.parametrize(
    ("image", "patch", "step", "expected"),
    [
        (10, 10, 0.5, [0]),
        (20, 10, 0.5, [0, 5, 10]),
        (21, 10, 0.5, [0, 4, 7, 11]),  # ceil(11 / 5) + 1 = 4 windows, step 11/3
        (37, 16, 0.5, [0, 7, 14, 21]),
        (100, 64, 0.5, [0, 18, 36]),
        (30, 10, 1.0, [0, 10, 20]),
        (31, 10, 1.0, [0, 7, 14, 21]),
        (3, 1, 0.5, [0, 1, 2]),  # patch * step < 1: 5 rounded positions, repeats dropped
    ],
)
def test_starts_expected(image: int, patch: int, step: float, expected: list[int]) -> None:
    assert sliding_window_starts([image], [patch], step) == [expected]


@pytest.mark.parametrize("step", [0.25, 0.5, 0.7, 1.0])
def test_starts_cover_image_exactly(step: float) -> None:
    for patch in (1, 7, 16, 33):
        for image in range(patch, patch * 5 + 3):
            (starts,) = sliding_window_starts([image], [patch], step)
            assert starts[0] == 0
            assert starts[-1] + patch == image
            if patch * step >= 1:
                assert len(starts) == math.ceil((image - patch) / (patch * step)) + 1
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            assert all(0 < g <= math.ceil(patch * step) for g in gaps)  # no holes, no repeats


def test_starts_multi_axis_and_errors() -> None:
    assert sliding_window_starts((40, 56, 40), (40, 56, 40)) == [[0], [0], [0]]
    assert sliding_window_starts((20, 10), (10, 10)) == [[0, 5, 10], [0]]
    with pytest.raises(ValueError):
        sliding_window_starts((9,), (10,))
    with pytest.raises(ValueError):
        sliding_window_starts((20,), (10,), step_size=0.0)
    with pytest.raises(ValueError):
        sliding_window_starts((20, 20), (10,))


# --------------------------------------------------------------------------- importance map


def test_gaussian_map_properties() -> None:
    g = gaussian_importance_map((9, 12, 7))
    assert g.shape == (9, 12, 7) and g.dtype == torch.float32
    assert g.max().item() == pytest.approx(1.0)
    assert g.min().item() > 0
    assert g[4, 5, 3] == g.max()  # centred (centre is between voxels 5 and 6 on the even axis)
    for dim in range(3):
        torch.testing.assert_close(g, torch.flip(g, [dim]), rtol=0, atol=0)
    assert gaussian_importance_map([9, 12, 7]) is g  # cached
    # A very narrow Gaussian underflows at the border: never weight 0 there.
    narrow = gaussian_importance_map((64, 64), sigma_scale=0.01)
    assert narrow.min().item() > 0


# --------------------------------------------------------------------------- reconstruction


@pytest.mark.parametrize("use_gaussian", [True, False])
@pytest.mark.parametrize(
    "shape",
    [
        (1, 23, 37, 29),  # odd sizes, not multiples of the patch
        (1, 5, 37, 9),  # smaller than the patch on two axes (padding)
        (1, 3, 5, 4),  # smaller than the patch on every axis
    ],
)
def test_one_hot_network_reconstructs_input(shape: tuple[int, ...], use_gaussian: bool) -> None:
    num_classes = 4
    image = integer_image(shape, num_classes)
    net = OneHotNet(num_classes)
    probs = predict_sliding_window(net, image, num_classes,
                                   SlidingWindowOptions((8, 16, 12), use_gaussian=use_gaussian))
    assert probs.shape == (num_classes, *shape[1:]) and probs.dtype == torch.float32
    assert torch.equal(probs.argmax(0), image[0].long())
    torch.testing.assert_close(probs, whole_image_probs(net, image))


@pytest.mark.parametrize("shape", [(2, 19, 21, 17), (2, 6, 21, 5)])
def test_pointwise_network_matches_whole_image(shape: tuple[int, ...]) -> None:
    image = torch.randn(shape)
    net = pointwise_net(2, 3)
    probs = predict_sliding_window(net, image, 3, SlidingWindowOptions((8, 10, 8), step_size=0.5))
    torch.testing.assert_close(probs, whole_image_probs(net, image))
    torch.testing.assert_close(probs.sum(0), torch.ones(shape[1:]))


def test_2d_image_with_2d_patch() -> None:
    image = integer_image((1, 33, 27), 3)
    net = OneHotNet(3)
    probs = predict_sliding_window(net, image, 3, SlidingWindowOptions((16, 16), mirror_axes=(0, 1)))
    assert torch.equal(probs.argmax(0), image[0].long())


@pytest.mark.parametrize("use_gaussian", [True, False])
def test_constant_logits_give_uniform_probabilities(use_gaussian: bool) -> None:
    logits = torch.tensor([0.3, -1.2, 2.0])
    shape = (1, 21, 30, 17)
    probs = predict_sliding_window(ConstantNet(logits), torch.randn(shape), 3,
                                   SlidingWindowOptions((8, 12, 16), use_gaussian=use_gaussian, step_size=0.33))
    expected = torch.softmax(logits, 0).view(3, 1, 1, 1).expand(3, *shape[1:])
    torch.testing.assert_close(probs, expected)  # no darkening at borders or window edges


# --------------------------------------------------------------------------- mirroring


def test_mirroring_gives_symmetric_output_for_symmetric_input() -> None:
    patch = (16, 12, 12)
    shape = (1, 24, 20, 12)  # window starts [0, 8], [0, 4, 8], [0]: placed symmetrically
    image = torch.randn(shape)
    image = image + torch.flip(image, [1])
    image = image + torch.flip(image, [3])  # symmetric along spatial axes 0 and 2
    net = PositionalNet(3, patch)

    plain = predict_sliding_window(net, image, 3, SlidingWindowOptions(patch))
    assert not torch.allclose(plain, torch.flip(plain, [1]), atol=1e-3)  # the test is meaningful

    probs = predict_sliding_window(net, image, 3, SlidingWindowOptions(patch, mirror_axes=(0, 2)))
    torch.testing.assert_close(probs, torch.flip(probs, [1]))
    torch.testing.assert_close(probs, torch.flip(probs, [3]))
    torch.testing.assert_close(probs.sum(0), torch.ones(shape[1:]))


def test_mirroring_equivariant_network_changes_nothing() -> None:
    image = torch.randn(1, 13, 18, 14)  # 2 x 2 x 2 windows
    net = conv_net(3, 1, 3, symmetric=True)
    plain = predict_sliding_window(net, image, 3, SlidingWindowOptions((8, 12, 10)))
    mirrored = predict_sliding_window(net, image, 3, SlidingWindowOptions((8, 12, 10), mirror_axes=(0, 1, 2)))
    torch.testing.assert_close(mirrored, plain)


def test_several_mirroring_settings_at_once_equal_one_run_each() -> None:
    """Shared flip passes feed every setting that holds them; each result is that setting's own run."""
    image = torch.randn(1, 13, 18, 14)
    net = PositionalNet(3, (8, 12, 10))
    settings = [None, (0,), (1,), (2,), (0, 1, 2)]
    calls = []
    counting = lambda x: calls.append(1) or net(x)  # noqa: E731
    together = predict_sliding_window_per_mirroring(counting, image, 3,
                                                    SlidingWindowOptions((8, 12, 10), window_batch_size=2), settings)
    passes_of_all_settings = len(calls)
    calls.clear()
    predict_sliding_window(counting, image, 3,
                           SlidingWindowOptions((8, 12, 10), mirror_axes=(0, 1, 2), window_batch_size=2))
    assert passes_of_all_settings == len(calls)  # no mirroring and single axes add no network pass to all axes
    for axes, probs in zip(settings, together, strict=True):
        torch.testing.assert_close(probs, predict_sliding_window(net, image, 3,
                                                                 SlidingWindowOptions((8, 12, 10), mirror_axes=axes)))
    volume = torch.randn(1, 5, 18, 14)
    net_2d = PositionalNet(3, (12, 10))
    settings_2d = [None, (1,), (0, 1)]
    together_2d = predict_volume_with_2d_network_per_mirroring(net_2d, volume, 3, SlidingWindowOptions((12, 10)),
                                                               settings_2d)
    for axes, probs in zip(settings_2d, together_2d, strict=True):
        torch.testing.assert_close(probs, predict_volume_with_2d_network(
            net_2d, volume, 3, SlidingWindowOptions((12, 10), mirror_axes=axes)))


def test_mirror_settings_replace_options_mirror_axes() -> None:
    options = SlidingWindowOptions([8, 8, 8], mirror_axes=[0])
    assert options.patch_size == (8, 8, 8) and options.mirror_axes == (0,)  # normalised to int tuples
    with pytest.raises(ValueError, match="mirror_axes must be None"):  # ambiguous: which axes?
        predict_sliding_window_per_mirroring(OneHotNet(2), torch.zeros(1, 8, 8, 8), 2, options, [None])
    with pytest.raises(ValueError, match="mirror_axes must be None"):
        predict_volume_with_2d_network_per_mirroring(OneHotNet(2), torch.zeros(1, 2, 8, 8), 2,
                                                     SlidingWindowOptions((8, 8), mirror_axes=(1,)), [None])


def test_mirror_axes_validated() -> None:
    with pytest.raises(ValueError):
        predict_sliding_window(OneHotNet(2), torch.zeros(1, 8, 8, 8), 2,
                               SlidingWindowOptions((8, 8, 8), mirror_axes=(3,)))
    with pytest.raises(ValueError):
        predict_sliding_window(OneHotNet(2), torch.zeros(1, 8, 8, 8), 3, SlidingWindowOptions((8, 8, 8)))  # K mismatch


# --------------------------------------------------------------------------- batching, devices


def test_window_batch_size_does_not_change_result() -> None:
    image = torch.randn(2, 15, 23, 19)
    net = conv_net(3, 2, 3)
    one = predict_sliding_window(net, image, 3, SlidingWindowOptions((8, 10, 8), mirror_axes=(1,)))
    many = predict_sliding_window(net, image, 3,
                                  SlidingWindowOptions((8, 10, 8), mirror_axes=(1,), window_batch_size=5))
    torch.testing.assert_close(many, one)


def test_accumulation_device_cpu() -> None:
    image = torch.randn(1, 11, 14, 9)
    net = conv_net(3, 1, 2)
    probs = predict_sliding_window(
        net, image, 2, SlidingWindowOptions((8, 8, 8), device="cpu", accumulation_device="cpu", show_progress=False))
    assert probs.device.type == "cpu" and probs.dtype == torch.float32
    torch.testing.assert_close(probs, predict_sliding_window(net, image, 2, SlidingWindowOptions((8, 8, 8))))
    torch.testing.assert_close(probs.sum(0), torch.ones(image.shape[1:]))
    result = probs.clone()
    result[0] *= 2  # an ordinary tensor (not an inference-mode tensor): in-place ops work


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_network_cpu_accumulation() -> None:
    image = torch.randn(1, 11, 14, 9)
    net = conv_net(3, 1, 2)
    ref = predict_sliding_window(net, image, 2, SlidingWindowOptions((8, 8, 8)))
    probs = predict_sliding_window(net.cuda(), image, 2,
                                   SlidingWindowOptions((8, 8, 8), device="cuda", accumulation_device="cpu"))
    assert probs.device.type == "cpu"
    torch.testing.assert_close(probs, ref, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- 2D network on 3D volume


@pytest.mark.parametrize(
    ("shape", "mirror_axes"),
    [
        ((2, 5, 23, 19), (1,)),
        ((1, 3, 9, 23), (0, 1)),  # y smaller than the patch: padded
    ],
)
def test_2d_on_3d_matches_slice_loop(shape: tuple[int, ...], mirror_axes: tuple[int, ...]) -> None:
    image = torch.randn(shape)
    net = conv_net(2, shape[0], 3)
    patch = (12, 10)
    probs = predict_volume_with_2d_network(net, image, 3,
                                           SlidingWindowOptions(patch, mirror_axes=mirror_axes, slice_batch_size=2))
    by_hand = torch.stack(
        [
            predict_sliding_window(net, image[:, z], 3,
                                   SlidingWindowOptions(patch, mirror_axes=mirror_axes, window_batch_size=8))
            for z in range(shape[1])
        ],
        dim=1,
    )
    assert probs.shape == (3, *shape[1:])
    torch.testing.assert_close(probs, by_hand)


@pytest.mark.parametrize("padding", ["replicate", "zero"])
def test_2p5d_on_3d_matches_a_loop_over_stacked_slices(padding: str) -> None:
    shape, neighbours = (2, 5, 15, 11), 2
    image = torch.randn(shape)
    net = conv_net(2, shape[0] * (2 * neighbours + 1), 3)
    probs = predict_volume_with_2d_network(net, image, 3, SlidingWindowOptions(
        (12, 10), mirror_axes=(0, 1), slice_batch_size=2, neighbour_slices=neighbours, neighbour_slice_padding=padding))
    by_hand = torch.stack([
        predict_sliding_window(net, stack_neighbour_slices(image, z, neighbours, padding), 3,
                               SlidingWindowOptions((12, 10), mirror_axes=(0, 1), window_batch_size=8))
        for z in range(shape[1])], dim=1)
    torch.testing.assert_close(probs, by_hand)
    if padding == "zero":  # the ends differ from replicating: the network sees what it was given
        options = SlidingWindowOptions((12, 10), slice_batch_size=2, neighbour_slices=neighbours)
        other = predict_volume_with_2d_network(
            net, image, 3, dataclasses.replace(options, neighbour_slice_padding="replicate"))
        assert not torch.allclose(other[:, 0], predict_volume_with_2d_network(
            net, image, 3, dataclasses.replace(options, neighbour_slice_padding="zero"))[:, 0])


def test_2d_on_3d_batches_slices() -> None:
    calls: list[int] = []
    net = OneHotNet(3)

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return net(x)

    image = integer_image((1, 7, 16, 16), 3)
    probs = predict_volume_with_2d_network(counting, image, 3, SlidingWindowOptions((16, 16), slice_batch_size=4))
    assert calls == [4, 3]  # one window per slice, slices batched
    assert torch.equal(probs.argmax(0), image[0].long())


def test_autocast_on_cpu_runs() -> None:
    image = torch.randn(1, 13, 20, 11)
    net = conv_net(3, 1, 3)
    ref = predict_sliding_window(net, image, 3, SlidingWindowOptions((8, 16, 8)))
    probs = predict_sliding_window(net, image, 3, SlidingWindowOptions((8, 16, 8), autocast=True, show_progress=True))
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(0), torch.ones(image.shape[1:]))
    torch.testing.assert_close(probs, ref, atol=2e-2, rtol=0)  # bfloat16 on CPU


@pytest.mark.parametrize("shape", [(1, 5, 37, 9), (2, 3, 5, 4), (1, 8, 30, 12)])
def test_virtual_padding_equals_padding_the_image(shape: tuple[int, ...]) -> None:
    """Windows reaching outside the image see zeros, as if the image were padded (centred) to the patch."""
    image = torch.randn(shape)
    net = conv_net(3, shape[0], 3)
    patch = (8, 16, 12)
    padded_size = [max(s, p) for s, p in zip(shape[1:], patch)]
    before = [(p - s) // 2 for p, s in zip(padded_size, shape[1:])]
    crop = tuple(slice(b, b + s) for b, s in zip(before, shape[1:]))
    padded = image.new_zeros((shape[0], *padded_size))
    padded[(slice(None), *crop)] = image
    expected = predict_sliding_window(net, padded, 3,
                                      SlidingWindowOptions(patch, mirror_axes=(0, 2)))[(slice(None), *crop)]
    torch.testing.assert_close(predict_sliding_window(net, image, 3,
                                                      SlidingWindowOptions(patch, mirror_axes=(0, 2))), expected)


def test_half_precision_accumulation_matches_float32() -> None:
    image = torch.randn(2, 9, 30, 21)
    net = conv_net(3, 2, 4)
    full = predict_sliding_window(net, image, 4, SlidingWindowOptions((8, 16, 12), mirror_axes=(1,)))
    half = predict_sliding_window(net, image, 4,
                                  SlidingWindowOptions((8, 16, 12), mirror_axes=(1,), accumulation_dtype=torch.float16))
    assert half.dtype == torch.float16 and half.shape == full.shape
    torch.testing.assert_close(half.float(), full, atol=2e-3, rtol=0)
    net_2d = conv_net(2, 2, 4)
    slices = predict_volume_with_2d_network(net_2d, image, 4,
                                            SlidingWindowOptions((16, 12), accumulation_dtype=torch.float16))
    assert slices.dtype == torch.float16
    torch.testing.assert_close(slices.float(), predict_volume_with_2d_network(net_2d, image, 4,
                                                                              SlidingWindowOptions((16, 12))),
                               atol=2e-3, rtol=0)
