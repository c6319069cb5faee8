"""``mmdaq::int8_channels_last``: int8 codes to channels-last storage in one pass; and
``mmdaq::int32_to_weight``: the weight gradient from its GEMM's sums, scaled into the weight's
layout.

Torch's strided copy moves one byte at a time when it turns an NC* int8 tensor into
channels last; the compiled kernel does it in vectorized 16 x 16 blocks. Used by im2col
(whose columns have the channels innermost) and, shifted to uint8, by oneDNN's convolution
(:mod:`mmdaq.ops.onednn_conv`).
"""
import torch
from torch import Tensor

from .extension import compiled_op_available, register_fake_if_built

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
