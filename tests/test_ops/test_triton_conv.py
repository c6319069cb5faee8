"""The Triton implicit-GEMM INT8 convolutions against the reference path, bit for bit.

On CUDA where Triton is installed; without a GPU, in Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, set for this module before triton is imported) when triton is
installed; skipped otherwise. The references sum integers exactly (int32/int64, or float64
below 2**53) and multiply once by the scale, as the kernels do.
"""
import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
pytest.importorskip('triton')

from mmdaq.kernels import int32_to_channels_first_reference  # noqa: E402
from mmdaq.kernels.layout import int32_to_weight_reference  # noqa: E402
from mmdaq.ops import triton_conv, triton_conv_kernels  # noqa: E402
from mmdaq.ops.geometry import ConvGeometry  # noqa: E402
from mmdaq.ops.im2col import col2im  # noqa: E402
from mmdaq.ops.int8_layer import (channels_last_2d, int8_conv_forward,  # noqa: E402
                                  int8_conv_grad_input, int8_conv_grad_weight)
from mmdaq.ops.triton_launch import count_launches  # noqa: E402

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


@pytest.fixture(scope='module', autouse=True)
def fresh_module():
    # Pick up TRITON_INTERPRET if triton or the kernels were imported before (the config lists
    # are built at import time).
    importlib.reload(triton_conv_kernels)
    importlib.reload(triton_conv)


def _codes(shape, gen):
    return torch.randint(-127, 128, shape, generator=gen, dtype=torch.int8)


def _geometry(case):
    return ConvGeometry((case['k'], ) * 2, (case['s'], ) * 2, (case['p'], ) * 2,
                        (case['d'], ) * 2, 1)


def _output_size(case):
    return tuple((size + 2 * case['p'] - case['d'] * (case['k'] - 1) - 1) // case['s'] + 1
                 for size in (case['h'], case['w']))


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
    geo = _geometry(case)
    acc, out_size = int8_conv_forward(x, w, geo)
    want = int32_to_channels_first_reference(acc, scale.reshape(-1) if per_channel else scale,
                                             bias, (case['n'], case['co']) + out_size)
    assert triton_conv.conv2d_int8_supported(x, geo.kernel, case['c'], 1)
    with count_launches() as names:
        got, got_size = triton_conv.int8_conv2d_triton(
            x.to(DEVICE), w.to(DEVICE), scale.to(DEVICE),
            None if bias is None else bias.to(DEVICE), geo.stride, geo.padding, geo.dilation)
    assert names == ['int8_conv2d_kernel']
    assert got_size == out_size and got.is_contiguous()
    assert torch.equal(got.cpu(), want)


def test_unsupported_cases_are_declined():
    x = torch.zeros(1, 8, 4, 4, dtype=torch.int8)
    assert not triton_conv.conv2d_int8_supported(x, (3, 3), 8, groups=2)
    assert not triton_conv.conv2d_int8_supported(x.unsqueeze(2), (3, 3, 3), 8, groups=1)
    assert not triton_conv.conv2d_int8_supported(x, (3, 3), 20000, groups=1)  # K > 2**17
    assert triton_conv.conv2d_dgrad_int8_supported(x, (3, 3), groups=1)  # any length
    assert not triton_conv.conv2d_dgrad_int8_supported(x, (3, 3), groups=2)
    assert not triton_conv.conv2d_dgrad_int8_supported(x.unsqueeze(2), (3, 3, 3), groups=1)


def _dgrad_reference(g, w, scale, input_shape, geo):
    """Integer columns (int8_conv_grad_input), folded back exactly in float64 by col2im, then
    rounded once to float32 and scaled."""
    cols = int8_conv_grad_input(channels_last_2d(g), w, geo).double()
    acc = col2im(cols, input_shape, geo.kernel, geo.stride, geo.padding, geo.dilation)
    return acc.float() * scale


