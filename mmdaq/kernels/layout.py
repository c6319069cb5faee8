"""``mmdaq::int8_channels_last``: int8 codes to channels-last storage in one pass;
``mmdaq::int8_transposed_weight``: the weight of the input gradient (transposed, taps flipped)
in the layout its GEMM reads, in one pass; ``mmdaq::int8_im2col``: the columns of a convolution
from int8 codes in one pass; and ``mmdaq::int32_to_weight``: the weight gradient from its GEMM's
sums, scaled into the weight's layout.

Torch's strided copy moves one byte at a time when it turns an NC* int8 tensor into
channels last; the compiled kernel does it in vectorized 16 x 16 blocks. Used by im2col
(whose columns have the channels innermost) and, shifted to uint8, by oneDNN's convolution
(:mod:`mmdaq.ops.onednn_conv`).
"""
import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from .extension import compiled_op_available, register_fake_if_built, require_extension

#: Added to a code to make it oneDNN's unsigned activation (its zero point).
UINT8_ZERO_POINT = 128


def _check(x: Tensor) -> None:
    torch._check(x.dtype == torch.int8 and 3 <= x.dim() <= 5,
                 lambda: 'int8_channels_last: x must be int8 [N, C, *S] with 1 to 3 spatial '
                 f'dims, but got {x.dtype} of shape {tuple(x.shape)}')


@register_fake_if_built('mmdaq::int8_channels_last')
def _int8_channels_last_fake(x: Tensor, to_uint8: bool) -> Tensor:
    _check(x)
    n, c = x.shape[:2]
    dtype = torch.uint8 if to_uint8 else torch.int8
    return x.new_empty((n, ) + tuple(x.shape[2:]) + (c, ), dtype=dtype).movedim(-1, 1)


def int8_channels_last_reference(x: Tensor, to_uint8: bool = False) -> Tensor:
    """Plain-PyTorch twin of :func:`int8_channels_last` (same values and strides)."""
    _check(x)
    if to_uint8:
        x = (x.to(torch.int16) + UINT8_ZERO_POINT).to(torch.uint8)
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def int8_channels_last(x: Tensor, to_uint8: bool = False) -> Tensor:
    """Codes ``x`` stored as [N, *S, C] (channels-last strides), optionally as uint8 ``x + 128``.

    The compiled kernel on CPU where it is built, else :func:`int8_channels_last_reference`.

    Args:
        x (Tensor[N, C, *S], int8): Codes, 1 to 3 spatial dims.
        to_uint8 (bool): Return ``x + 128`` as uint8. Defaults to False.

    Returns:
        Tensor[N, C, *S] (int8, or uint8 with ``to_uint8``), channels last in memory.
    """
    if compiled_op_available('int8_channels_last', x.device):
        return torch.ops.mmdaq.int8_channels_last(x, to_uint8)
    return int8_channels_last_reference(x, to_uint8)


def _check_weight(w: Tensor) -> None:
    torch._check(w.dtype == torch.int8 and 3 <= w.dim() <= 5,
                 lambda: 'int8_transposed_weight: w must be int8 [C_out, C_in, *k] with 1 to 3 '
                 f'spatial dims, but got {w.dtype} of shape {tuple(w.shape)}')


def _transposed_weight_strides(w: Tensor) -> Tuple[List[int], List[int]]:
    """Sizes [C_in, C_out, *k] and the strides of their storage [*k, C_out, C_in]."""
    sizes = [w.shape[1], w.shape[0]] + list(w.shape[2:])
    strides = [1, sizes[0]] + [0] * (len(sizes) - 2)
    step = sizes[0] * sizes[1]
    for d in reversed(range(2, len(sizes))):
        strides[d] = step
        step *= sizes[d]
    return sizes, strides


@register_fake_if_built('mmdaq::int8_transposed_weight')
def _int8_transposed_weight_fake(w: Tensor) -> Tensor:
    _check_weight(w)
    return w.new_empty_strided(*_transposed_weight_strides(w))


def int8_transposed_weight_reference(w: Tensor) -> Tensor:
    """Plain-PyTorch twin of :func:`int8_transposed_weight` (same values and strides)."""
    _check_weight(w)
    nd = w.dim() - 2
    w_t = w.transpose(0, 1).flip(dims=tuple(range(2, 2 + nd)))  # [C_in, C_out, *k]
    stored = w_t.permute(tuple(range(2, 2 + nd)) + (1, 0)).contiguous()  # [*k, C_out, C_in]
    return stored.permute((nd + 1, nd) + tuple(range(nd))).as_strided(
        *_transposed_weight_strides(w))  # also the strides of 1-sized dims


