"""The Triton convolutions of :mod:`.triton_conv` as ``torch.library`` custom ops.

``mmdaq::int8_conv2d_triton`` (the scaled forward), ``mmdaq::int8_conv2d_dgrad_triton`` (the
input gradient, any stride) and ``mmdaq::int8_conv2d_wgrad_triton`` (the weight gradient) are
dispatched by key like every op of mmdaq: a CUDA kernel (the Triton launches) and a fake
(shapes only, for tracing). There is no CPU kernel: callers ask
:func:`.triton_conv.conv2d_int8_supported`, :func:`.triton_conv.conv2d_dgrad_int8_supported`
or :func:`.triton_conv.conv2d_wgrad_int8_supported` first, and Triton's interpreter
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
    return g_q.new_empty((g_q.shape[1], x_q.shape[1], kernel[0], kernel[1]),
                         dtype=torch.float32)


def _check_dgrad_args(g_q: Tensor, w_q: Tensor, scale: Tensor, input_size: Sequence[int],
                      stride: Sequence[int], padding: Sequence[int],
                      dilation: Sequence[int]) -> None:
    """The contract of ``mmdaq::int8_conv2d_dgrad_triton``, checked by its kernel and fake."""
    torch._check(
        g_q.dtype == w_q.dtype == torch.int8 and g_q.dim() == w_q.dim() == 4
        and g_q.shape[1] == w_q.shape[0],
        lambda: 'g_q and w_q must be int8 codes [N, C_out, OH, OW] and [C_out, C, KH, KW], but '
        f'got {g_q.dtype} {tuple(g_q.shape)} and {w_q.dtype} {tuple(w_q.shape)}')
    torch._check(
        len(input_size) == 4 and input_size[0] == g_q.shape[0] and input_size[1] == w_q.shape[1],
        lambda: f'input_size must be (N, C, H, W) = ({g_q.shape[0]}, {w_q.shape[1]}, H, W), '
        f'but got {tuple(input_size)}')
    out_size = tuple(conv_output_size(input_size[2:], w_q.shape[2:], stride, padding, dilation))
    torch._check(
        out_size == tuple(g_q.shape[2:]),
        lambda: f'g_q must have the output size {out_size} of a convolution of input_size, but '
        f'got {tuple(g_q.shape[2:])}; check input_size, stride, padding and dilation')
    torch._check(scale.numel() == 1,
                 lambda: f'scale must be one value (s_g * s_w), but got shape {tuple(scale.shape)}')


@torch.library.custom_op('mmdaq::int8_conv2d_dgrad_triton', mutates_args=(),
                         device_types='cuda')
def _int8_conv2d_dgrad_triton(g_q: Tensor, w_q: Tensor, scale: Tensor, input_size: List[int],
                              stride: List[int], padding: List[int],
                              dilation: List[int]) -> Tensor:
    _check_dgrad_args(g_q, w_q, scale, input_size, stride, padding, dilation)
    return triton_conv.int8_conv2d_dgrad_triton(g_q, w_q, scale, input_size, stride, padding,
                                                dilation)


@_int8_conv2d_dgrad_triton.register_fake
def _int8_conv2d_dgrad_triton_fake(g_q, w_q, scale, input_size, stride, padding, dilation):
    _check_dgrad_args(g_q, w_q, scale, input_size, stride, padding, dilation)
    return g_q.new_empty(tuple(input_size), dtype=torch.float32)


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
    """The weight gradient ``scale[co] * sum_m g_q[m, co] * cols(x_q)[m, (c, kh, kw)]`` in
    Triton (CUDA; one launch, two when the reduction is split); arguments as
    :func:`.triton_conv.int8_conv2d_wgrad_triton`.

    Returns:
        Tensor[C_out, C, KH, KW], float32, contiguous: the weight's layout.
    """
    return _int8_conv2d_wgrad_triton(g_q, x_q, list(kernel), scale, list(stride), list(padding),
                                     list(dilation), splits)


def triton_int8_conv2d_dgrad(g_q: Tensor, w_q: Tensor, scale: Tensor, input_size: Sequence[int],
                             stride: Sequence[int], padding: Sequence[int],
                             dilation: Sequence[int]) -> Tensor:
    """The input gradient ``scale * conv_transpose2d(g_q, w_q)`` in one Triton kernel (CUDA),
    for any stride, padding and dilation; arguments as
    :func:`.triton_conv.int8_conv2d_dgrad_triton`.

    Args:
        g_q (Tensor[N, C_out, OH, OW], int8): Output-gradient codes.
        w_q (Tensor[C_out, C, KH, KW], int8): Weight codes.
        scale (Tensor[], float32): Multiplier of the integer sums (``s_g * s_w``).
        input_size (Sequence[int]): (N, C, H, W) of the convolution's input.
        stride, padding, dilation (Sequence[int]): Two values each, of the forward convolution.

    Returns:
        Tensor[N, C, H, W], float32, contiguous.
    """
    return _int8_conv2d_dgrad_triton(g_q, w_q, scale, list(input_size), list(stride),
                                     list(padding), list(dilation))
