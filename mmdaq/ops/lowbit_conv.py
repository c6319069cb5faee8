"""Exact integer forward of a low-bit (Zhuang et al.) conv / linear layer, float STE backward.

The quantized operands of :mod:`mmdaq.quantization.lowbit` are integer codes times one scale:
``x_hat = x_code / L_a`` with ``x_code`` in [0, L_a] and ``w_hat = w_code / L_w`` with odd
``w_code`` in [-L_w, L_w] (``L = 2**k - 1``). For k <= 7 both fit int8, so::

    forward   Y[NL, C_out] = cols(x_code)[NL, C_in*K] @ w_code[C_out, C_in*K]^T / (L_a L_w) + b

runs through the exact INT8 GEMM of the DAQ layers (:func:`~.int8_layer.int8_conv_forward`).
The paper quantizes weights and activations only, not gradients, so the backward is the float
convolution backward on the dequantized operands (``x_code / L_a``, ``w_code / L_w``, the
forward's values up to one float32 rounding); the straight-through estimators of the
quantizers sit outside this function, in autograd. Only the int8 codes are saved. The forward
is the custom op ``mmdaq::lowbit_int_conv``, whose outputs include those codes; its autograd
formula is the float backward.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..kernels import channels_first_epilogue
from ..quantization.lowbit import activation_codes, weight_codes
from .geometry import ConvGeometry, linear_as_conv
from .im2col import conv_output_size
from .int8_layer import int8_conv_forward


@torch.library.custom_op('mmdaq::lowbit_int_conv', mutates_args=())
def _lowbit_int_conv(x_hat: Tensor, w_hat: Tensor, bias: Optional[Tensor], bits_a: int,
                     bits_w: int, kernel: List[int], stride: List[int], padding: List[int],
                     dilation: List[int], groups: int,
                     w_scale: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """``(y, x_code, w_code)``: the layer's output and the codes its backward keeps."""
    geo = ConvGeometry.from_op_args(kernel, stride, padding, dilation, groups)
    x_code = activation_codes(x_hat, bits_a)  # [N, C_in, *S] int8 in [0, L_a]
    w_unit = w_hat if w_scale is None else w_hat / w_scale
    w_code = weight_codes(w_unit, bits_w)  # [C_out, C_in/G, *k] int8, odd
    acc, out_size = int8_conv_forward(x_code, w_code, geo)  # [NL, C_out] exact
    scale = torch.tensor(1.0 / ((2**bits_a - 1) * (2**bits_w - 1)), dtype=torch.float32,
                         device=x_hat.device)
    if w_scale is not None:
        scale = scale * w_scale  # float32 by type promotion
    y = channels_first_epilogue(acc, scale, bias, (x_hat.shape[0], w_hat.shape[0]) + out_size)
    return y.to(x_hat.dtype), x_code, w_code


@_lowbit_int_conv.register_fake
def _lowbit_int_conv_fake(x_hat, w_hat, bias, bits_a, bits_w, kernel, stride, padding, dilation,
                          groups, w_scale):
    out_size = conv_output_size(x_hat.shape[2:], kernel, stride, padding, dilation)
    y = x_hat.new_empty((x_hat.shape[0], w_hat.shape[0]) + tuple(out_size))
    return (y, torch.empty_like(x_hat, dtype=torch.int8),
            torch.empty_like(w_hat, dtype=torch.int8))


def _setup_context(ctx, inputs, output) -> None:
    x_hat, w_hat, bias, bits_a, bits_w, kernel, stride, padding, dilation, groups, w_scale = inputs
    ctx.save_for_backward(*output[1:], w_scale)  # x_code, w_code, w_scale (or None)
    ctx.levels = (2**bits_a - 1, 2**bits_w - 1)
    ctx.geo = ConvGeometry.from_op_args(kernel, stride, padding, dilation, groups)
    ctx.has_bias, ctx.dtypes = bias is not None, (x_hat.dtype, w_hat.dtype)


