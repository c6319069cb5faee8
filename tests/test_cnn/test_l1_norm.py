"""L1 batch normalization: statistics, invariances, gradients, running stats, registry names."""
import math

import pytest
import torch
from torch import nn

from mmdaq.cnn import L1BatchNorm1d, L1BatchNorm2d, L1BatchNorm3d, integer_l1_statistics
from mmdaq.cnn.l1_norm import KAPPA_GAUSSIAN
from mmdaq.quantization import shift_quantize


def _x(seed, shape=(8, 4, 6, 6)):
    gen = torch.Generator().manual_seed(seed)
    spread = torch.tensor([0.1, 1.0, 5.0, 30.0]).view(1, -1, 1, 1)
    return torch.randn(shape, generator=gen) * spread + torch.randn(4, generator=gen).view(
        1, -1, 1, 1) * 3


def _affine(norm, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(norm.num_features, generator=gen) + 0.5)
        norm.bias.copy_(torch.randn(norm.num_features, generator=gen))
    return norm


@pytest.mark.parametrize('kappa', [KAPPA_GAUSSIAN, 1.0])
def test_training_statistics(kappa):
    norm = _affine(L1BatchNorm2d(4, eps=0.0, kappa=kappa))
    y = norm(_x(0)).detach()
    beta, gamma = norm.bias.detach().view(1, -1, 1, 1), norm.weight.detach().view(1, -1, 1, 1)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), norm.bias.detach(), rtol=0, atol=1e-5)
    mad = ((y - beta) / gamma).abs().mean(dim=(0, 2, 3))
    torch.testing.assert_close(mad, torch.full((4, ), 1 / kappa), rtol=1e-5, atol=0)
    # For Gaussian data kappa = sqrt(pi/2) makes the output std ~1, like BatchNorm.
    if kappa == KAPPA_GAUSSIAN:
        std = ((y - beta) / gamma).std(dim=(0, 2, 3))
        assert ((std - 1).abs() < 0.1).all(), std


def test_float_reference_and_affine_invariance():
    norm = _affine(L1BatchNorm2d(4))
    x = _x(1)
    mu = x.mean(dim=(0, 2, 3), keepdim=True)
    sigma1 = (x - mu).abs().mean(dim=(0, 2, 3), keepdim=True)
    ref = (x - mu) / (KAPPA_GAUSSIAN * sigma1 + 1e-5) * norm.weight.view(1, -1, 1, 1) \
        + norm.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(norm(x), ref)
    exact = _affine(L1BatchNorm2d(4, eps=0.0))
    for a, c in ((2.5, -7.0), (1e-3, 4e-3), (100.0, 0.5)):  # c: no float32 cancellation
        torch.testing.assert_close(exact(a * x + c), exact(x), rtol=1e-4, atol=1e-4)


def test_gradient_matches_finite_differences():
    norm = _affine(L1BatchNorm2d(3, eps=1e-3)).double()
    x = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: norm(t), (x, ))
    norm.weight.requires_grad_()
    assert torch.autograd.gradcheck(lambda w: nn.functional.linear(norm(x).flatten(1), w.view(
        1, -1)), (torch.randn(3 * 9, dtype=torch.float64, requires_grad=True), ))


def test_eval_uses_running_statistics():
    norm = _affine(L1BatchNorm2d(4, momentum=None))  # cumulative average
    x = _x(3)
    y_train = norm(x)
    mu = x.mean(dim=(0, 2, 3))
    sigma1 = (x - mu.view(1, -1, 1, 1)).abs().mean(dim=(0, 2, 3))
    torch.testing.assert_close(norm.running_mean, mu)
    torch.testing.assert_close(norm.running_var, (KAPPA_GAUSSIAN * sigma1)**2)
    assert int(norm.num_batches_tracked) == 1
    norm.eval()
    torch.testing.assert_close(norm(x), y_train, rtol=1e-5, atol=1e-5)  # same batch
    other = _x(4)[:2]
    ref = (other - mu.view(1, -1, 1, 1)) / (KAPPA_GAUSSIAN * sigma1.view(1, -1, 1, 1) + 1e-5)
    ref = ref * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(norm(other), ref)  # not the statistics of `other`
    before = norm.running_mean.clone()
    norm(_x(5))
    assert torch.equal(norm.running_mean, before)  # eval does not update


def test_running_average_is_an_ema_of_the_denominator():
    norm = L1BatchNorm2d(4, momentum=0.5)
    x1, x2 = _x(6), _x(7)
    norm(x1)
    norm(x2)

    def scale(x):
        mu = x.mean(dim=(0, 2, 3), keepdim=True)
        return KAPPA_GAUSSIAN * (x - mu).abs().mean(dim=(0, 2, 3))

    expected = 0.25 * 1.0 + 0.25 * scale(x1) + 0.5 * scale(x2)  # from sqrt(running_var) = 1
    torch.testing.assert_close(norm.running_var.sqrt(), expected)


