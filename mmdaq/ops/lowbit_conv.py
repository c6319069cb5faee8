"""Exact integer forward of a low-bit (Zhuang et al.) conv / linear layer, float STE backward.

The quantized operands of :mod:`mmdaq.quantization.lowbit` are integer codes times one scale:
``x_hat = x_code / L_a`` with ``x_code`` in [0, L_a] and ``w_hat = w_code / L_w`` with odd
``w_code`` in [-L_w, L_w] (``L = 2**k - 1``). For k <= 7 both fit int8, so::

    forward   Y[NL, C_out] = cols(x_code)[NL, C_in*K] @ w_code[C_out, C_in*K]^T / (L_a L_w) + b

runs through the exact INT8 GEMM of the DAQ layers (:func:`~.int8_layer.int8_conv_forward`).
The paper quantizes weights and activations only, not gradients, so the backward is the float
convolution backward on the dequantized operands (``x_code / L_a``, ``w_code / L_w``, the
forward's values up to one float32 rounding); the straight-through estimators of the
quantizers sit outside this function, in autograd. Only the int8 codes are saved.
"""
from typing import Optional

import torch
from torch import Tensor

from ..kernels import channels_first_epilogue
from ..quantization.lowbit import activation_codes, weight_codes
from .geometry import LINEAR_GEOMETRY, ConvGeometry
from .int8_layer import int8_conv_forward


class LowBitIntConvFunction(torch.autograd.Function):
    """``conv(x_hat, w_hat) + b`` with an exact integer forward GEMM (see module doc)."""

    @staticmethod
    def forward(ctx, x_hat: Tensor, w_hat: Tensor, bias: Optional[Tensor], bits_a: int,
                bits_w: int, geo: ConvGeometry, w_scale: Optional[Tensor] = None) -> Tensor:
        x_code = activation_codes(x_hat, bits_a)  # [N, C_in, *S] int8 in [0, L_a]
        w_unit = w_hat if w_scale is None else w_hat / w_scale
        w_code = weight_codes(w_unit, bits_w)  # [C_out, C_in/G, *k] int8, odd
        acc, out_size = int8_conv_forward(x_code, w_code, geo)  # [NL, C_out] exact
        levels_a, levels_w = 2**bits_a - 1, 2**bits_w - 1
        scale = torch.tensor(1.0 / (levels_a * levels_w), dtype=torch.float32,
                             device=x_hat.device)
        if w_scale is not None:
            scale = scale * w_scale.detach().float()
        y = channels_first_epilogue(acc, scale, bias, (x_hat.shape[0], w_hat.shape[0]) + out_size)
        ctx.w_scale = None if w_scale is None else w_scale.detach().float()
        ctx.save_for_backward(x_code, w_code)
        ctx.levels, ctx.geo, ctx.has_bias = (levels_a, levels_w), geo, bias is not None
        ctx.dtypes = (x_hat.dtype, w_hat.dtype)
        return y.to(x_hat.dtype)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x_code, w_code = ctx.saved_tensors
        geo = ctx.geo
        x_hat = x_code.float() / ctx.levels[0]
        w_hat = w_code.float() / ctx.levels[1]
        if ctx.w_scale is not None:
            w_hat = w_hat * ctx.w_scale
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
        return grad_x, grad_w, grad_b, None, None, None, None


def lowbit_int_conv(x_hat: Tensor, w_hat: Tensor, bias: Optional[Tensor], bits_a: int,
                    bits_w: int, geo: ConvGeometry, w_scale: Optional[Tensor] = None) -> Tensor:
    """Convolution (1-3 spatial dims) of quantized operands by an exact integer GEMM.

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
    return LowBitIntConvFunction.apply(x_hat, w_hat, bias, bits_a, bits_w, geo, w_scale)


def lowbit_int_linear(x_hat: Tensor, w_hat: Tensor, bias: Optional[Tensor], bits_a: int,
                      bits_w: int, w_scale: Optional[Tensor] = None) -> Tensor:
    """Linear layer on the last dim of quantized operands by an exact integer GEMM.

    Args:
        x_hat (Tensor[*, C_in]): Quantized activations.
        w_hat (Tensor[C_out, C_in]): Quantized weight.
        w_scale (Tensor[], optional): As :func:`lowbit_int_conv`. Defaults to None.

    Returns:
        Tensor[*, C_out].
    """
    lead = x_hat.shape[:-1]
    y = LowBitIntConvFunction.apply(x_hat.reshape(-1, x_hat.shape[-1]), w_hat, bias, bits_a,
                                    bits_w, LINEAR_GEOMETRY, w_scale)  # [M, C_out]
    return y.reshape(lead + (w_hat.shape[0], ))


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