@pytest.mark.parametrize('case', [
    dict(n=2, c=5, h=7, w=6, co=3, k=3, s=1, p=1, d=1),      # stride 1, odd sizes
    dict(n=1, c=6, h=10, w=9, co=140, k=3, s=2, p=1, d=1),   # C_out over several blocks
    dict(n=1, c=5, h=8, w=7, co=4, k=3, s=2, p=0, d=1),      # last row/column get nothing
    dict(n=2, c=3, h=9, w=9, co=6, k=1, s=2, p=0, d=1),      # strided 1x1
    dict(n=1, c=3, h=13, w=11, co=4, k=7, s=2, p=3, d=1),    # 7x7 stem-like
    dict(n=1, c=4, h=11, w=10, co=5, k=3, s=3, p=0, d=2),    # stride 3, dilated
    dict(n=1, c=4, h=9, w=8, co=5, k=3, s=2, p=3, d=2),      # padding 3, dilated, strided
    dict(n=1, c=7, h=8, w=10, co=9, k=3, s=3, p=2, d=1),     # stride 3, padding 2
    dict(n=1, c=40, h=5, w=6, co=3, k=3, s=1, p=0, d=2),     # C over several blocks
])
def test_triton_dgrad_equals_reference(case):
    gen = torch.Generator().manual_seed(2)
    x_shape = (case['n'], case['c'], case['h'], case['w'])
    w = _codes((case['co'], case['c'], case['k'], case['k']), gen)
    g = _codes((case['n'], case['co']) + _output_size(case), gen)
    scale = (torch.rand((), generator=gen) + 0.1) * 1e-3
    geo = _geometry(case)
    want = _dgrad_reference(g, w, scale, x_shape, geo)
    assert torch.equal(want, torch.nn.grad.conv2d_input(
        x_shape, w.double(), g.double(), geo.stride, geo.padding, geo.dilation).float() * scale)
    with count_launches() as names:
        got = triton_conv.int8_conv2d_dgrad_triton(g.to(DEVICE), w.to(DEVICE),
                                                   scale.to(DEVICE), x_shape, geo.stride,
                                                   geo.padding, geo.dilation)
    assert names == ['int8_conv2d_dgrad_kernel']
    assert got.shape == x_shape and got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(got.cpu(), want)


def test_triton_dgrad_reads_any_memory_format_and_long_reductions_in_float64():
    # Channels-last G_Y is read in place; max_int32_k below KH*KW*C_out takes the float64 path.
    case = dict(n=2, c=6, h=9, w=7, co=40, k=3, s=2, p=1, d=1)
    gen = torch.Generator().manual_seed(3)
    x_shape = (case['n'], case['c'], case['h'], case['w'])
    w = _codes((case['co'], case['c'], 3, 3), gen)
    g = _codes((case['n'], case['co']) + _output_size(case), gen)
    scale = torch.tensor(3e-4)
    geo = _geometry(case)
    want = _dgrad_reference(g, w, scale, x_shape, geo)
    g_cl = g.to(DEVICE).contiguous(memory_format=torch.channels_last)
    for max_int32_k in (triton_conv.MAX_CHUNK_K, 16):
        got = triton_conv.int8_conv2d_dgrad_triton(g_cl, w.to(DEVICE), scale.to(DEVICE),
                                                   x_shape, geo.stride, geo.padding,
                                                   geo.dilation, max_int32_k=max_int32_k)
        assert torch.equal(got.cpu(), want)


def test_triton_dgrad_long_reduction_is_exact():
    # A 1x1 convolution with 140000 > 2**17 output channels, all codes at +-127: an int32 sum
    # would overflow (140000 * 127**2 > 2**31); the kernel adds its blocks in float64.
    c_out = 140000
    g = torch.full((1, c_out, 1, 1), 127, dtype=torch.int8)
    w = torch.full((c_out, 2, 1, 1), 127, dtype=torch.int8)
    w[:, 1] = -127
    want = torch.tensor([1.0, -1.0]).reshape(1, 2, 1, 1) * (c_out * 127 * 127)
    assert want.abs().max() > 2**31
    got = triton_conv.int8_conv2d_dgrad_triton(g.to(DEVICE), w.to(DEVICE),
                                               torch.ones((), device=DEVICE), (1, 2, 1, 1),
                                               (1, 1), (0, 0), (1, 1))
    assert torch.equal(got.cpu(), want.float())


def _wgrad_reference(x, g, scale, geo, w_shape):
    """Exact integer sums in (k, c) columns, scaled per channel into the weight layout."""
    acc = int8_conv_grad_weight(x, g, geo)
    return int32_to_weight_reference(acc, scale.reshape(-1).expand(acc.shape[0]), w_shape)


