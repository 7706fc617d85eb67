import math

import pytest
import torch
import torch.nn.functional as F

from autoseg.model.builders import build_network
from autoseg.plans.network import NetworkConfig
from autoseg.training.loss import (
    DeepSupervisionLoss,
    DiceCELoss,
    SoftDiceLoss,
    deep_supervision_weights,
    downsample_target,
)


def confident_logits(labels: torch.Tensor, num_classes: int, margin: float = 30.0) -> torch.Tensor:
    """(B, *spatial) labels -> (B, K, *spatial) logits predicting them with near certainty."""
    onehot = F.one_hot(labels.long(), num_classes).movedim(-1, 1).float()
    return margin * onehot


def test_perfect_prediction_gives_zero_loss():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (2, 6, 7, 5))
    logits = confident_logits(labels, 3)
    for batch_dice in (True, False):
        dice = SoftDiceLoss(batch_dice=batch_dice)(logits, labels[:, None])
        assert dice.item() == pytest.approx(0.0, abs=1e-6)
    assert DiceCELoss()(logits, labels[:, None]).item() == pytest.approx(0.0, abs=1e-6)
    # (B, *spatial) targets are accepted as well
    assert DiceCELoss()(logits, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_wrong_prediction_gives_loss_near_one():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[:, :2] = 1
    logits = confident_logits(1 - labels, 2)  # everything swapped
    assert SoftDiceLoss()(logits, labels).item() == pytest.approx(1.0, abs=1e-6)


def test_uniform_logits_give_log_k_cross_entropy():
    k = 4
    labels = torch.tensor([[[0, 1], [2, 3]], [[1, 1], [1, 0]]])  # (B=2, y=2, x=2), N = 8 voxels
    logits = torch.zeros(2, k, 2, 2)
    ce_only = DiceCELoss(weight_dice=0.0, weight_ce=1.0)(logits, labels[:, None])
    assert ce_only.item() == pytest.approx(math.log(k), rel=1e-6)

    # Dice part by hand: p = 1/4 everywhere; class c with n_c voxels scores
    # (2 n_c / 4) / (8 / 4 + n_c); counts of classes 1..3: 4, 1, 1
    dice = [(2 * n / k) / (8 / k + n) for n in (4, 1, 1)]
    expected = math.log(k) + 0.5 * (1 - sum(dice) / 3)
    combined = DiceCELoss(weight_dice=0.5, weight_ce=1.0)(logits, labels[:, None])
    assert combined.item() == pytest.approx(expected, rel=1e-5)


def test_batch_dice_differs_from_per_sample_dice():
    # foreground (class 1) on a 1x8 strip per sample
    target = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]])[:, None, :]
    predicted = torch.tensor([[1, 1, 0, 0, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]])[:, None, :]
    logits = confident_logits(predicted, 2)  # (2, 2, 1, 8)
    # sample 0: |P∩G| = 2, |P| = |G| = 4 -> Dice 1/2; sample 1: perfect -> Dice 1
    per_sample = SoftDiceLoss(batch_dice=False)(logits, target[:, None])
    assert per_sample.item() == pytest.approx(1 - (0.5 + 1.0) / 2, abs=1e-5)  # 0.25
    # pooled over the batch: 2 * (2 + 2) / (6 + 6) = 2/3
    batch = SoftDiceLoss(batch_dice=True)(logits, target[:, None])
    assert batch.item() == pytest.approx(1 - 2 / 3, abs=1e-5)


def test_background_excluded_or_included():
    target = torch.tensor([[[1, 1, 0, 0]]])  # (B=1, y=1, x=4)
    logits = confident_logits(torch.tensor([[[1, 0, 0, 0]]]), 2)
    # foreground: |P∩G| = 1, |P| = 1, |G| = 2 -> 2/3; background: 2, 3, 2 -> 4/5
    excluded = SoftDiceLoss(include_background=False)(logits, target)
    included = SoftDiceLoss(include_background=True)(logits, target)
    assert excluded.item() == pytest.approx(1 - 2 / 3, abs=1e-5)
    assert included.item() == pytest.approx(1 - (2 / 3 + 4 / 5) / 2, abs=1e-5)
    with pytest.raises(ValueError, match="2 classes"):
        SoftDiceLoss()(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))


def test_target_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="does not match"):
        SoftDiceLoss()(torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 4, 5))


