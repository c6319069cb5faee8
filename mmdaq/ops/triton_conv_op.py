"""The Triton convolutions of :mod:`.triton_conv` as ``torch.library`` custom ops.

``mmdaq::int8_conv2d_triton`` (the scaled forward, also the stride-1 input gradient) and
``mmdaq::int8_conv2d_wgrad_triton`` (the weight gradient) are dispatched by key like every op
of mmdaq: a CUDA kernel (the Triton launch) and a fake (shapes only, for tracing). There is no
CPU kernel: callers ask :func:`.triton_conv.conv2d_int8_supported` /
:func:`.triton_conv.conv2d_wgrad_int8_supported` first, and Triton's interpreter
(``TRITON_INTERPRET=1``) runs the launchers themselves on CPU tensors, as the tests do. The ops
are defined whether or not Triton is installed; without it nothing asks for them.
"""
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from . import triton_conv
from .im2col import conv_output_size


@torch.library.custom_op('mmdaq::int8_conv2d_triton', mutates_args=(), device_types='cuda')
def _int8_conv2d_triton(x_q: Tensor, w_q: Tensor, scale: Tensor, bias: Optional[Tensor],
                        stride: List[int], padding: List[int], dilation: List[int]) -> Tensor:
    return triton_conv.int8_conv2d_triton(x_q, w_q, scale, bias, stride, padding, dilation)[0]


@_int8_conv2d_triton.register_fake
def _int8_conv2d_triton_fake(x_q, w_q, scale, bias, stride, padding, dilation):
    out_size = conv_output_size(x_q.shape[2:], w_q.shape[2:], stride, padding, dilation)
    return x_q.new_empty((x_q.shape[0], w_q.shape[0]) + tuple(out_size), dtype=torch.float32)


@torch.library.custom_op('mmdaq::int8_conv2d_wgrad_triton', mutates_args=(),
                         device_types='cuda')
def _int8_conv2d_wgrad_triton(g_q: Tensor, x_q: Tensor, kernel: List[int], scale: Tensor,
                              stride: List[int], padding: List[int], dilation: List[int],
                              splits: Optional[int]) -> Tensor:
    return triton_conv.int8_conv2d_wgrad_triton(g_q, x_q, kernel, scale, stride, padding,
                                                dilation, splits)


@_int8_conv2d_wgrad_triton.register_fake
def _int8_conv2d_wgrad_triton_fake(g_q, x_q, kernel, scale, stride, padding, dilation, splits):
    return g_q.new_empty((g_q.shape[1], kernel[0] * kernel[1] * x_q.shape[1]),
                         dtype=torch.float32)


def triton_int8_conv2d(x_q: Tensor, w_q: Tensor, scale: Tensor, bias: Optional[Tensor],
                       stride: Sequence[int], padding: Sequence[int],
                       dilation: Sequence[int]) -> Tensor:
    """``conv2d(x_q, w_q) * scale (+ bias)`` from int8 codes in one Triton kernel (CUDA).

    Args:
        x_q (Tensor[N, C, H, W], int8): Input codes.
        w_q (Tensor[C_out, C, KH, KW], int8): Weight codes.
        scale (Tensor[] or Tensor[C_out], float32): Multiplier of the integer sums.
        bias (Tensor[C_out], optional): Added after scaling.
        stride, padding, dilation (Sequence[int]): Two values each.

    Returns:
        Tensor[N, C_out, OH, OW], float32, contiguous.
    """
    return _int8_conv2d_triton(x_q, w_q, scale, bias, list(stride), list(padding),
                               list(dilation))


def triton_int8_conv2d_wgrad(g_q: Tensor, x_q: Tensor, kernel: Sequence[int], scale: Tensor,
                             stride: Sequence[int], padding: Sequence[int],
                             dilation: Sequence[int], splits: Optional[int] = None) -> Tensor:
    """The weight gradient ``scale[co] * sum_m g_q[m, co] * cols(x_q)[m, (k, c)]`` in one
    Triton kernel (CUDA); arguments as :func:`.triton_conv.int8_conv2d_wgrad_triton`.

    Returns:
        Tensor[C_out, KH*KW*C], float32, columns in (k, c) order.
    """
    return _int8_conv2d_wgrad_triton(g_q, x_q, list(kernel), scale, list(stride), list(padding),
                                     list(dilation), splits)
