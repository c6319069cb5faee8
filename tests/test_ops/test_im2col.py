import math

import pytest
import torch
import torch.nn.functional as F

from mmdaq.ops.im2col import channels_inner_to_weight, channels_inner_weight, col2im, im2col

CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@pytest.mark.parametrize('nd', [1, 2, 3])
@pytest.mark.parametrize('k, s, p, d', [(3, 1, 1, 1), (3, 2, 1, 1), (1, 1, 0, 1), (3, 2, 2, 2),
                                        (2, 3, 0, 1), (5, 1, 2, 1)])
def test_im2col_gemm_is_conv_and_col2im_is_its_adjoint(nd, k, s, p, d):
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, 3) + (8, ) * nd, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn((4, 3) + (k, ) * nd, generator=g, dtype=torch.float64)
    args = ((k, ) * nd, (s, ) * nd, (p, ) * nd, (d, ) * nd)
    y = CONVS[nd](x, w, stride=args[1], padding=args[2], dilation=args[3])
    cols, out_size = im2col(x.detach(), *args)
    assert out_size == tuple(y.shape[2:])
    w_cols = channels_inner_weight(w, 1)[0]  # [4, K*C] in the column order of im2col
    y_gemm = (cols @ w_cols.t()).reshape((2, ) + out_size + (4, )).movedim(-1, 1)
    torch.testing.assert_close(y_gemm, y)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(gy)
    gx = col2im(gy.movedim(1, -1).reshape(-1, 4) @ w_cols, x.shape, *args)
    torch.testing.assert_close(gx, x.grad)


def test_im2col_works_on_int8_codes():
    x = torch.randint(-127, 128, (1, 2, 5, 5), dtype=torch.int8)
    cols, _ = im2col(x, (3, 3), (1, 1), (1, 1), (1, 1))
    ref, _ = im2col(x.float(), (3, 3), (1, 1), (1, 1), (1, 1))
    assert cols.dtype == torch.int8 and torch.equal(cols.float(), ref)


@pytest.mark.parametrize('nd', [1, 2, 3])
@pytest.mark.parametrize('k, s, p, d, groups', [(3, 1, 1, 1, 1), (3, 2, 2, 2, 2), (1, 1, 0, 1, 3),
                                                (2, 3, 0, 1, 6)])
def test_channels_inner_columns_pair_with_channels_inner_weight(nd, k, s, p, d, groups):
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, 6) + (7, ) * nd, generator=g, dtype=torch.float64)
    w = torch.randn((4 * groups, 6 // groups) + (k, ) * nd, generator=g, dtype=torch.float64)
    args = ((k, ) * nd, (s, ) * nd, (p, ) * nd, (d, ) * nd)
    y = CONVS[nd](x, w, stride=args[1], padding=args[2], dilation=args[3], groups=groups)
    cols, out_size = im2col(x, *args, groups=groups)
    w_ci = channels_inner_weight(w, groups)  # [G, 4, K*Cg]
    per_group = cols.reshape(cols.shape[0], groups, -1).transpose(0, 1) @ w_ci.transpose(1, 2)
    y_gemm = per_group.transpose(0, 1).reshape((2, ) + out_size + (4 * groups, )).movedim(-1, 1)
    torch.testing.assert_close(y_gemm, y)
    assert torch.equal(channels_inner_to_weight(w_ci.reshape(4 * groups, -1), w.shape), w)


@pytest.mark.parametrize('shape, groups', [((6, 4, 3, 3), 1), ((6, 2, 3, 3), 3),
                                           ((5, 7, 2, 3, 1), 1), ((8, 3, 5), 1),
                                           ((16, 16, 1, 1), 2), ((16, 8, 1, 1), 1)])
def test_weight_columns_is_channels_inner_weight_transposed(shape, groups):
    from mmdaq.ops.im2col import weight_columns
    w = torch.randint(-127, 128, shape, dtype=torch.int8)
    got = weight_columns(w, groups)
    # a GEMM operand as oneDNN and cuBLASLt take it: row-major, or column-major for one group
    assert got[0].is_contiguous() or (groups == 1 and got[0].t().is_contiguous())
    assert torch.equal(got, channels_inner_weight(w, groups).transpose(1, 2))
    if math.prod(shape[2:]) == 1 and groups == 1:  # 1x1: a view of the weight
        assert got.data_ptr() == w.data_ptr()


@pytest.mark.needs_ext
@pytest.mark.parametrize('nd', [1, 2, 3])
@pytest.mark.parametrize('k, s, p, d, groups', [(3, 1, 1, 1, 1), (3, 2, 2, 2, 2), (1, 1, 0, 1, 3),
                                                (2, 3, 0, 1, 6), (5, 1, 2, 1, 1), (3, 1, 4, 1, 1)])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last', 'sliced'])
def test_compiled_int8_im2col_equals_the_reference(nd, k, s, p, d, groups, layout):
    from mmdaq.ops.im2col import im2col_reference
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(-127, 128, (3, 12) + (7, ) * nd, generator=gen, dtype=torch.int8)
    if layout == 'channels_last':  # already in the layout the kernel reads: no copy
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)
    elif layout == 'sliced':  # neither layout: laid out first
        x = x[:, :, ..., 1:]
    args = ((k, ) * nd, (s, ) * nd, (p, ) * nd, (d, ) * nd)
    got = torch.ops.mmdaq.int8_im2col(x, *args, groups)
    want = im2col_reference(x, *args, groups=groups)
    assert got.dtype == torch.int8 and got.is_contiguous() and torch.equal(got, want)
    assert torch.equal(im2col(x, *args, groups=groups)[0], want)


@pytest.mark.needs_ext
def test_compiled_int8_im2col_opcheck_and_bad_input():
    x = torch.randint(-127, 128, (2, 4, 5, 6), dtype=torch.int8)
    torch.library.opcheck(torch.ops.mmdaq.int8_im2col.default,
                          (x, [3, 3], [2, 1], [1, 1], [1, 2], 2))
    with pytest.raises(RuntimeError, match='int8_im2col: x must be int8'):
        torch.ops.mmdaq.int8_im2col(x.float(), [3, 3], [1, 1], [1, 1], [1, 1], 1)
    with pytest.raises(RuntimeError, match='one value per spatial dim'):
        torch.ops.mmdaq.int8_im2col(x, [3], [1, 1], [1, 1], [1, 1], 1)
    with pytest.raises(RuntimeError, match='must be positive and divide'):
        torch.ops.mmdaq.int8_im2col(x, [3, 3], [1, 1], [1, 1], [1, 1], 3)
    with pytest.raises(RuntimeError, match='larger than the padded input'):
        torch.ops.mmdaq.int8_im2col(x, [9, 3], [1, 1], [1, 1], [1, 1], 1)
    with pytest.raises(RuntimeError, match='padding not negative'):
        torch.ops.mmdaq.int8_im2col(x, [3, 3], [1, 1], [-1, 1], [1, 1], 1)