@pytest.mark.parametrize("smooth", [1e-5, 0.0])
@pytest.mark.parametrize("batch_dice", [True, False])
def test_empty_classes_finite_and_differentiable(smooth, batch_dice):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 5, 5, requires_grad=True)
    target = torch.zeros(2, 1, 3, 5, 5)  # float dtype, classes 1..3 absent
    target[0, 0, 1, 2, 2] = 2
    loss = DiceCELoss(batch_dice=batch_dice, smooth=smooth)(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_dice_under_autocast_is_float32():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 8, 8).bfloat16().requires_grad_()
    target = torch.randint(0, 3, (1, 1, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = DiceCELoss()(logits, target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad.float()).all()


def test_deep_supervision_weights():
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert deep_supervision_weights(1) == [1.0]
    assert sum(deep_supervision_weights(6)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        deep_supervision_weights(0)


def test_downsample_target_nearest_values():
    target = torch.arange(2 * 4 * 8 * 8).reshape(2, 1, 4, 8, 8)
    full, half, quarter = downsample_target(target, [[1, 1, 1], [1, 0.5, 0.5], [0.5, 0.25, 0.25]])
    assert full is target
    torch.testing.assert_close(half, target[:, :, :, ::2, ::2])
    torch.testing.assert_close(quarter, target[:, :, ::2, ::4, ::4])
    assert quarter.dtype == target.dtype
    # (B, *spatial) layout and a non-integer factor: voxel i <- floor(i * 6 / 4)
    (odd,) = downsample_target(torch.arange(6)[None], [[4 / 6]])
    assert odd.tolist() == [[0, 1, 3, 4]]


def test_downsampled_targets_match_network_outputs():
    config = NetworkConfig(
        architecture="unet",
        dimension=3,
        features_per_stage=[4, 4, 8, 8, 8],
        kernel_sizes=[[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [1, 2, 2], [2, 2, 2]],
        n_blocks_per_stage_encoder=[1] * 5,
        n_conv_per_stage_decoder=[1] * 4,
    )
    net = build_network(config, 1, 3)
    patch = [4 * 2, 16 * 2, 16 * 3]  # multiples of the total downsampling (4, 16, 16)
    outputs = net(torch.randn(2, 1, *patch))
    targets = downsample_target(torch.randint(0, 3, (2, 1, *patch)), net.output_scales())
    assert len(targets) == len(outputs) == 3
    for output, target in zip(outputs, targets):
        assert target.shape[2:] == output.shape[2:]
        assert target.shape[:2] == (2, 1)


def test_deep_supervision_loss_is_weighted_sum():
    torch.manual_seed(0)
    base = DiceCELoss()
    outputs = [torch.randn(2, 3, 8, 8, requires_grad=True), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2)]
    targets = downsample_target(torch.randint(0, 3, (2, 1, 8, 8)), [[1, 1], [0.5, 0.5], [0.25, 0.25]])
    weights = deep_supervision_weights(3)
    loss = DeepSupervisionLoss(base, weights)(outputs, targets)
    expected = sum(w * base(o, t) for w, o, t in zip(weights, outputs, targets))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(outputs[0].grad).all()

    single = DeepSupervisionLoss(base, weights)(outputs[0], targets[0])
    assert single.item() == pytest.approx(base(outputs[0], targets[0]).item(), rel=1e-6)

    with pytest.raises(ValueError, match="weights"):
        DeepSupervisionLoss(base, weights)(outputs[:2], targets[:2])
    with pytest.raises(TypeError):
        DeepSupervisionLoss(base, weights)(outputs, targets[0])


@pytest.mark.parametrize("dimension", [2, 3])
def test_ignored_voxels_get_exactly_zero_gradient(dimension):
    from autoseg.training.loss import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights, downsample_target

    torch.manual_seed(0)
    spatial = (4, 8, 8)[-dimension:]
    logits = torch.randn(2, 3, *spatial, requires_grad=True)
    target = torch.randint(0, 3, (2, 1, *spatial))
    ignored = torch.rand(2, 1, *spatial) < 0.5
    target[ignored] = 3  # the ignore value: one above the classes
    loss = DiceCELoss(ignore_label=3)(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    gradient = logits.grad.abs().sum(1, keepdim=True)
    assert torch.all(gradient[ignored] == 0)
    assert torch.all(gradient[~ignored] > 0)

    # the same as a loss on the annotated voxels alone: cross-entropy is their mean
    ce_only = DiceCELoss(weight_dice=0, ignore_label=3)(logits, target)
    flat_logits = logits.detach().movedim(1, -1)[~ignored[:, 0]]
    expected = torch.nn.functional.cross_entropy(flat_logits, target[~ignored].long())
    assert float(ce_only.detach()) == pytest.approx(float(expected), rel=1e-5)

    # deep supervision: every output's ignored voxels too
    outputs = [torch.randn(2, 3, *spatial, requires_grad=True),
               torch.randn(2, 3, *(s // 2 for s in spatial), requires_grad=True)]
    targets = downsample_target(target, [[1.0] * dimension, [0.5] * dimension])
    DeepSupervisionLoss(DiceCELoss(ignore_label=3), deep_supervision_weights(2))(outputs, targets).backward()
    for output, downsampled in zip(outputs, targets):
        assert torch.all(output.grad.abs().sum(1, keepdim=True)[downsampled == 3] == 0)


def test_a_patch_with_nothing_annotated_gives_zero_loss_not_nan():
    from autoseg.training.loss import DiceCELoss

    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = DiceCELoss(ignore_label=3)(logits, torch.full((1, 1, 4, 4), 3))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.all(logits.grad == 0)


def test_pseudo_dice_leaves_ignored_voxels_out():
    from autoseg.training.trainer import pseudo_dice_counts

    target = torch.tensor([[[[1, 1, 3, 3]]]])  # (B, 1, y, x): two annotated organ voxels, two ignored
    logits = torch.zeros(1, 2, 1, 4)
    logits[:, 1] = 1.0  # organ everywhere
    assert pseudo_dice_counts(logits, target, [1], ignore_label=3).tolist() == [[2.0], [0.0], [0.0]]
    assert pseudo_dice_counts(logits, target, [1]).tolist() == [[2.0], [2.0], [0.0]]


def test_frequency_class_weights_favour_rare_classes():
    from autoseg.training.loss import CE_WEIGHT_CAP, frequency_class_weights

    labels = torch.zeros(1, 100, 100, dtype=torch.long)
    labels[0, :10] = 1  # 10 %
    labels[0, 50, :10] = 2  # 0.1 %
    weights = frequency_class_weights(labels, 4)
    frequency = torch.tensor([0.899, 0.1, 0.001, 0.0])
    assert weights[3] == 0  # absent
    assert float((weights * frequency).sum()) == pytest.approx(1.0, rel=1e-3)  # mean weight per voxel 1
    assert float(weights[2] / weights[1]) == pytest.approx(10.0, rel=1e-3)  # 100x rarer, 10x the weight
    labels[0, 50, 0] = 3  # one voxel in 10,000: the cap holds
    assert float(frequency_class_weights(labels, 4).max()) <= CE_WEIGHT_CAP


def test_frequency_weighted_cross_entropy_pulls_a_suppressed_small_class_up_harder():
    from autoseg.training.loss import DiceCELoss

    labels = torch.zeros(1, 1, 64, 64, dtype=torch.long)
    labels[0, 0, 30:33, 30:33] = 1  # 9 voxels of 4,096
    logits = torch.zeros(1, 2, 64, 64)
    logits[:, 0] = 6.0  # the small class is suppressed everywhere
    gradients = {}
    for weighting in ("none", "frequency"):
        leaf = logits.clone().requires_grad_(True)
        DiceCELoss(weight_dice=0.0, class_weighting=weighting)(leaf, labels).backward()
        gradients[weighting] = -float(leaf.grad[0, 1, 31, 31])
    assert gradients["frequency"] > 10 * gradients["none"] > 0
    with pytest.raises(ValueError, match="class_weighting"):
        DiceCELoss(class_weighting="focal")


def test_frequency_weighting_leaves_ignored_voxels_out():
    from autoseg.training.loss import DiceCELoss

    labels = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    labels[0, 0, :4] = 3  # ignore label
    labels[0, 0, 6, 6] = 1
    logits = torch.randn(1, 3, 8, 8, requires_grad=True)
    DiceCELoss(ignore_label=3, class_weighting="frequency")(logits, labels).backward()
    assert torch.all(logits.grad[0, :, :4] == 0)
