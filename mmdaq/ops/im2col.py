"""im2col / col2im for 1-D, 2-D and 3-D convolutions, on any dtype (int8 included).

A convolution becomes a GEMM over the columns ``[N*L, C*K]`` with L the number of
output positions and K the kernel volume. :func:`im2col` builds them from int8 codes on CPU
with the compiled ``mmdaq::int8_im2col`` (one pass: runs of channels copied from the
channels-last codes, zeros for the padding), and otherwise from strided views
(:func:`im2col_reference`: ``Tensor.unfold`` on any dtype, one copy), which is its reference.
:func:`col2im` is its adjoint (overlapping windows are summed) and computes the
input gradient from the column gradient.
"""
import itertools
import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels import compiled_op_available, int8_channels_last, int8_im2col


def conv_output_size(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int], dilation: Sequence[int]) -> Tuple[int, ...]:
    """Spatial output size of a convolution, per dim."""
    return tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                 for s, k, st, p, d in zip(size, kernel, stride, padding, dilation))


def im2col(x: Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
           dilation: Sequence[int], groups: int = 1) -> Tuple[Tensor, Tuple[int, ...]]:
    """Columns of a convolution input, channels innermost.

    The columns are ordered (G, k_1, .., k_d, C/G) along the second dim, so the copy moves runs
    of C/G contiguous values of a channels-last input instead of single elements;
    :func:`channels_inner_weight` gives the matching weight.

    Args:
        x (Tensor[N, C, *S]): Input with 1 to 3 spatial dims S (any dtype).
        kernel, stride, padding, dilation (Sequence[int]): One value per spatial dim.
        groups (int): G of the convolution. Defaults to 1.

    Returns:
        tuple: cols (Tensor[N*L, C*K], x.dtype) and the output size (O_1, .., O_d) with
        L = prod(O).
    """
    out_size = conv_output_size(x.shape[2:], kernel, stride, padding, dilation)
    if x.dtype == torch.int8 and 1 <= x.dim() - 2 <= 3 and \
            compiled_op_available('int8_im2col', x.device):
        return int8_im2col(x, kernel, stride, padding, dilation, groups), out_size
    return im2col_reference(x, kernel, stride, padding, dilation, groups), out_size


