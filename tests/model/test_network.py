import math

import pytest
import torch
from torch import nn

from autoseg.model.builders import build_network
from autoseg.model.builders import count_module_parameters as count_parameters
from autoseg.model.unet import ConvNormAct, InstanceNorm, ResidualBlock, SegmentationNetwork
from autoseg.plans.network import NetworkConfig


def config_2d(**overrides) -> NetworkConfig:
    values = dict(
        architecture="unet",
        dimension=2,
        features_per_stage=[4, 8, 8, 8],
        kernel_sizes=[[3, 3]] * 4,
        strides=[[1, 1], [2, 2], [2, 2], [2, 2]],
        n_blocks_per_stage_encoder=[2, 2, 2, 2],
        n_conv_per_stage_decoder=[2, 2, 2],
    )
    values.update(overrides)
    return NetworkConfig(**values)


def config_3d(**overrides) -> NetworkConfig:
    values = dict(
        architecture="unet",
        dimension=3,
        features_per_stage=[4, 8, 8, 8],
        kernel_sizes=[[3, 3, 3]] * 4,
        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        n_blocks_per_stage_encoder=[1, 1, 1, 1],
        n_conv_per_stage_decoder=[1, 1, 1],
    )
    values.update(overrides)
    return NetworkConfig(**values)


