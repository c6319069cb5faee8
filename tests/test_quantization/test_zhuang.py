"""Zhuang et al. low-bit quantizers, the integer forward and the low-bit layers (notes B.8)."""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mmdaq.cnn import (LowBitConv2d, LowBitLinear, convert_model, convert_modules, lowbit_layers,
                       set_precision)
from mmdaq.ops.geometry import LINEAR_GEOMETRY, ConvGeometry
from mmdaq.ops.lowbit_conv import lowbit_conv_reference, lowbit_int_conv, lowbit_int_linear
from mmdaq.quantization.lowbit import (LowBitConfig, activation_codes, check_bits, normalize_weight,
                                       quantize_activation, quantize_weight, uniform_quantize,
                                       weight_codes)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize('bits', [1, 2, 3, 4, 8, 16])
def test_q_k_levels_idempotent_monotone_and_error_bound(bits):
    levels = 2**bits - 1
    z = torch.cat([torch.rand(20000, generator=_gen(bits)), torch.tensor([0.0, 1.0, 0.5])])
    q = uniform_quantize(z, bits)
    codes = q * levels
    assert torch.equal(codes, codes.round()) and codes.min() >= 0 and codes.max() <= levels
    assert torch.equal(uniform_quantize(q, bits), q)  # idempotent
    order = z.argsort()
    assert (q[order].diff() >= 0).all()  # monotone
    assert (q - z).abs().max() <= 1 / (2 * levels) + 1e-7
    assert q[-3:-1].tolist() == [0.0, 1.0]


def test_bits_are_validated():
    assert check_bits(32) == 32 and check_bits(1) == 1
    for bad in (0, 17, 31, 4.0, True):
        with pytest.raises(ValueError, match=r'bits must be an int in \[1, 16\] or 32'):
            check_bits(bad)
    with pytest.raises(ValueError, match=r'bits_w must be an int in \[1, 7\] for int8 codes'):
        weight_codes(torch.zeros(2), 8)


@pytest.mark.parametrize('bits', [1, 2, 3, 4, 7])
def test_weight_map_range_extremes_sign_and_no_zero_level(bits):
    w = torch.randn(64, 9, generator=_gen(bits)) * 0.3
    w_hat = quantize_weight(w, bits)
    levels = 2**bits - 1
    assert w_hat.min() >= -1 and w_hat.max() <= 1
    peak = w.abs().argmax()
    assert w_hat.flatten()[peak] == torch.sign(w.flatten()[peak])  # exactly +-1
    large = w.abs() > 0.5 * w.abs().max()
    assert torch.equal(torch.sign(w_hat[large]), torch.sign(w[large]))
    codes = weight_codes(w_hat, bits).long()
    assert (codes % 2 == 1).all() and codes.abs().max() <= levels  # odd: never the zero level
    torch.testing.assert_close(w_hat, codes.float() / levels, rtol=0, atol=1e-6)


def test_two_bit_weight_levels_are_the_dorefa_ones():
    w_hat = quantize_weight(torch.linspace(-3, 3, 101), 2)
    levels = sorted(set(round(v, 6) for v in w_hat.tolist()))
    assert levels == [-1.0, round(-1 / 3, 6), round(1 / 3, 6), 1.0]
    assert 0.0 not in w_hat  # a symmetric-with-zero quantizer would produce 0 here
    zero = quantize_weight(torch.zeros(4), 2)  # all-zero layer: finite, on a level
    assert torch.isfinite(zero).all()
    torch.testing.assert_close(zero.abs(), torch.full((4, ), 1 / 3))


def test_weight_ste_differentiates_the_normalisation_only():
    w = torch.randn(8, 4, generator=_gen(0)).requires_grad_()
    g = torch.randn(8, 4, generator=_gen(1))
    grad, = torch.autograd.grad(quantize_weight(w, 3), w, g)
    w2 = w.detach().clone().requires_grad_()
    expected, = torch.autograd.grad(2 * normalize_weight(w2) - 1, w2, g)  # rounding = identity
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize('bits', [1, 2, 4, 7])
def test_activation_codes_clip_and_ste_mask(bits):
    x = torch.cat([torch.randn(1000, generator=_gen(bits)), torch.tensor([0.0, 1.0, -5.0, 9.0])])
    x.requires_grad_()
    x_hat = quantize_activation(x, bits)
    codes = activation_codes(x_hat, bits)
    assert codes.min() == 0 and codes.max() == 2**bits - 1
    assert (x_hat[x.detach() <= 0] == 0).all() and (x_hat[x.detach() >= 1] == 1).all()
    g = torch.randn(x.shape, generator=_gen(9))
    x_hat.backward(g)
    inside = (x.detach() > 0) & (x.detach() < 1)
    assert torch.equal(x.grad, g * inside)


