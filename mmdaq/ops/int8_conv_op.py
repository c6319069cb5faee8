"""The INT8 layer as two ``torch.library`` custom ops, so ``torch.compile`` has no graph break.

``mmdaq::int8_conv`` (forward) and ``mmdaq::int8_conv_backward`` run the passes of
:mod:`.int8_layer`; an autograd formula connects them, and :func:`int8_conv` /
:func:`int8_linear` are the public functions of the layer. The scheme's Python state (clip ratios,
call counters, statistics) changes inside the ops, out of the tracer's sight: traced as an
autograd.Function, those mutations were graph breaks (``Mutating a variable from outside the
scope of this HOP``). The scheme travels as its int handle
(:mod:`mmdaq.quantization.scheme_handles`); both ops have fakes (shapes only) for tracing.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..quantization.scheme_handles import scheme_from_handle
from ..quantization.schemes import QuantScheme
from .geometry import ConvGeometry, linear_as_conv
from .im2col import conv_output_size
from .int8_layer import int8_conv_backward_pass, int8_conv_forward_pass


def _geometry(kernel: List[int], stride: List[int], padding: List[int], dilation: List[int],
              groups: int) -> ConvGeometry:
    return ConvGeometry(tuple(kernel), tuple(stride), tuple(padding), tuple(dilation), groups)


@torch.library.custom_op('mmdaq::int8_conv', mutates_args=())
def _int8_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], scheme: int,
               kernel: List[int], stride: List[int], padding: List[int], dilation: List[int],
               groups: int, slot: int) -> Tuple[Tensor, Tensor, Tensor]:
    return int8_conv_forward_pass(x, weight, bias, scheme_from_handle(scheme),
                                  _geometry(kernel, stride, padding, dilation, groups))


@_int8_conv.register_fake
def _int8_conv_fake(x, weight, bias, scheme, kernel, stride, padding, dilation, groups, slot):
    out_size = conv_output_size(x.shape[2:], kernel, stride, padding, dilation)
    y = x.new_empty((x.shape[0], weight.shape[0]) + tuple(out_size))
    return y, torch.empty_like(x, dtype=torch.int8), x.new_empty((), dtype=torch.float32)


@torch.library.custom_op('mmdaq::int8_conv_backward', mutates_args=())
def _int8_conv_backward(grad_y: Tensor, x_q: Tensor, weight: Tensor, s_x: Tensor, scheme: int,
                        kernel: List[int], stride: List[int], padding: List[int],
                        dilation: List[int], groups: int, slot: int, need_x: bool,
                        need_w: bool, need_b: bool) -> Tuple[Tensor, Tensor, Tensor]:
    grads = int8_conv_backward_pass(grad_y, x_q, weight, s_x, scheme_from_handle(scheme),
                                    _geometry(kernel, stride, padding, dilation, groups), slot,
                                    need_x, need_w, need_b)
    # Ops return tensors, not None: an empty one stands for "not needed".
    return tuple(grad_y.new_empty(0) if g is None else g for g in grads)


@_int8_conv_backward.register_fake
def _int8_conv_backward_fake(grad_y, x_q, weight, s_x, scheme, kernel, stride, padding,
                             dilation, groups, slot, need_x, need_w, need_b):
    f32 = dict(dtype=torch.float32)
    return (x_q.new_empty(x_q.shape, **f32) if need_x else grad_y.new_empty(0),
            weight.new_empty(weight.shape, **f32) if need_w else grad_y.new_empty(0),
            weight.new_empty(weight.shape[:1], **f32) if need_b else grad_y.new_empty(0))


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, scheme, kernel, stride, padding, dilation, groups, slot = inputs
    _, x_q, s_x = output
    ctx.save_for_backward(x_q, weight, s_x)
    ctx.args = (scheme, kernel, stride, padding, dilation, groups, slot)
    ctx.has_bias = bias is not None
    ctx.x_dtype, ctx.w_dtype = x.dtype, weight.dtype


def _backward(ctx, grad_y, _grad_x_q, _grad_s_x):
    x_q, weight, s_x = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_b = need_b and ctx.has_bias
    grad_x, grad_w, grad_b = _int8_conv_backward(
        grad_y, x_q, weight, s_x, *ctx.args, need_x, need_w, need_b)
    return (grad_x.to(ctx.x_dtype) if need_x else None,
            grad_w.to(ctx.w_dtype) if need_w else None,
            grad_b if need_b else None) + (None, ) * 7


_int8_conv.register_autograd(_backward, setup_context=_setup_context)


def int8_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], scheme: QuantScheme,
              geo: ConvGeometry, slot: int = 0) -> Tensor:
    """INT8 convolution (1-3 spatial dims) with the scheme's quantizers, as ``mmdaq::int8_conv``.

    Args:
        x (Tensor[N, C_in, *S]): Input.
        weight (Tensor[C_out, C_in/G, *k]): Weight.
        bias (Tensor[C_out], optional): Bias (float).
        scheme (QuantScheme): Quantizers and their state.
        geo (ConvGeometry): Convolution arguments.
        slot (int): Call slot of stateful schemes (see ``QuantScheme.next_call_slot``).

    Returns:
        Tensor[N, C_out, *O].
    """
    y, _, _ = _int8_conv(x, weight, bias, scheme.op_handle, list(geo.kernel), list(geo.stride),
                         list(geo.padding), list(geo.dilation), geo.groups, slot)
    return y


def int8_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], scheme: QuantScheme,
                slot: int = 0) -> Tensor:
    """:func:`int8_conv` as a Linear layer on the last dim: Tensor[*, C_in] -> Tensor[*, C_out]."""
    return linear_as_conv(int8_conv, x, weight, bias, scheme, slot=slot)
