"""im2col / col2im for 1-D, 2-D and 3-D convolutions, on any dtype (int8 included).

A convolution becomes a GEMM over the columns ``[N*L, C*K]`` with L the number of
output positions and K the kernel volume. :func:`im2col` builds them from strided
views (``Tensor.unfold``), so it works on the int8 codes directly and copies once.
:func:`col2im` is its adjoint (overlapping windows are summed) and computes the
input gradient from the column gradient.
"""
import itertools
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def conv_output_size(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int], dilation: Sequence[int]) -> Tuple[int, ...]:
    """Spatial output size of a convolution, per dim."""
    return tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                 for s, k, st, p, d in zip(size, kernel, stride, padding, dilation))


def im2col(x: Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
           dilation: Sequence[int]) -> Tuple[Tensor, Tuple[int, ...]]:
    """Columns of a convolution input.

    Args:
        x (Tensor[N, C, *S]): Input with 1 to 3 spatial dims S (any dtype).
        kernel, stride, padding, dilation (Sequence[int]): One value per spatial dim.

    Returns:
        tuple: cols (Tensor[N*L, C*K], x.dtype), ordered (C, k_1, .., k_d) along the
        second dim like ``weight.reshape(C_out, -1)``; and the output size (O_1, .., O_d)
        with L = prod(O).
    """
    n, c = x.shape[:2]
    nd = x.dim() - 2
    out_size = conv_output_size(x.shape[2:], kernel, stride, padding, dilation)
    if any(p > 0 for p in padding):
        pads = [p for p in reversed(padding) for _ in range(2)]
        x = F.pad(x, pads)
    for i in range(nd):  # [N, C, O_1.., S_i.., w_1..]: windows appended as trailing dims
        window = dilation[i] * (kernel[i] - 1) + 1
        x = x.unfold(2 + i, window, stride[i])
    if any(d > 1 for d in dilation):
        x = x[(Ellipsis, ) + tuple(slice(None, None, d) for d in dilation)]
    x = x[(slice(None), slice(None)) + tuple(slice(0, o) for o in out_size)]
    # [N, C, O.., k..] -> [N, O.., C, k..] -> [N*L, C*K]
    perm = (0, ) + tuple(range(2, 2 + nd)) + (1, ) + tuple(range(2 + nd, 2 + 2 * nd))
    cols = x.permute(perm).reshape(n * _prod(out_size), c * _prod(kernel))
    return cols, out_size


def col2im(cols: Tensor, input_shape: Sequence[int], kernel: Sequence[int],
           stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> Tensor:
    """Adjoint of :func:`im2col`: sum the column entries back into input positions.

    Args:
        cols (Tensor[N*L, C*K]): Column gradient (float).
        input_shape (Sequence[int]): (N, C, *S) of the convolution input.
        kernel, stride, padding, dilation (Sequence[int]): One value per spatial dim.

    Returns:
        Tensor[N, C, *S]: with cols' dtype.
    """
    n, c = input_shape[:2]
    size = tuple(input_shape[2:])
    nd = len(size)
    out_size = conv_output_size(size, kernel, stride, padding, dilation)
    # [N*L, C*K] -> [N, O.., C, k..] -> [N, C, O.., k..]
    cols = cols.reshape((n, ) + out_size + (c, ) + tuple(kernel))
    cols = cols.permute((0, 1 + nd) + tuple(range(1, 1 + nd)) + tuple(range(2 + nd, 2 + 2 * nd)))
    padded = cols.new_zeros((n, c) + tuple(s + 2 * p for s, p in zip(size, padding)))
    for offset in itertools.product(*(range(k) for k in kernel)):
        target = (slice(None), slice(None)) + tuple(
            slice(j * d, j * d + st * (o - 1) + 1, st)
            for j, d, st, o in zip(offset, dilation, stride, out_size))
        padded[target] += cols[(Ellipsis, ) + offset]
    crop = (slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in zip(padding, size))
    return padded[crop]


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out
