"""The INT8 layer's passes chained from the Triton kernels: few launches, no host sync.

The passes of :mod:`.int8_layer` for a 2-D convolution with one group, for the schemes whose
G_Y rule the kernels implement (:meth:`~mmdaq.quantization.schemes.QuantScheme.
fused_grad_rule`: DAQ's objective clip, per-channel abs-max, per-tensor; nearest rounding,
INT8 forward, per-tensor weight scales)::

    forward   X, W: abs-max + codes (2 + 2)          :mod:`.triton_quantize`
              implicit GEMM, scale + bias epilogue (1)  :mod:`.triton_conv`
    backward  G_Y statistics, clip, both copies, bias gradient (3)  :mod:`.triton_grad_stats`
              input-gradient implicit GEMM (1), weight-gradient implicit GEMM (1 or 2)

10 launches in all (11 with a split weight-gradient reduction): the codes of W are saved for the
backward with those of X (a quarter of the float weight's bytes). The GEMM kernels take the two
factors of their scales and multiply them themselves, and read W's codes in the order the W
kernel writes them, so nothing runs between the launches. Scales, clips and the scheme's clip
state stay device tensors.

:func:`fused_forward_pass` / :func:`fused_backward_pass` are the INT8 layer's passes on CUDA
(registered for that dispatch key by :mod:`.int8_conv_op`): the chain where it applies, else the
passes of :mod:`.int8_layer`. On CPU tensors the same functions run in Triton's interpreter,
which is how the tests hold them to those passes and count their launches.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..quantization.schemes import FusedGradRule, QuantScheme
from . import int8_layer
from .geometry import ConvGeometry
from .int8_matmul import MAX_CHUNK_K
from .triton_conv import (FORWARD_WEIGHT_ORDER, int8_conv2d_dgrad_triton, int8_conv2d_triton,
                          int8_conv2d_wgrad_triton, triton_available)
from .triton_grad_stats import GradCodes, daq_grad_codes_triton
from .triton_quantize import FLOAT_DTYPES, quantize_per_tensor_triton, quantize_weight_triton


def fused_supported(x: Tensor, weight: Tensor) -> bool:
    """Whether the kernels cover this convolution (from the shapes of its input or their codes,
    Tensor[N, C, H, W], and of its weight, on any device): 2-D, one group, and a forward
    reduction short enough for exact int32 accumulation."""
    return (triton_available() and x.dim() == 4 and weight.dim() == 4
            and weight.shape[1] == x.shape[1] and weight[0].numel() <= MAX_CHUNK_K)


def fused_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], scheme: QuantScheme,
                  geo: ConvGeometry) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Forward pass: ``(y, x_q, s_x, w_q, s_w)``, the codes and scales of X and W saved for
    the backward (:func:`.int8_layer.int8_conv_forward_pass` saves only those of X).

    Args:
        x (Tensor[N, C_in, H, W]): Input.
        weight (Tensor[C_out, C_in, KH, KW]): Weight.
        bias (Tensor[C_out], optional): Bias.

    Returns:
        tuple: y (Tensor[N, C_out, OH, OW], in X's dtype, contiguous), the codes of X (int8,
        channels last), their scale (Tensor[]), the codes of W (int8, laid out as
        :data:`~.triton_conv.FORWARD_WEIGHT_ORDER`, which both GEMMs read without a copy) and
        their scale (Tensor[]).
    """
    x_q, s_x = quantize_per_tensor_triton(x, scheme.input_bits)
    w_q, s_w = quantize_weight_triton(weight, scheme.weight_bits,
                                      memory_order=FORWARD_WEIGHT_ORDER)
    y, _ = int8_conv2d_triton(x_q, w_q, s_x, bias, geo.stride, geo.padding, geo.dilation,
                              scale2=s_w, out_dtype=x.dtype)  # stored in X's dtype
    return y, x_q, s_x, w_q, s_w


def fused_backward(grad_y: Tensor, x_q: Tensor, s_x: Tensor, w_q: Tensor, s_w: Tensor,
                   scheme: QuantScheme, geo: ConvGeometry, rule: FusedGradRule, need_x: bool,
                   need_w: bool, need_b: bool
                   ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Backward pass: ``(grad_x, grad_w, grad_b)`` as :func:`.int8_layer.int8_conv_backward_pass`
    (None where not needed), with the G_W copy of ``rule``; grad_x in grad_y's dtype (the
    input-gradient kernel stores it so), grad_w and grad_b float32.

    Args:
        grad_y (Tensor[N, C_out, OH, OW]): Output gradient.
        x_q (Tensor[N, C_in, H, W], int8), s_x (Tensor[]): Saved codes of X and their scale.
        w_q (Tensor[C_out, C_in, KH, KW], int8), s_w (Tensor[]): Saved codes of W, scale.
        rule (FusedGradRule): The scheme's rule for this call (``fused_grad_rule(slot)``).
    """
    codes = daq_grad_codes_triton(grad_y, num_bins=rule.num_bins, alpha=rule.alpha,
                                  num_bits=scheme.grad_bits, threshold=_threshold(rule))
    return _fused_gradients(codes, x_q, s_x, w_q, s_w, geo, rule, need_x, need_w, need_b,
                            grad_y.dtype)


def _threshold(rule: FusedGradRule) -> Optional[float]:
    """The G_Y pass's distribution threshold; None: every channel keeps its abs-max."""
    return rule.threshold if rule.kind == 'objective' else None