@pytest.mark.parametrize('case', [
    dict(n=2, c=5, h=7, w=6, co=3, k=3, s=1, p=1, d=1),
    dict(n=1, c=16, h=9, w=9, co=20, k=3, s=2, p=1, d=1),
    dict(n=2, c=8, h=8, w=8, co=8, k=1, s=1, p=0, d=1),
    dict(n=1, c=3, h=12, w=11, co=4, k=7, s=2, p=3, d=1),
    dict(n=1, c=4, h=11, w=10, co=5, k=3, s=3, p=0, d=2),
    dict(n=1, c=70, h=5, w=5, co=130, k=3, s=1, p=1, d=1),
])
@pytest.mark.parametrize('splits', [None, 1, 3])
def test_triton_wgrad_equals_reference(case, splits):
    gen = torch.Generator().manual_seed(1)
    x = _codes((case['n'], case['c'], case['h'], case['w']), gen)
    w_shape = (case['co'], case['c'], case['k'], case['k'])
    geo = _geometry(case)
    g = _codes((case['n'], case['co']) + _output_size(case), gen)
    scale = (torch.rand(case['co'], generator=gen) + 0.1) * 1e-4
    want = _wgrad_reference(x, g, scale, geo, w_shape)
    got = triton_conv.int8_conv2d_wgrad_triton(g.to(DEVICE), x.to(DEVICE), geo.kernel,
                                               scale.to(DEVICE), geo.stride, geo.padding,
                                               geo.dilation, splits=splits)
    assert got.shape == w_shape and got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize('splits, launches', [
    (1, ['int8_conv2d_wgrad_kernel']),
    (4, ['int8_conv2d_wgrad_kernel', 'weight_grad_epilogue_kernel']),
])
@pytest.mark.parametrize('per_channel', [True, False])
def test_triton_wgrad_launches_and_flushes(splits, launches, per_channel):
    # 2 x 16 x 16 positions: four splits of 128 (a multiple of every BLOCK_M); max_int32_k = 32
    # flushes the int32 block into float64 after every step. Channels-last inputs, read in place.
    gen = torch.Generator().manual_seed(4)
    x = _codes((2, 6, 16, 16), gen)
    g = _codes((2, 5, 16, 16), gen)
    scale = (torch.rand(5 if per_channel else (), generator=gen) + 0.1) * 1e-4
    geo = ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    want = _wgrad_reference(x, g, scale, geo, (5, 6, 3, 3))
    x_cl, g_cl = (t.to(DEVICE).contiguous(memory_format=torch.channels_last) for t in (x, g))
    assert 512 >= splits * triton_conv_kernels.WGRAD_SPLIT_UNIT
    for max_int32_k in (triton_conv.MAX_CHUNK_K, 32):
        with count_launches() as names:
            got = triton_conv.int8_conv2d_wgrad_triton(
                g_cl, x_cl, (3, 3), scale.to(DEVICE), (1, 1), (1, 1), (1, 1), splits=splits,
                max_int32_k=max_int32_k)
        assert names == launches
        assert torch.equal(got.cpu(), want)


def test_triton_wgrad_long_reduction_is_exact():
    # 40 x 64 x 64 = 163840 positions > 2**17: the int32 block is flushed into float64, and
    # codes at +-127 make every product the largest, so an int32 sum would overflow.
    x = torch.full((40, 16, 64, 64), 127, dtype=torch.int8)
    g = torch.full((40, 16, 64, 64), 127, dtype=torch.int8)
    g[:, 1] = -127
    geo = ConvGeometry((1, 1), (1, 1), (0, 0), (1, 1), 1)
    scale = torch.ones(16)
    acc = int8_conv_grad_weight(x, g, geo)
    assert acc.abs().max() > 2**31  # the reference accumulates in int64 chunks
    got = triton_conv.int8_conv2d_wgrad_triton(g.to(DEVICE), x.to(DEVICE), (1, 1),
                                               scale.to(DEVICE), (1, 1), (0, 0), (1, 1),
                                               splits=1)
    assert torch.equal(got.cpu(), acc.float().reshape(16, 16, 1, 1))


@pytest.mark.parametrize('order', [triton_conv.FORWARD_WEIGHT_ORDER,
                                   triton_conv.DGRAD_WEIGHT_ORDER, (0, 1, 2, 3)])
