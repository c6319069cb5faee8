"""The ShiftQuant layer path: exact against the dequantized dataflow, close to FP32, trains."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmdaq import convert_model
from mmdaq.cnn import L1BatchNorm2d
from mmdaq.ops.geometry import ConvGeometry
from mmdaq.ops.int8_conv_op import int8_conv
from mmdaq.ops.shift_layer import shift_conv, shift_linear
from mmdaq.quantization.schemes import build_scheme
from mmdaq.testing import sqnr

#: dB floors against FP32 (measured 36-42 dB at 8 bits, 12-17 dB at 4 bits, minus a margin).
MIN_SQNR = {8: dict(out=32.0, grad_input=30.0, grad_weight=30.0),
            4: dict(out=10.0, grad_input=9.0, grad_weight=9.0)}

CASES = [  # (groups, stride, padding, dilation)
    (1, 1, 1, 1), (2, 2, 1, 1), (4, 1, 2, 2)
]


def _data(seed, groups):
    gen = torch.Generator().manual_seed(seed)
    spread = torch.logspace(-2, 0, 8).view(1, -1, 1, 1)  # channels of very different size
    x = torch.randn(2, 8, 9, 9, generator=gen) * spread
    w = torch.randn(16, 8 // groups, 3, 3, generator=gen)
    return x, w, torch.randn(16, generator=gen), gen


def _run(fn, x, w, b, g, *args):
    xx, ww, bb = (t.clone().requires_grad_() for t in (x, w, b))
    y = fn(xx, ww, bb, *args)
    y.backward(g)
    return y.detach(), xx.grad, ww.grad, bb.grad


@pytest.mark.parametrize('groups, stride, padding, dilation', CASES)
def test_layer_equals_the_dequantized_dataflow(groups, stride, padding, dilation):
    x, w, b, gen = _data(0, groups)
    geo = ConvGeometry((3, 3), (stride, ) * 2, (padding, ) * 2, (dilation, ) * 2, groups)
    scheme, twin = (build_scheme('shiftquant', seed=1) for _ in range(2))
    out_shape = F.conv2d(x, w, None, stride, padding, dilation, groups).shape
    g = torch.randn(out_shape, generator=gen)
    y, gx, gw, gb = _run(shift_conv, x, w, b, g, scheme, geo)
    # The same codes, dequantized, through float convolutions.
    x_hat = twin.quantize_input(x).dequantize()
    w_hat = twin.quantize_weight(w).dequantize()
    for_w, for_x = twin.quantize_grads(g, dim=1)
    g_w = for_w.dequantize().reshape(g.shape[0], *g.shape[2:], g.shape[1]).movedim(-1, 1)
    y_ref = F.conv2d(x_hat, w_hat, b, stride, padding, dilation, groups)
    gw_ref = torch.nn.grad.conv2d_weight(x_hat, w.shape, g_w, stride, padding, dilation, groups)
    gx_ref = torch.nn.grad.conv2d_input(x.shape, w_hat, for_x.dequantize(), stride, padding,
                                        dilation, groups)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gb, g.sum(dim=(0, 2, 3)))  # the bias gradient stays float


@pytest.mark.parametrize('bits', [8, 4])
@pytest.mark.parametrize('groups, stride, padding, dilation', CASES)
def test_layer_tracks_fp32(bits, groups, stride, padding, dilation):
    x, w, b, gen = _data(bits + groups, groups)
    geo = ConvGeometry((3, 3), (stride, ) * 2, (padding, ) * 2, (dilation, ) * 2, groups)
    scheme = build_scheme('shiftquant', weight_bits=bits, input_bits=bits, grad_bits=bits,
                          seed=0)
    g = torch.randn(F.conv2d(x, w, None, stride, padding, dilation, groups).shape, generator=gen)
    got = _run(shift_conv, x, w, b, g, scheme, geo)
    ref = _run(lambda *t: F.conv2d(*t, stride, padding, dilation, groups), x, w, b, g)
    for name, r, a in zip(('out', 'grad_input', 'grad_weight'), ref, got):
        assert sqnr(r, a) >= MIN_SQNR[bits][name], name


def test_linear_and_dispatch_by_dataflow():
    gen = torch.Generator().manual_seed(2)
    x, w = torch.randn(4, 3, 12, generator=gen), torch.randn(6, 12, generator=gen)
    scheme = build_scheme('shiftquant', weight_bits=8, input_bits=8, grad_bits=8)
    y = shift_linear(x, w, None, scheme)
    assert y.shape == (4, 3, 6) and sqnr(x @ w.t(), y) > 30
    geo = ConvGeometry((1, ), (1, ), (0, ), (1, ), 1)
    with pytest.raises(ValueError, match="INT8 layer needs a scheme with dataflow 'int8'"):
        int8_conv(torch.randn(1, 2, 3), torch.randn(2, 2, 1), None, scheme, geo)
    with pytest.raises(ValueError, match="shift_conv needs a scheme with dataflow 'shift'"):
        shift_conv(torch.randn(1, 2, 3), torch.randn(2, 2, 1), None, build_scheme('daq'), geo)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4, 3))
    weights = [p for p in net.parameters()]
    convert_model(net, method='shiftquant', num_groups=4)
    assert [type(m).__name__ for m in net] == ['DAQConv2d', 'Flatten', 'DAQLinear']
    assert all(a is b for a, b in zip(weights, net.parameters()))  # the same Parameters
    assert 'method=shiftquant' in repr(net[0])
    out = net(torch.randn(5, 2, 3, 3))
    out.sum().backward()
    assert out.shape == (5, 3) and torch.isfinite(net[0].weight.grad).all()


def test_nan_gradient_propagates():
    x, w, b, _ = _data(3, 1)
    geo = ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    g = torch.ones(2, 16, 9, 9)
    g[0, 0, 0, 0] = float('nan')
    _, gx, gw, _ = _run(shift_conv, x, w, b, g, build_scheme('shiftquant'), geo)
    assert torch.isnan(gw).all() and torch.isnan(gx).all()  # never silently finite


def test_shiftquant_with_l1_norm_trains_a_small_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), L1BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1), L1BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    convert_model(net, method='shiftquant', seed=0)  # the paper's 4-bit setting
    gen = torch.Generator().manual_seed(1)
    level = torch.randn(32, 3, generator=gen)  # per-image channel levels decide the label
    x = level[:, :, None, None] + 0.5 * torch.randn(32, 3, 8, 8, generator=gen)
    y = (level @ torch.randn(3, 4, generator=gen)).argmax(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize('stride, groups, with_bias', [(1, 1, True), (2, 2, False)])
def test_shift_conv_ops_pass_opcheck(stride, groups, with_bias):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 7, generator=gen, requires_grad=True)
    w = torch.randn(6, 4 // groups, 3, 3, generator=gen, requires_grad=True)
    b = torch.randn(6, generator=gen, requires_grad=True) if with_bias else None
    geo = ConvGeometry((3, 3), (stride, ) * 2, (1, 1), (1, 1), groups)
    scheme = build_scheme('shiftquant', grad_rounding='nearest')  # deterministic
    args = (x, w, b, scheme.op_handle, *geo.op_args(), 0)
    torch.library.opcheck(torch.ops.mmdaq.shift_conv.default, args)
    with torch.no_grad():  # the saved tensors, as the backward gets them
        y, codes, base, shifts = torch.ops.mmdaq.shift_conv(*args)
    grad_y = torch.randn(y.shape, generator=gen)
    torch.library.opcheck(torch.ops.mmdaq.shift_conv_backward.default,
                          (grad_y, codes, base, shifts, w.detach(), *args[3:], True, True,
                           with_bias))