def _backward(ctx, grad_y: Tensor, _grad_x_code, _grad_w_code):
    """The float convolution backward on the dequantized codes (the forward's operands)."""
    x_code, w_code, w_scale = ctx.saved_tensors
    geo = ctx.geo
    x_hat = x_code.float() / ctx.levels[0]
    w_hat = w_code.float() / ctx.levels[1]
    if w_scale is not None:
        w_hat = w_hat * w_scale  # float32 by type promotion
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    grad_y = grad_y.float()
    if geo.kernel:
        bias_sizes = [w_hat.shape[0]] if ctx.has_bias else None
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_y, x_hat, w_hat, bias_sizes, list(geo.stride), list(geo.padding),
            list(geo.dilation), False, [0] * len(geo.kernel), geo.groups,
            [need_x, need_w, need_b and ctx.has_bias])
    else:  # linear: x_hat [M, C_in], grad_y [M, C_out]
        grad_x = grad_y @ w_hat if need_x else None
        grad_w = grad_y.t() @ x_hat if need_w else None
        grad_b = grad_y.sum(0) if need_b and ctx.has_bias else None
    grad_x = grad_x.to(ctx.dtypes[0]) if grad_x is not None else None
    grad_w = grad_w.to(ctx.dtypes[1]) if grad_w is not None else None
    return (grad_x, grad_w, grad_b) + (None, ) * 8


_lowbit_int_conv.register_autograd(_backward, setup_context=_setup_context)


def lowbit_int_conv(x_hat: Tensor, w_hat: Tensor, bias: Optional[Tensor], bits_a: int,
                    bits_w: int, geo: ConvGeometry, w_scale: Optional[Tensor] = None) -> Tensor:
    """Convolution (1-3 spatial dims) of quantized operands by an exact integer GEMM, as
    ``mmdaq::lowbit_int_conv``.

    Args:
        x_hat (Tensor[N, C_in, *S]): Quantized activations (:func:`quantize_activation`).
        w_hat (Tensor[C_out, C_in/G, *k]): Quantized weight (:func:`quantize_weight`).
        bias (Tensor[C_out], optional): Float bias.
        bits_a, bits_w (int): Their bit widths, in [1, 7].
        geo (ConvGeometry): Convolution arguments.
        w_scale (Tensor[], optional): Scalar the weight levels were multiplied by
            (``scale_weights``); it joins the output scale. Defaults to None.

    Returns:
        Tensor[N, C_out, *O]: Equal to ``conv(x_hat, w_hat) + bias`` up to float32 rounding
        of the operands (the integer sum itself is exact).
    """
    y, _, _ = _lowbit_int_conv(x_hat, w_hat, bias, bits_a, bits_w, *geo.op_args(), w_scale)
    return y


def lowbit_int_linear(x_hat: Tensor, w_hat: Tensor, bias: Optional[Tensor], bits_a: int,
                      bits_w: int, w_scale: Optional[Tensor] = None) -> Tensor:
    """:func:`lowbit_int_conv` as a Linear layer on the last dim: Tensor[*, C_in] ->
    Tensor[*, C_out]."""
    return linear_as_conv(lowbit_int_conv, x_hat, w_hat, bias, bits_a, bits_w, w_scale=w_scale)


def lowbit_conv_reference(x_hat: Tensor, w_hat: Tensor, bias: Optional[Tensor], bits_a: int,
                          bits_w: int, geo: ConvGeometry) -> Tensor:
    """Plain-PyTorch twin of :func:`lowbit_int_conv` (2-d only): int64-exact sum of the codes
    (float64 convolution of integers below 2**53), then the same float32 scaling."""
    x_code = activation_codes(x_hat, bits_a).double()
    w_code = weight_codes(w_hat, bits_w).double()
    acc = torch.nn.functional.conv2d(x_code, w_code, None, geo.stride, geo.padding,
                                     geo.dilation, geo.groups)  # [N, C_out, *O], integers
    scale = torch.tensor(1.0 / ((2**bits_a - 1) * (2**bits_w - 1)), dtype=torch.float32)
    y = acc.long().float() * scale  # int -> float32 like the epilogue
    return y if bias is None else y + bias.float().reshape(1, -1, 1, 1)