def test_gemms_read_weight_codes_in_any_order_and_take_a_second_scale(order):
    """The weight orders the kernels read without a copy (and the parameter's own, copied),
    and ``scale * scale2`` formed in the kernels: the same floats as one scale tensor."""
    gen = torch.Generator().manual_seed(7)
    case = dict(n=2, c=6, h=7, w=7, co=5, k=3, s=2, p=1, d=1)
    geo = _geometry(case)
    x = _codes((2, 6, 7, 7), gen).to(DEVICE)
    w = _codes((5, 6, 3, 3), gen).to(DEVICE)
    g = _codes((2, 5) + _output_size(case), gen).to(DEVICE)
    s_a, s_b = (torch.rand(2, generator=gen) + 0.1).to(DEVICE).unbind()
    s_c = (torch.rand(5, generator=gen) + 0.1).to(DEVICE)
    w_laid = triton_conv.taps_first_weight(w, order)
    assert torch.equal(w_laid, w)
    if order != (0, 1, 2, 3):
        assert triton_conv._weight_operand(w_laid, order)[0] is w_laid  # no copy
    args = (geo.stride, geo.padding, geo.dilation)
    want = triton_conv.int8_conv2d_triton(x, w, s_a * s_b, None, *args)[0]
    got = triton_conv.int8_conv2d_triton(x, w_laid, s_a, None, *args, scale2=s_b)[0]
    assert torch.equal(got, want)
    want = triton_conv.int8_conv2d_dgrad_triton(g, w, s_a * s_b, x.shape, *args)
    got = triton_conv.int8_conv2d_dgrad_triton(g, w_laid, s_a, x.shape, *args, scale2=s_b)
    assert torch.equal(got, want)
    for splits in (1, 2):  # the scale in the GEMM, then in the split epilogue
        want = triton_conv.int8_conv2d_wgrad_triton(g, x, geo.kernel, s_c * s_b, *args,
                                                    splits=splits)
        got = triton_conv.int8_conv2d_wgrad_triton(g, x, geo.kernel, s_c, *args,
                                                   splits=splits, scale2=s_b)
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match='scale2 must have one element'):
        triton_conv.int8_conv2d_triton(x, w, s_a, None, *args, scale2=s_c)


@pytest.mark.filterwarnings('ignore:overflow encountered:RuntimeWarning')  # the interpreter's
@pytest.mark.parametrize('out_dtype', [torch.float16, torch.bfloat16])
def test_forward_stores_half_precision_as_a_cast_would(out_dtype):
    gen = torch.Generator().manual_seed(11)
    x = _codes((2, 5, 6, 6), gen).to(DEVICE)
    w = _codes((4, 5, 3, 3), gen).to(DEVICE)
    scale = (torch.rand((), generator=gen) + 0.1).to(DEVICE) * 1e-2
    bias = torch.randn(4, generator=gen).to(DEVICE)
    args = (scale, bias, (1, 1), (1, 1), (1, 1))
    want = triton_conv.int8_conv2d_triton(x, w, *args)[0].to(out_dtype)
    got = triton_conv.int8_conv2d_triton(x, w, *args, out_dtype=out_dtype)[0]
    assert got.dtype == out_dtype and torch.equal(got, want)
    huge = (torch.tensor([float('nan'), 3e38, 1.0, 1.0]).to(DEVICE), None) + args[2:]
    want = triton_conv.int8_conv2d_triton(x, w, *huge)[0].to(out_dtype)  # NaN, Inf, finite
    got = triton_conv.int8_conv2d_triton(x, w, *huge, out_dtype=out_dtype)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    with pytest.raises(ValueError, match='out_dtype must be'):
        triton_conv.int8_conv2d_triton(x, w, *args, out_dtype=torch.int32)


@pytest.mark.filterwarnings('ignore:overflow encountered:RuntimeWarning')  # the interpreter's
@pytest.mark.parametrize('out_dtype', [torch.float16, torch.bfloat16])
def test_dgrad_stores_half_precision_as_a_cast_would(out_dtype):
    gen = torch.Generator().manual_seed(12)
    g = _codes((2, 4, 3, 3), gen).to(DEVICE)
    w = _codes((4, 5, 3, 3), gen).to(DEVICE)
    x_shape, geo = (2, 5, 6, 6), ((2, 2), (1, 1), (1, 1))
    for scale in (torch.rand((), generator=gen) * 1e-2 + 1e-3, torch.tensor(3e36),
                  torch.tensor(float('nan'))):  # finite, Inf where the sums are large, NaN
        want = triton_conv.int8_conv2d_dgrad_triton(g, w, scale.to(DEVICE), x_shape, *geo)
        got = triton_conv.int8_conv2d_dgrad_triton(g, w, scale.to(DEVICE), x_shape, *geo,
                                                   out_dtype=out_dtype)
        assert got.dtype == out_dtype and got.is_contiguous()
        torch.testing.assert_close(got, want.to(out_dtype), rtol=0, atol=0, equal_nan=True)
    with pytest.raises(ValueError, match='out_dtype must be'):
        triton_conv.int8_conv2d_dgrad_triton(g, w, scale.to(DEVICE), x_shape, *geo,
                                             out_dtype=torch.float64)