def _fused_gradients(codes: GradCodes, x_q: Tensor, s_x: Tensor, w_q: Tensor, s_w: Tensor,
                     geo: ConvGeometry, rule: FusedGradRule, need_x: bool, need_w: bool,
                     need_b: bool, grad_x_dtype: torch.dtype
                     ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """The two GEMMs and the bias gradient from the G_Y pass's ``codes``; grad_x stored in
    ``grad_x_dtype`` by its kernel."""
    grad_x = grad_w = grad_b = None
    if need_w:
        if rule.kind == 'per_tensor':  # the G_X copy serves both GEMMs
            g_q, scale = codes.g_q_x, codes.s_x
        else:
            g_q, scale = codes.g_q_w, codes.s_w
        grad_w = int8_conv2d_wgrad_triton(g_q, x_q, geo.kernel, scale, geo.stride, geo.padding,
                                          geo.dilation, scale2=s_x)
    if need_x:
        grad_x = int8_conv2d_dgrad_triton(codes.g_q_x, w_q, codes.s_x, x_q.shape, geo.stride,
                                          geo.padding, geo.dilation, scale2=s_w,
                                          out_dtype=grad_x_dtype)
    if need_b:
        grad_b = codes.grad_bias
    return grad_x, grad_w, grad_b


def fused_forward_applies(x: Tensor, weight: Tensor, scheme: QuantScheme) -> bool:
    """Whether :func:`fused_forward_pass` takes the chain: a convolution the kernels cover
    (:func:`fused_supported`) and a scheme whose forward they implement
    (:meth:`~mmdaq.quantization.schemes.QuantScheme.fuses_forward`); off with
    ``MMDAQ_TRITON=0``."""
    return (int8_layer.USE_TRITON and scheme.dataflow == 'int8' and scheme.fuses_forward()
            and x.dtype in FLOAT_DTYPES and fused_supported(x, weight))


def fused_forward_pass(x: Tensor, weight: Tensor, bias: Optional[Tensor], scheme: QuantScheme,
                       geo: ConvGeometry) -> Tuple[Tensor, ...]:
    """:func:`.int8_layer.int8_conv_forward_pass` (the same output and saved values; X's codes
    channels last and W's in :data:`~.triton_conv.FORWARD_WEIGHT_ORDER`) through the chain
    where :func:`fused_forward_applies`."""
    if not fused_forward_applies(x, weight, scheme):
        return int8_layer.int8_conv_forward_pass(x, weight, bias, scheme, geo)
    return fused_forward(x, weight, bias, scheme, geo)


def fused_backward_pass(grad_y: Tensor, x_q: Tensor, s_x: Tensor, w_q: Tensor, s_w: Tensor,
                        weight: Tensor, scheme: QuantScheme, geo: ConvGeometry, slot: int,
                        need_x: bool, need_w: bool, need_b: bool
                        ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """:func:`.int8_layer.int8_conv_backward_pass` through the chain where the scheme has a
    rule for it (:meth:`~mmdaq.quantization.schemes.QuantScheme.fused_grad_rule`; not while
    it collects diagnostics or the fidelity guard probes the layer): same gradients, and the
    scheme's state updated as that pass updates it, on the device."""
    # A rule implies per-tensor W scales and INT8 forward (QuantScheme.fuses_forward).
    rule = scheme.fused_grad_rule(slot) if scheme.dataflow == 'int8' else None
    if not (rule is not None and grad_y.dtype in FLOAT_DTYPES and int8_layer.USE_TRITON
            and fused_supported(x_q, weight)):
        return int8_layer.int8_conv_backward_pass(grad_y, x_q, s_x, w_q, s_w, weight, scheme,
                                                  geo, slot, need_x, need_w, need_b)
    scheme.note_backward()
    # Without a weight gradient there is no G_W copy to clip: the state stays as it is.
    state = scheme.fused_clip_state(slot, grad_y.shape[1], grad_y.device) if need_w else None
    codes = daq_grad_codes_triton(grad_y, num_bins=rule.num_bins, alpha=rule.alpha,
                                  num_bits=scheme.grad_bits, threshold=_threshold(rule),
                                  clip_state=state)
    if need_w:
        scheme.record_fused_grads(slot, rule, codes)
    return _fused_gradients(codes, x_q, s_x, w_q, s_w, geo, rule, need_x, need_w, need_b,
                            grad_y.dtype)
