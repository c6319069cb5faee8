"""``mmdaq::int32_to_channels_first``: the INT8 GEMM epilogue in one pass.

A channels-last GEMM result ``acc[N*L, C]`` (int32; on CPU also float32 holding integers, as
oneDNN's convolution writes them) becomes the float32 ``out[N, C, *S]`` with
``out[n, c, l] = acc[n * L + l, c] * scale (+ bias[c])``. In eager PyTorch this is a multiply
(with an int -> float conversion), a bias add and a strided transpose copy: three passes.
:func:`channels_first_epilogue` uses the kernel where it is built and applies (CPU, int32),
else :func:`int32_to_channels_first_reference`; both give the same floats (tested).
"""
from typing import Optional, Sequence

import torch
from torch import Tensor

from .extension import compiled_op_available, register_fake_if_built, require_extension


@register_fake_if_built('mmdaq::int32_to_channels_first')
def _int32_to_channels_first_fake(acc: Tensor, scale: Tensor, bias: Optional[Tensor],
                                  out_shape: Sequence[int]) -> Tensor:
    torch._check(acc.dtype in (torch.int32, torch.float32) and acc.dim() == 2,
                 lambda: 'int32_to_channels_first: acc must be a 2-d int32 (or, on CPU, '
                 'float32) tensor [N*L, C]')
    return acc.new_empty(list(out_shape), dtype=torch.float32)


def int32_to_channels_first(acc: Tensor, scale: Tensor, bias: Optional[Tensor],
                            out_shape: Sequence[int]) -> Tensor:
    """The compiled epilogue: ``acc[N*L, C] * scale (+ bias)`` as a contiguous Tensor[N, C, *S].

    Args:
        acc (Tensor[N*L, C], int32; on CPU also float32): GEMM result, integer-valued.
        scale (Tensor[1] or Tensor[C], float32): Multiplier per tensor or per channel.
        bias (Tensor[C], float32, optional): Added after scaling.
        out_shape (Sequence[int]): ``(N, C, *S)``.

    Returns:
        Tensor[N, C, *S], float32.
    """
    require_extension('int32_to_channels_first')
    return torch.ops.mmdaq.int32_to_channels_first(acc, scale, bias, list(out_shape))


def int32_to_channels_first_reference(acc: Tensor, scale: Tensor, bias: Optional[Tensor],
                                      out_shape: Sequence[int]) -> Tensor:
    """Plain-PyTorch twin of the kernel (any integer or float ``acc``)."""
    n, c = out_shape[:2]
    y = acc * scale  # int -> float32 by type promotion; scale: Tensor[] or Tensor[C]
    if bias is not None:
        y = y + bias.float()
    return y.reshape((n, ) + tuple(out_shape[2:]) + (c, )).movedim(-1, 1).contiguous()


def channels_first_epilogue(acc: Tensor, scale: Tensor, bias: Optional[Tensor],
                            out_shape: Sequence[int]) -> Tensor:
    """``acc[N*L, C] * scale (+ bias)`` as a contiguous float32 Tensor[N, C, *S].

    Args:
        acc (Tensor[N*L, C]): GEMM result, integer-valued.
        scale (Tensor[] or Tensor[C], float32): Multiplier per tensor or per channel.
        bias (Tensor[C], optional): Added after scaling.
        out_shape (Sequence[int]): ``(N, C, *S)``.
    """
    # The CPU kernel also takes float32 accumulators (oneDNN's, integer-valued).
    kernel_dtypes = (torch.int32, torch.float32) if acc.device.type == 'cpu' else (torch.int32, )
    if acc.dtype in kernel_dtypes and compiled_op_available('int32_to_channels_first',
                                                            acc.device):
        bias = None if bias is None else bias.float().contiguous()
        return int32_to_channels_first(acc, scale.float().reshape(-1), bias, out_shape)
    return int32_to_channels_first_reference(acc, scale, bias, out_shape)