def int8_transposed_weight(w: Tensor) -> Tensor:
    """The weight of G_X as a stride-1 convolution of G_Y (one group), stored for its GEMM.

    ``w_t[i, o, j] = w[o, i, K - 1 - j]`` (taps flipped in every spatial dim), stored
    [*k, C_out, C_in], where the im2col GEMM's right operand is a view of it. The compiled
    kernel on CPU where it is built, else :func:`int8_transposed_weight_reference`.

    Args:
        w (Tensor[C_out, C_in, *k], int8): Weight codes, 1 to 3 spatial dims.

    Returns:
        Tensor[C_in, C_out, *k], int8.
    """
    if compiled_op_available('int8_transposed_weight', w.device):
        return torch.ops.mmdaq.int8_transposed_weight(w)
    return int8_transposed_weight_reference(w)


def _output_size(size, kernel, stride, padding, dilation):
    return [(s + 2 * p - d * (k - 1) - 1) // st + 1
            for s, k, st, p, d in zip(size, kernel, stride, padding, dilation)]


@register_fake_if_built('mmdaq::int8_im2col')
def _int8_im2col_fake(x: Tensor, kernel, stride, padding, dilation, groups) -> Tensor:
    torch._check(x.dtype == torch.int8 and 3 <= x.dim() <= 5,
                 lambda: 'int8_im2col: x must be int8 [N, C, *S] with 1 to 3 spatial dims, but '
                 f'got {x.dtype} of shape {tuple(x.shape)}')
    out_size = _output_size(x.shape[2:], kernel, stride, padding, dilation)
    return x.new_empty((x.shape[0] * math.prod(out_size), x.shape[1] * math.prod(kernel)))


def int8_im2col(x: Tensor, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                dilation: Sequence[int], groups: int = 1) -> Tensor:
    """The columns of a convolution of int8 codes, by the compiled kernel (CPU).

    :func:`mmdaq.ops.im2col.im2col_reference` is its plain-PyTorch twin (same values).

    Args:
        x (Tensor[N, C, *S], int8): Codes, 1 to 3 spatial dims, any layout (laid out channels
            last first where they are not).
        kernel, stride, padding, dilation (Sequence[int]): One value per spatial dim.
        groups (int): G of the convolution. Defaults to 1.

    Returns:
        Tensor[N*L, C*K], int8, contiguous: the columns of output position l in (group, k_1 ..
        k_d, channel of the group) order, zeros where a tap falls in the padding.
    """
    require_extension('int8_im2col')
    return torch.ops.mmdaq.int8_im2col(x, list(kernel), list(stride), list(padding),
                                       list(dilation), groups)


@register_fake_if_built('mmdaq::int32_to_weight')
def _int32_to_weight_fake(acc: Tensor, scale: Tensor, weight_shape) -> Tensor:
    return acc.new_empty(tuple(weight_shape), dtype=torch.float32)


def int32_to_weight_reference(acc: Tensor, scale: Tensor, weight_shape) -> Tensor:
    """Plain-PyTorch twin of :func:`int32_to_weight`."""
    c_out, c_in = weight_shape[:2]
    kernel = tuple(weight_shape[2:])
    grad = acc.reshape((c_out, ) + kernel + (c_in, )).movedim(-1, 1).float()
    return (grad * scale.reshape((-1, ) + (1, ) * (len(weight_shape) - 1))).contiguous()


def int32_to_weight(acc: Tensor, scale: Tensor, weight_shape) -> Tensor:
    """The weight gradient from its GEMM's int32 sums, scaled per output channel.

    Args:
        acc (Tensor[C_out, K*C_in], int32): Sums, columns in (k, c) order.
        scale (Tensor[C_out], float32): Multiplier per row.
        weight_shape: [C_out, C_in, *k].

    Returns:
        Tensor[C_out, C_in, *k], float32, contiguous: ``float(acc) * scale`` (one rounding) in
        the weight's layout. The compiled kernel on CPU where built.
    """
    if compiled_op_available('int32_to_weight', acc.device):
        return torch.ops.mmdaq.int32_to_weight(acc, scale, list(weight_shape))
    return int32_to_weight_reference(acc, scale, weight_shape)