def im2col_reference(x: Tensor, kernel: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int], dilation: Sequence[int], groups: int = 1) -> Tensor:
    """The columns of :func:`im2col` from strided views (``Tensor.unfold``) and one copy: any
    dtype and device; the twin the compiled ``mmdaq::int8_im2col`` is tested against."""
    n, c = x.shape[:2]
    nd = x.dim() - 2
    out_size = conv_output_size(x.shape[2:], kernel, stride, padding, dilation)
    x = x.movedim(1, -1)  # [N, *S, C]
    if any(p > 0 for p in padding):
        x = F.pad(x, [0, 0] + [p for p in reversed(padding) for _ in range(2)])
    for i in range(nd):  # [N, O.., C, w_1..]: windows appended as trailing dims
        window = dilation[i] * (kernel[i] - 1) + 1
        x = x.unfold(1 + i, window, stride[i])
    if any(d > 1 for d in dilation):
        x = x[(Ellipsis, ) + tuple(slice(None, None, d) for d in dilation)]
    x = x[(slice(None), ) + tuple(slice(0, o) for o in out_size)]
    x = x.reshape(x.shape[:1 + nd] + (groups, c // groups) + x.shape[2 + nd:])
    # [N, O.., G, Cg, k..] -> [N, O.., G, k.., Cg] -> [N*L, C*K]
    perm = tuple(range(2 + nd)) + tuple(range(3 + nd, 3 + 2 * nd)) + (2 + nd, )
    return x.permute(perm).reshape(n * math.prod(out_size), c * math.prod(kernel))


def channels_inner_weight(w: Tensor, groups: int) -> Tensor:
    """Weight in the column order of ``im2col(..., groups=G)``.

    Args:
        w (Tensor[C_out, C_in/G, *k]): Weight (any dtype).
        groups (int): G.

    Returns:
        Tensor[G, C_out/G, K*C_in/G]: row r of group g pairs with the columns of group g.
    """
    c_out = w.shape[0]
    if math.prod(w.shape[2:]) == 1:  # 1x1: the weight itself
        return w.reshape(groups, c_out // groups, -1)
    if w.dtype == torch.int8 and 3 <= w.dim() <= 5:  # codes: the vectorized layout kernel
        rows = int8_channels_last(w).movedim(1, -1)  # [C_out, k.., Cg], contiguous
        return rows.reshape(groups, c_out // groups, -1)
    w = w.reshape((groups, c_out // groups) + tuple(w.shape[1:]))  # [G, Cout_g, Cg, k..]
    return w.movedim(2, -1).reshape(groups, c_out // groups, -1)


def weight_columns(w: Tensor, groups: int) -> Tensor:
    """Weight as the right operand of the im2col GEMM: ``channels_inner_weight(w,
    G).transpose(1, 2)``.

    A view where ``w`` is stored spatial dims first ([*k, C_in/G, C_out/G] per group); for one
    group, the column-major transpose of :func:`channels_inner_weight` (a view for 1x1 kernels;
    the integer GEMMs take a column-major right operand as it is); else one permuting copy.

    Args:
        w (Tensor[C_out, C_in/G, *k]): Weight (any dtype).
        groups (int): G.

    Returns:
        Tensor[G, K*C_in/G, C_out/G]: row-major or, for one group, possibly column-major.
    """
    c_out, c_in_g = w.shape[:2]
    cols = w.reshape(groups, c_out // groups, c_in_g, -1).permute(0, 3, 2, 1)  # [G, K, Cg, Co]
    if cols.is_contiguous() or groups > 1:
        return cols.reshape(groups, -1, c_out // groups).contiguous()
    return channels_inner_weight(w, 1).transpose(1, 2)


def channels_inner_to_weight(t: Tensor, weight_shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`channels_inner_weight`: [C_out, K*C_in/G] -> [C_out, C_in/G, *k]."""
    c_out, c_in_g = weight_shape[:2]
    kernel = tuple(weight_shape[2:])
    return t.reshape((c_out, ) + kernel + (c_in_g, )).movedim(-1, 1)


def col2im(cols: Tensor, input_shape: Sequence[int], kernel: Sequence[int],
           stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
           groups: int = 1) -> Tensor:
    """Adjoint of :func:`im2col`: sum the column entries back into input positions.

    Args:
        cols (Tensor[N*L, C*K]): Column gradient (float), in :func:`im2col`'s column order.
        input_shape (Sequence[int]): (N, C, *S) of the convolution input.
        kernel, stride, padding, dilation (Sequence[int]): One value per spatial dim.
        groups (int): G of the convolution. Defaults to 1.

    Returns:
        Tensor[N, C, *S]: with cols' dtype.
    """
    n, c = input_shape[:2]
    size = tuple(input_shape[2:])
    nd = len(size)
    out_size = conv_output_size(size, kernel, stride, padding, dilation)
    # [N*L, C*K] -> [N, O.., G, k.., Cg] -> [N, G, Cg, O.., k..] -> [N, C, O.., k..]
    cols = cols.reshape((n, ) + out_size + (groups, ) + tuple(kernel) + (c // groups, ))
    perm = (0, 1 + nd, 2 + 2 * nd) + tuple(range(1, 1 + nd)) + tuple(range(2 + nd, 2 + 2 * nd))
    cols = cols.permute(perm).reshape((n, c) + out_size + tuple(kernel))
    padded = cols.new_zeros((n, c) + tuple(s + 2 * p for s, p in zip(size, padding)))
    for offset in itertools.product(*(range(k) for k in kernel)):
        target = (slice(None), slice(None)) + tuple(
            slice(j * d, j * d + st * (o - 1) + 1, st)
            for j, d, st, o in zip(offset, dilation, stride, out_size))
        padded[target] += cols[(Ellipsis, ) + offset]
    crop = (slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in zip(padding, size))
    return padded[crop]