def test_32_bits_is_the_identity():
    x = torch.randn(5, generator=_gen(0))
    assert quantize_weight(x, 32) is x and quantize_activation(x, 32) is x


@pytest.mark.parametrize('stride, padding, groups', [(1, 1, 1), (2, 0, 1), (1, 1, 2)])
def test_integer_forward_is_exact_and_matches_the_float_path(stride, padding, groups):
    x = torch.rand(2, 4, 9, 9, generator=_gen(0)) * 1.2
    w = torch.randn(6, 4 // groups, 3, 3, generator=_gen(1))
    b = torch.randn(6, generator=_gen(2))
    geo = ConvGeometry((3, 3), (stride, stride), (padding, padding), (1, 1), groups)
    x_hat, w_hat = quantize_activation(x, 4), quantize_weight(w, 3)
    y = lowbit_int_conv(x_hat, w_hat, b, 4, 3, geo)
    assert torch.equal(y, lowbit_conv_reference(x_hat, w_hat, b, 4, 3, geo))  # bit-exact
    fake = F.conv2d(x_hat, w_hat, b, stride, padding, 1, groups)
    torch.testing.assert_close(y, fake, rtol=1e-5, atol=1e-5)


def test_integer_path_gradients_equal_the_float_path():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, stride=2)
    layer = LowBitConv2d.from_float(copy.deepcopy(conv), LowBitConfig(bits_w=2, bits_a=3))
    twin = LowBitConv2d.from_float(copy.deepcopy(conv), LowBitConfig(2, 3, integer_gemm=False))
    x = (torch.rand(2, 4, 8, 8) * 1.5).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    g = torch.randn(2, 6, 4, 4)
    y, y2 = layer(x), twin(x2)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(y, y2, rtol=1e-5, atol=1e-5)
    for a, b in [(x.grad, x2.grad), (layer.weight.grad, twin.weight.grad),
                 (layer.bias.grad, twin.bias.grad)]:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    lin = nn.Linear(5, 3)
    x = torch.rand(2, 4, 5)
    y = lowbit_int_linear(quantize_activation(x, 4), quantize_weight(lin.weight, 4), lin.bias, 4,
                          4)
    fake = F.linear(quantize_activation(x, 4), quantize_weight(lin.weight, 4), lin.bias)
    torch.testing.assert_close(y, fake, rtol=1e-5, atol=1e-5)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def test_conversion_keeps_parameters_and_state_dict_keys():
    model = _net()
    params = list(model.parameters())
    keys = list(model.state_dict())
    report = convert_modules(model, 'zhuang_w4a4', exclude=[r'^0$'], bits_w=2, bits_a=2)
    assert report.converted == ['2', '5'] and report.skipped == {'0': 'matched by exclude'}
    model[5].input_quantizable = False  # ZhuangQuantHook's weights_only (tested there)
    assert all(a is b for a, b in zip(params, model.parameters()))
    assert list(model.state_dict()) == keys
    assert isinstance(model[5], LowBitLinear) and not model[5].input_quantizable
    assert model[2].lowbit is not model[5].lowbit  # each layer owns its config
    assert 'W2A2' in repr(model[2]) and 'W2A32' in repr(model[5])
    with pytest.raises(TypeError, match=r"unknown \['bits'\]"):
        convert_model(_net(), method='zhuang_w4a4', bits=4)
    with pytest.raises(ValueError, match='quantize_weights must be a bool'):
        LowBitConfig(quantize_weights=1)