def config_anisotropic(**overrides) -> NetworkConfig:
    """Thick slices: z is not convolved in stages 0-1 and first pooled at stage 3."""
    values = dict(
        architecture="unet",
        dimension=3,
        features_per_stage=[4, 8, 8, 8, 8],
        kernel_sizes=[[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        strides=[[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
        n_blocks_per_stage_encoder=[1, 1, 1, 1, 1],
        n_conv_per_stage_decoder=[1, 1, 1, 1],
    )
    values.update(overrides)
    return NetworkConfig(**values)


def expected_shapes(batch: int, classes: int, spatial: tuple[int, ...], scales: list[list[float]]):
    return [(batch, classes, *(round(s * f) for s, f in zip(spatial, scale))) for scale in scales]


@pytest.mark.parametrize(
    ("make_config", "spatial", "scales"),
    [
        (config_2d, (32, 24), [[1.0, 1.0], [0.5, 0.5]]),
        (config_3d, (16, 16, 8), [[1.0, 1.0, 1.0], [0.5, 0.5, 0.5]]),
        (config_anisotropic, (4, 16, 32), [[1.0, 1.0, 1.0], [1.0, 0.5, 0.5], [1.0, 0.25, 0.25]]),
    ],
)
@pytest.mark.parametrize("architecture", ["unet", "residual_encoder_unet"])
def test_output_shapes_and_scales(make_config, spatial, scales, architecture):
    torch.manual_seed(0)
    net = build_network(make_config(architecture=architecture), in_channels=2, num_classes=3)
    x = torch.randn(2, 2, *spatial)

    assert net.deep_supervision is True
    assert net.output_scales() == scales
    outputs = net(x)
    assert isinstance(outputs, list)
    assert [tuple(o.shape) for o in outputs] == expected_shapes(2, 3, spatial, scales)

    net.deep_supervision = False
    assert net.output_scales() == [[1.0] * len(spatial)]
    out = net(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 3, *spatial)
    torch.testing.assert_close(out, outputs[0])


def test_anisotropic_kernels_and_strides_are_per_axis():
    net = build_network(config_anisotropic(), in_channels=1, num_classes=2)
    first_conv = net.encoder[0][0][0]
    assert first_conv.kernel_size == (1, 3, 3) and first_conv.padding == (0, 1, 1)
    stage1_conv = net.encoder[1][0][0]
    assert stage1_conv.stride == (1, 2, 2)
    stage3_conv = net.encoder[3][0][0]
    assert stage3_conv.stride == (2, 2, 2) and stage3_conv.padding == (1, 1, 1)
    # decoder[j] works at level n - 2 - j; its upsampling undoes the stride of the level below
    assert net.decoder[0].upsample.kernel_size == (2, 2, 2)
    assert net.decoder[-1].upsample.kernel_size == (1, 2, 2)
    assert net.decoder[-1].upsample.stride == (1, 2, 2)
    assert not any(isinstance(m, (nn.MaxPool3d, nn.AvgPool3d)) for m in net.modules())


def test_deep_supervision_list_length_follows_stage_count():
    # two stages: the only decoder stage is the full-resolution one -> one output
    two = config_2d(features_per_stage=[4, 8], kernel_sizes=[[3, 3]] * 2, strides=[[1, 1], [2, 2]],
                    n_blocks_per_stage_encoder=[1, 1], n_conv_per_stage_decoder=[1])
    net = build_network(two, 1, 2)
    outputs = net(torch.randn(1, 1, 8, 8))
    assert len(outputs) == 1 and net.output_scales() == [[1.0, 1.0]]
    # five stages: four decoder stages, the deepest one unsupervised -> three outputs
    assert len(build_network(config_anisotropic(), 1, 2).output_scales()) == 3


def test_deep_supervision_flag_from_config_and_lower_heads_skipped():
    net = build_network(config_2d(deep_supervision=False), 1, 2)
    assert net.deep_supervision is False
    called = []
    for level, head in enumerate(net.heads):
        head.register_forward_hook(lambda module, inputs, output, level=level: called.append(level))
    out = net(torch.randn(1, 1, 16, 16))
    assert isinstance(out, torch.Tensor)
    assert called == [0]
    # the heads exist whatever the flag, so checkpoints load in both modes
    assert set(net.state_dict()) == set(build_network(config_2d(deep_supervision=True), 1, 2).state_dict())


@pytest.mark.parametrize("architecture", ["unet", "residual_encoder_unet"])
def test_all_parameters_get_gradients(architecture):
    torch.manual_seed(0)
    net = build_network(config_anisotropic(architecture=architecture), 1, 3)
    # bottleneck 2x2x2: instance norm over a single voxel would give zero gradients
    outputs = net(torch.randn(2, 1, 8, 32, 32))
    sum(o.square().mean() for o in outputs).backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_residual_encoder_structure():
    config = config_3d(architecture="residual_encoder_unet", n_blocks_per_stage_encoder=[1, 2, 2, 2])
    net = build_network(config, 1, 2)
    stem, first = net.encoder[0][0], net.encoder[0][1]
    assert isinstance(stem, ConvNormAct) and isinstance(first, ResidualBlock)
    assert isinstance(first.skip, nn.Identity)  # 4 -> 4 channels, stride 1
    down = net.encoder[1][0]
    assert isinstance(down, ResidualBlock) and down.conv1.stride == (2, 2, 2)
    projection = down.skip[0]
    assert projection.kernel_size == (1, 1, 1) and projection.stride == (2, 2, 2)
    assert isinstance(net.encoder[1][1].skip, nn.Identity)
    assert sum(isinstance(m, ResidualBlock) for m in net.encoder.modules()) == 7
    assert not any(isinstance(m, ResidualBlock) for m in net.decoder.modules())


def test_channels_last_and_autocast():
    torch.manual_seed(0)
    net = build_network(config_3d(), 1, 2)
    x = torch.randn(2, 1, 16, 16, 16)  # batch 1: torch's 3D conv returns contiguous outputs
    reference = net(x)
    net_cl = build_network(config_3d(), 1, 2)
    net_cl.load_state_dict(net.state_dict())
    net_cl = net_cl.to(memory_format=torch.channels_last_3d)
    features = []
    net_cl.decoder[-1].register_forward_hook(lambda module, inputs, output: features.append(output))
    outputs = net_cl(x.to(memory_format=torch.channels_last_3d))
    for out, ref in zip(outputs, reference):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # the memory format survives norms and concatenations (torch may still pick a
    # contiguous layout for the tiny 1x1 heads, depending on the thread count)
    assert features[0].is_contiguous(memory_format=torch.channels_last_3d)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = net(x)
    assert low[0].dtype == torch.bfloat16
    assert [o.shape for o in low] == [o.shape for o in reference]
    sum(o.float().mean() for o in low).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_weight_init_and_norm():
    net = build_network(config_3d(features_per_stage=[32, 64, 64, 64]), 1, 2)
    conv = net.encoder[1][0][0]  # 32 -> 64 channels, 3x3x3: fan_in = 864
    expected_std = math.sqrt(2.0 / ((1 + 0.01**2) * 32 * 27))
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert conv.bias is None  # a bias in front of instance norm would be cancelled
    for module in net.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)) and module.bias is not None:
            assert torch.all(module.bias == 0)
    norm = net.encoder[0][0][1]
    assert isinstance(norm, InstanceNorm) and norm.eps == 1e-5
    # same result as torch's affine instance norm
    x = torch.randn(2, 32, 5, 6, 7)
    with torch.no_grad():
        norm = InstanceNorm(32)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
        reference = nn.functional.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=1e-5)
        torch.testing.assert_close(norm(x), reference, atol=1e-5, rtol=1e-5)


def test_count_parameters_by_hand():
    config = config_2d(features_per_stage=[2, 4], kernel_sizes=[[3, 3]] * 2, strides=[[1, 1], [2, 2]],
                       n_blocks_per_stage_encoder=[1, 1], n_conv_per_stage_decoder=[1])
    net = build_network(config, in_channels=1, num_classes=2)
    expected = (
        1 * 2 * 9 + 2 * 2  # stage 0 conv (no bias) + norm
        + 2 * 4 * 9 + 2 * 4  # stage 1 conv + norm
        + 4 * 2 * 4 + 2  # transposed conv 2x2 with bias
        + 4 * 2 * 9 + 2 * 2  # decoder conv on the concatenation + norm
        + 2 * 2 + 2  # 1x1 head with bias
    )
    assert count_parameters(net) == expected == 218
    assert isinstance(net, SegmentationNetwork)


def test_input_not_divisible_by_total_stride_is_rejected():
    net = build_network(config_2d(), 1, 2)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 1, 20, 16))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"architecture": "vnet"}, "unknown architecture"),
        ({"dimension": 4}, "dimension"),
        ({"kernel_sizes": [[3, 3]] * 3}, "one entry per stage"),
        ({"n_conv_per_stage_decoder": [2, 2, 2, 2]}, "n_stages - 1"),
        ({"strides": [[2, 2], [2, 2], [2, 2], [2, 2]]}, "strides\\[0\\]"),
        ({"strides": [[1, 1], [2, 2, 2], [2, 2], [2, 2]]}, "per-axis"),
        ({"kernel_sizes": [[3, 3], [2, 2], [3, 3], [3, 3]]}, "odd"),
        ({"strides": [[1, 1], [0, 2], [2, 2], [2, 2]]}, "strides must be 1..4"),
        ({"features_per_stage": [4, 0, 8, 8]}, "features_per_stage"),
        ({"n_blocks_per_stage_encoder": [2, 0, 2, 2]}, "integers 1..16"),
        ({"negative_slope": -0.1}, "negative_slope"),
        ({"features_per_stage": [4], "kernel_sizes": [[3, 3]], "strides": [[1, 1]],
          "n_blocks_per_stage_encoder": [2], "n_conv_per_stage_decoder": []}, "needs 2 to 12 stages"),
    ],
)
def test_invalid_config_is_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_network(config_2d(**overrides), 1, 2)


def test_invalid_channels_are_rejected():
    with pytest.raises(ValueError, match="in_channels"):
        build_network(config_2d(), 0, 2)
    with pytest.raises(ValueError, match="num_classes"):
        build_network(config_2d(), 1, 0)