def test_batchnorm_checkpoints_load_both_ways_and_dims():
    bn, l1 = nn.BatchNorm2d(4), L1BatchNorm2d(4)
    l1.load_state_dict(bn.state_dict(), strict=True)
    bn.load_state_dict(l1.state_dict(), strict=True)
    assert L1BatchNorm1d(4)(torch.randn(5, 4)).shape == (5, 4)
    assert L1BatchNorm1d(4)(torch.randn(5, 4, 3)).shape == (5, 4, 3)
    assert L1BatchNorm3d(4)(torch.randn(2, 4, 2, 3, 3)).shape == (2, 4, 2, 3, 3)
    with pytest.raises(ValueError, match='input must be 4-d \\(N, C, H, W\\), but got 5-d'):
        L1BatchNorm2d(4)(torch.randn(2, 4, 2, 3, 3))
    with pytest.raises(ValueError, match='input must be 5-d'):
        L1BatchNorm3d(4)(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match='input must be 2-d or 3-d'):
        L1BatchNorm1d(4)(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match='kappa must be a finite number > 0, but got 0'):
        L1BatchNorm2d(4, kappa=0)
    with pytest.raises(ValueError, match='num_bits must be None or an int in \\[2, 8\\]'):
        L1BatchNorm2d(4, num_bits=12)
    with pytest.raises(ValueError, match='num_groups must be an int in \\[1, 16\\]'):
        L1BatchNorm2d(4, num_bits=4, num_groups=0)


def test_integer_statistics_match_the_float_reference():
    x = _x(8)
    codes = shift_quantize(x, 1, num_groups=4, num_bits=6)
    x_hat = codes.dequantize()
    mu, sigma1 = integer_l1_statistics(codes)
    mu_ref = x_hat.double().mean(dim=(0, 2, 3))
    sigma1_ref = (x_hat.double() - mu_ref.view(1, -1, 1, 1)).abs().mean(dim=(0, 2, 3))
    torch.testing.assert_close(mu.double(), mu_ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(sigma1.double(), sigma1_ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize('num_bits', [4, 8])
def test_quantized_mode_is_within_one_step_of_the_float_reference(num_bits):
    norm = _affine(L1BatchNorm2d(4, num_bits=num_bits))
    ref = _affine(L1BatchNorm2d(4))
    x = _x(9).requires_grad_()
    y = norm(x)
    x_hat = shift_quantize(x.detach(), 1, 8, num_bits).dequantize()
    y_ref = ref(x_hat)  # the float layer on the quantized input
    qmax = 2**(num_bits - 1) - 1
    step = y.detach().abs().max() / qmax  # the output quantizer's step (per tensor)
    assert ((y - y_ref).abs() <= step * (0.5 + 1e-4)).all()  # rounding: half a step
    assert y.detach().unique().numel() <= 2 * qmax + 1  # b-bit output values
    y.backward(torch.ones_like(y) / y.numel())  # straight-through: finite gradients
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # The running statistics come from the integer path.
    torch.testing.assert_close(norm.running_mean, 0.1 * x_hat.mean(dim=(0, 2, 3)))


def test_norm_cfg_selects_l1_norm_in_an_mmdet_resnet():
    pytest.importorskip('mmdet')
    from mmcv.cnn import build_norm_layer
    from mmdet.models.backbones import ResNet

    import mmdaq  # noqa: F401  (registers the norms)
    for name, cls in (('L1BN', L1BatchNorm2d), ('L1BN1d', L1BatchNorm1d),
                      ('L1BN3d', L1BatchNorm3d), ('L1BatchNorm2d', L1BatchNorm2d)):
        layer_name, layer = build_norm_layer(dict(type=name, kappa=1.0), 8, postfix=1)
        assert type(layer) is cls and layer_name == 'bn1' and layer.kappa == 1.0
        assert layer.eps == 1e-5
    net = ResNet(depth=18, norm_cfg=dict(type='L1BN', requires_grad=True), norm_eval=True)
    reference = ResNet(depth=18)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 20 and all(type(m) is L1BatchNorm2d for m in norms)
    assert list(net.state_dict()) == list(reference.state_dict())  # same keys as with BN
    net.train()  # norm_eval: mmdet keeps _BatchNorm layers in eval mode
    assert not any(m.training for m in norms)
    outs = net(torch.randn(2, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512]
    assert all(torch.isfinite(o).all() for o in outs)
    assert math.isclose(KAPPA_GAUSSIAN, 1.2533141373155, rel_tol=1e-12)
