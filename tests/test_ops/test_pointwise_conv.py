"""1x1 convolutions as GEMMs on NC*: the same floats as im2col + GEMM + epilogue and col2im."""
import pytest
import torch

from mmdaq.kernels import channels_first_epilogue
from mmdaq.ops.geometry import ConvGeometry
from mmdaq.ops.im2col import col2im
from mmdaq.ops.int8_layer import channels_last_2d, int8_conv_forward, int8_conv_grad_input
from mmdaq.ops.int8_matmul import MAX_CHUNK_K, int8_matmul
from mmdaq.ops.pointwise_conv import (pointwise_int8_conv, pointwise_int8_grad_input,
                                      pointwise_supported)

CASES = [  # (nd, batch, c_in, c_out, size, stride)
    (2, 2, 17, 13, 7, 1),
    (2, 1, 64, 32, 9, 2),
    (2, 3, 8, 24, 8, 2),  # even size, stride 2
    (1, 2, 5, 7, 11, 3),
    (3, 2, 6, 4, 5, 2),
]


def _case(nd, batch, c_in, c_out, size, stride, extreme=False):
    gen = torch.Generator().manual_seed(c_in + 7 * c_out)
    if extreme:
        x_q = torch.full((batch, c_in) + (size, ) * nd, 127, dtype=torch.int8)
        w_q = torch.full((c_out, c_in) + (1, ) * nd, -127, dtype=torch.int8)
    else:
        x_q = torch.randint(-127, 128, (batch, c_in) + (size, ) * nd, generator=gen,
                            dtype=torch.int8)
        w_q = torch.randint(-127, 128, (c_out, c_in) + (1, ) * nd, generator=gen,
                            dtype=torch.int8)
    geo = ConvGeometry((1, ) * nd, (stride, ) * nd, (0, ) * nd, (1, ) * nd, 1)
    return x_q, w_q, geo


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('with_bias', [False, True])
def test_forward_equals_im2col_gemm_path(case, with_bias):
    x_q, w_q, geo = _case(*case)
    scale = torch.tensor(2.3e-5)
    bias = torch.randn(w_q.shape[0]) if with_bias else None
    acc, out_size = int8_conv_forward(x_q, w_q, geo)
    want = channels_first_epilogue(acc, scale, bias, (x_q.shape[0], w_q.shape[0]) + out_size)
    got = pointwise_int8_conv(x_q, w_q, scale, bias, geo)
    assert got.is_contiguous() and torch.equal(got, want)


@pytest.mark.parametrize('case', CASES)
def test_grad_input_equals_col2im_path(case):
    x_q, w_q, geo = _case(*case)
    gen = torch.Generator().manual_seed(9)
    out_size = int8_conv_forward(x_q, w_q, geo)[1]
    g_q = torch.randint(-127, 128, (x_q.shape[0], w_q.shape[0]) + out_size, generator=gen,
                        dtype=torch.int8)
    scale = torch.tensor(4.1e-6)
    cols = int8_conv_grad_input(channels_last_2d(g_q), w_q, geo) * scale
    want = col2im(cols, x_q.shape, geo.kernel, geo.stride, geo.padding, geo.dilation)
    got = pointwise_int8_grad_input(g_q, w_q, scale, x_q.shape, geo)
    assert got.shape == x_q.shape and torch.equal(got, want)


def test_extreme_codes_are_exact():
    x_q, w_q, geo = _case(2, 2, 2048, 3, 4, 1, extreme=True)
    got = pointwise_int8_conv(x_q, w_q, torch.tensor(1.0), None, geo)
    assert (got == -2048 * 127 * 127).all()


def test_only_unpadded_ungrouped_1x1_on_cpu():
    x_q, w_q, geo = _case(2, 1, 8, 8, 5, 1)
    assert pointwise_supported(x_q, w_q, geo)
    assert not pointwise_supported(x_q, w_q, geo._replace(padding=(1, 1)))
    assert not pointwise_supported(x_q, w_q[:, :4], geo._replace(groups=2))
    assert not pointwise_supported(x_q, w_q, ConvGeometry((), (), (), ()))
    wide = torch.zeros(1, MAX_CHUNK_K + 1, 1, 1, dtype=torch.int8)
    assert not pointwise_supported(x_q, wide, geo)


def test_int8_matmul_out_is_checked_and_written():
    a = torch.randint(-127, 128, (3, 5), dtype=torch.int8)
    b = torch.randint(-127, 128, (5, 4), dtype=torch.int8)
    out = torch.empty(3, 4, dtype=torch.int32)
    assert int8_matmul(a, b, out=out) is out and torch.equal(out, (a.long() @ b.long()).int())
    out.zero_()
    int8_matmul(a, b, backend='float_exact', out=out)
    assert torch.equal(out, (a.long() @ b.long()).int())
    with pytest.raises(ValueError, match='out must be int32 of shape'):
        int8_matmul(a, b, out=torch.empty(3, 4, dtype=torch.int64))


def test_the_per_sample_gemms_are_chosen_for_wide_samples_only():
    from mmdaq.ops.pointwise_conv import MIN_POSITIONS, pointwise_pays
    geo = ConvGeometry((1, 1), (1, 1), (0, 0), (1, 1))
    assert pointwise_pays(torch.zeros(2, 4, 16, 8, dtype=torch.int8), geo)  # 128 positions
    assert not pointwise_pays(torch.zeros(2, 4, 7, 7, dtype=torch.int8), geo)
    # Stride 2 on 23 x 23: 12 x 12 = 144 output positions.
    assert pointwise_pays(torch.zeros(1, 4, 23, 23, dtype=torch.int8), geo._replace(stride=(2, 2)))
    assert not pointwise_pays(torch.zeros(1, 4, 21, 21, dtype=torch.int8),
                              geo._replace(stride=(2, 2)))
    assert MIN_POSITIONS == 128