def test_32_bits_equals_the_float_model_and_two_stage_keeps_activations_float():
    ref = _net()
    model = copy.deepcopy(ref)
    convert_model(model, method='zhuang_w4a4', bits_w=32, bits_a=32)
    x = torch.rand(2, 3, 6, 6)
    assert torch.equal(model(x), ref(x))
    set_precision(model, bits_w=4, bits_a=4, quantize_activations=False)  # TS stage 1
    h = torch.relu(F.conv2d(x, quantize_weight(ref[0].weight, 4), ref[0].bias, padding=1))
    h = torch.relu(F.conv2d(h, quantize_weight(ref[2].weight, 4), ref[2].bias, padding=1))
    expected = F.linear(h.flatten(1), quantize_weight(ref[5].weight, 4), ref[5].bias)
    assert torch.equal(model(x), expected)  # float inputs, quantized weights only
    before = [p.detach().clone() for p in model.parameters()]
    set_precision(model, quantize_activations=True)  # TS stage 2 starts from these weights
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(m.lowbit.quantize_activations for m in lowbit_layers(model).values())


def test_fp_this_iter_applies_in_training_only():
    model = _net()
    convert_model(model, method='zhuang_w4a4', bits_w=2, bits_a=2)
    ref = copy.deepcopy(model)
    for layer in lowbit_layers(model).values():
        layer.fp_this_iter = True
    x = torch.rand(2, 3, 6, 6)
    model.eval()
    ref.eval()
    assert torch.equal(model(x), ref(x))  # eval: always fully quantized
    model.train()
    set_precision(ref, bits_w=32, bits_a=32)
    ref.train()
    assert torch.equal(model(x), ref(x))  # training: the float layers


def test_scale_weights_keeps_the_float_output_scale_on_both_paths():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)  # trained-like small weights (|w| ~ 0.1)
    x = torch.rand(2, 8, 6, 6)
    y_fp = conv(x)
    outputs = {}
    for scale in (False, True):
        for integer in (False, True):
            layer = LowBitConv2d.from_float(copy.deepcopy(conv), LowBitConfig(
                bits_w=4, bits_a=32 if not integer else 4, integer_gemm=integer,
                scale_weights=scale))
            outputs[scale, integer] = layer(x)
    error = (outputs[True, False] - y_fp).norm() / y_fp.norm()
    assert error < 0.3  # 4-bit weights, float input: close to the float layer
    assert (outputs[False, False] - y_fp).norm() / y_fp.norm() > 3  # unscaled: levels of +-1
    twin = LowBitConv2d.from_float(copy.deepcopy(conv), LowBitConfig(integer_gemm=False,
                                                                     scale_weights=True))
    torch.testing.assert_close(outputs[True, True], twin(x), rtol=1e-5, atol=1e-5)
    lin = LowBitLinear.from_float(nn.Linear(6, 3), LowBitConfig(scale_weights=True))
    fake = LowBitLinear.from_float(copy.deepcopy(lin), LowBitConfig(scale_weights=True,
                                                                    integer_gemm=False))
    x = torch.rand(4, 6)
    torch.testing.assert_close(lin(x), fake(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('bits', [1, 4])
def test_quantizer_ops_pass_opcheck(bits):
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    torch.library.opcheck(torch.ops.mmdaq.round_ste.default, (x, bits))
    torch.library.opcheck(torch.ops.mmdaq.activation_quantize.default, (x, bits))


@pytest.mark.parametrize('geo, with_bias, w_scale', [
    (ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1), 1), True, None),
    (ConvGeometry((3, 3), (2, 2), (1, 1), (1, 1), 2), False, 0.7),
    (LINEAR_GEOMETRY, True, None),
])
def test_lowbit_int_conv_op_passes_opcheck(geo, with_bias, w_scale):
    gen = torch.Generator().manual_seed(0)
    bits_a, bits_w = 3, 2
    shape_x, shape_w = ((2, 4, 6, 6), (6, 4 // geo.groups, 3, 3)) if geo.kernel else ((5, 4),
                                                                                      (3, 4))
    x_hat = torch.randint(0, 2**bits_a, shape_x, generator=gen) / (2**bits_a - 1)
    w_code = 2 * torch.randint(0, 2**bits_w, shape_w, generator=gen) - (2**bits_w - 1)
    w_hat = w_code / (2**bits_w - 1) * (w_scale or 1.0)
    bias = torch.randn(shape_w[0], generator=gen).requires_grad_() if with_bias else None
    scale = None if w_scale is None else torch.tensor(w_scale)
    args = (x_hat.requires_grad_(), w_hat.requires_grad_(), bias, bits_a, bits_w,
            *geo.op_args(), scale)
    torch.library.opcheck(torch.ops.mmdaq.lowbit_int_conv.default, args)
