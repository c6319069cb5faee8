"""The Triton implicit-GEMM INT8 convolution against the reference path, bit for bit.

On CUDA where Triton is installed; without a GPU, in Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, set for this module before triton is imported) when triton is
installed; skipped otherwise.
"""
import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
pytest.importorskip('triton')

from mmdaq.kernels import int32_to_channels_first_reference  # noqa: E402
from mmdaq.ops import triton_conv  # noqa: E402
from mmdaq.ops.geometry import ConvGeometry  # noqa: E402
from mmdaq.ops.int8_layer import int8_conv_forward  # noqa: E402

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


@pytest.fixture(scope='module', autouse=True)
def fresh_module():
    importlib.reload(triton_conv)  # pick up TRITON_INTERPRET if triton was imported before


def _codes(shape, gen):
    return torch.randint(-127, 128, shape, generator=gen, dtype=torch.int8)


@pytest.mark.parametrize('case', [
    dict(n=2, c=5, h=7, w=6, co=3, k=3, s=1, p=1, d=1),      # odd sizes everywhere
    dict(n=1, c=16, h=9, w=9, co=20, k=3, s=2, p=1, d=1),    # strided
    dict(n=2, c=8, h=8, w=8, co=8, k=1, s=1, p=0, d=1),      # 1x1
    dict(n=1, c=3, h=12, w=11, co=4, k=7, s=2, p=3, d=1),    # 7x7 stem-like
    dict(n=1, c=4, h=9, w=9, co=5, k=3, s=1, p=2, d=2),      # dilated
    dict(n=1, c=70, h=5, w=5, co=130, k=3, s=1, p=1, d=1),   # C and C_out over one block
])
@pytest.mark.parametrize('per_channel, with_bias', [(False, False), (True, True)])
def test_triton_conv_equals_reference(case, per_channel, with_bias):
    gen = torch.Generator().manual_seed(0)
    x = _codes((case['n'], case['c'], case['h'], case['w']), gen)
    w = _codes((case['co'], case['c'], case['k'], case['k']), gen)
    scale = (torch.rand(case['co'] if per_channel else 1, generator=gen) + 0.1) * 1e-3
    bias = torch.randn(case['co'], generator=gen) if with_bias else None
    geo = ConvGeometry((case['k'], ) * 2, (case['s'], ) * 2, (case['p'], ) * 2,
                       (case['d'], ) * 2, 1)
    acc, out_size = int8_conv_forward(x, w, geo)
    want = int32_to_channels_first_reference(acc, scale.reshape(-1) if per_channel else scale,
                                             bias, (case['n'], case['co']) + out_size)
    assert triton_conv.conv2d_int8_supported(x, geo.kernel, case['c'], 1)
    got, got_size = triton_conv.int8_conv2d_triton(
        x.to(DEVICE), w.to(DEVICE), scale.to(DEVICE), None if bias is None else bias.to(DEVICE),
        geo.stride, geo.padding, geo.dilation)
    assert got_size == out_size and got.is_contiguous()
    assert torch.equal(got.cpu(), want)


def test_unsupported_cases_are_declined():
    x = torch.zeros(1, 8, 4, 4, dtype=torch.int8)
    assert not triton_conv.conv2d_int8_supported(x, (3, 3), 8, groups=2)
    assert not triton_conv.conv2d_int8_supported(x.unsqueeze(2), (3, 3, 3), 8, groups=1)
    assert not triton_conv.conv2d_int8_supported(x, (3, 3), 20000, groups=1)  # K > 2**17


@pytest.mark.parametrize('case', [
    dict(n=2, c=5, h=7, w=6, co=3, k=3, s=1, p=1, d=1),
    dict(n=1, c=16, h=9, w=9, co=20, k=3, s=2, p=1, d=1),
    dict(n=2, c=8, h=8, w=8, co=8, k=1, s=1, p=0, d=1),
    dict(n=1, c=3, h=12, w=11, co=4, k=7, s=2, p=3, d=1),
    dict(n=1, c=70, h=5, w=5, co=130, k=3, s=1, p=1, d=1),
])
@pytest.mark.parametrize('splits', [None, 1, 3])
def test_triton_wgrad_equals_reference(case, splits):
    from mmdaq.ops.int8_layer import int8_conv_grad_weight
    gen = torch.Generator().manual_seed(1)
    x = _codes((case['n'], case['c'], case['h'], case['w']), gen)
    geo = ConvGeometry((case['k'], ) * 2, (case['s'], ) * 2, (case['p'], ) * 2,
                       (case['d'], ) * 2, 1)
    oh, ow = int8_conv_forward(x, _codes((1, case['c'], case['k'], case['k']), gen), geo)[1]
    g = _codes((case['n'], case['co'], oh, ow), gen)
    scale = (torch.rand(case['co'], generator=gen) + 0.1) * 1e-4
    want = int8_conv_grad_weight(x, g, geo) * scale.unsqueeze(1)
    got = triton_conv.int8_conv2d_wgrad_triton(g.to(DEVICE), x.to(DEVICE), geo.kernel,
                                               scale.to(DEVICE), geo.stride, geo.padding,
                                               geo.dilation, splits=splits)
    assert got.dtype == torch.float32 and torch.equal(got.cpu(), want)


def test_triton_wgrad_long_reduction_is_exact():
    # 40 x 64 x 64 = 163840 positions > 2**17: the int32 block is flushed into float64, and
    # codes at +-127 make every product the largest, so an int32 sum would overflow.
    from mmdaq.ops.int8_layer import int8_conv_grad_weight
    x = torch.full((40, 16, 64, 64), 127, dtype=torch.int8)
    g = torch.full((40, 16, 64, 64), 127, dtype=torch.int8)
    g[:, 1] = -127
    geo = ConvGeometry((1, 1), (1, 1), (0, 0), (1, 1), 1)
    scale = torch.ones(16)
    want = int8_conv_grad_weight(x, g, geo).double()
    assert want.abs().max() > 2**31  # the reference accumulates in int64 chunks
    got = triton_conv.int8_conv2d_wgrad_triton(g.to(DEVICE), x.to(DEVICE), (1, 1),
                                               scale.to(DEVICE), (1, 1), (0, 0), (1, 1),
                                               splits=1)
    assert torch.equal(got.cpu(), want.float())
