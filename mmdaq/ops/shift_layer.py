"""The ShiftQuant convolution / linear layer (three ShiftMM GEMMs) and its custom ops.

The layer of a scheme with ``dataflow = 'shift'`` (:class:`~mmdaq.quantization.ShiftQuantScheme`).
With L output positions, K the kernel volume, and every operand grouped along the reduction
axis of the GEMM it feeds (power-of-two scales ``s0 2**-e``, see
:mod:`mmdaq.quantization.shift_scheme`)::

    forward  Y[NL, C_out]        = cols(Xq) @ Wq^T,   shift per C_in:      * s0_x s_w[C_out]
    G_W      G_W[C_out, C_in K]  = G_Yq^T @ cols(Xq), shift per position:  * s0_r s_x[C_in]
    G_X      cols(G_X)[NL, C_in K] = G_Yq @ Wq,       shift per C_out:     * s0_g s0_w

(each ``s0`` times ``2**-e_max``, and the shift of index k is ``e_max - e_k``; in G_X the
shifts of G_Y and W add).

Shifts enter the integer sums (:func:`~.shift_matmul.shift_matmul`); the scales of axes that
are not reduced (``s_w`` per output column of Y, ``s_x`` per column of G_W) multiply the
result. Each column of ``cols(X)`` belongs to one input channel, so the per-channel shift of X
repeats over the kernel positions. For stride 1 the input gradient is a convolution of the G_Y
codes (as in :mod:`.int8_layer`); otherwise the column gradient is folded back with col2im.
Only the int8 codes of X (and their shifts) are saved for backward, with the weight parameter.
The passes run as the custom ops ``mmdaq::shift_conv`` and ``mmdaq::shift_conv_backward``,
defined by :mod:`.layer_op` as the INT8 layer's are, so ``torch.compile`` traces them whole.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..quantization.schemes import QuantScheme
from ..quantization.shift_quant import pow2_scales
from .geometry import ConvGeometry, linear_as_conv
from .im2col import channels_inner_to_weight, channels_inner_weight, col2im, im2col
from .int8_layer import channels_last_2d, transposed_geometry, transposed_weight
from .layer_op import define_layer_ops
from .shift_matmul import shift_matmul


def channel_columns(v: Tensor, groups: int, kernel_volume: int) -> Tensor:
    """Per-channel values -> per im2col column, per group.

    Args:
        v (Tensor[C]): One value per input channel.
        groups (int): G of the convolution.
        kernel_volume (int): K.

    Returns:
        Tensor[G, K*C/G]: row g lists the columns of group g in (k, C/G) order.
    """
    per_group = v.reshape(groups, 1, -1)  # [G, 1, Cg]
    return per_group.expand(groups, kernel_volume, per_group.shape[2]).reshape(groups, -1)


def _top_and_shift(shifts: Tensor):
    """``(e_max, e_max - e)``: the left shifts relative to the finest group present."""
    top = int(shifts.max()) if shifts.numel() else 0
    return top, top - shifts


def _split(t: Tensor, groups: int, dim: int):
    return t.chunk(groups, dim=dim) if groups > 1 else (t, )


def _cat(parts, dim: int) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def shift_conv_gemm(codes: Tensor, channel_shift: Tensor, w_codes: Tensor,
                    geo: ConvGeometry) -> Tensor:
    """The GEMM of a convolution whose input channels carry left shifts.

    Args:
        codes (Tensor[N, C, *S], int8): Input codes.
        channel_shift (Tensor[C], int64): Left shift of each input channel (>= 0).
        w_codes (Tensor[C_out, C/G, *k], int8): Weight codes.
        geo (ConvGeometry): Convolution arguments.

    Returns:
        tuple: ``sum_j cols[., j] w[., j] 2**shift[j]`` as Tensor[N*L, C_out] (float32, the
        exact sum rounded once) and the output size (O_1, ..).
    """
    cols, out_size = im2col(codes, geo.kernel, geo.stride, geo.padding, geo.dilation,
                            geo.groups)  # [NL, C*K], (G, k, Cg) order
    col_shift = channel_columns(channel_shift, geo.groups, math.prod(geo.kernel))  # [G, K*Cg]
    w_g = channels_inner_weight(w_codes, geo.groups)  # [G, Cout_g, K*Cg]
    acc = _cat([shift_matmul(c, w_g[g].t(), col_shift[g], out_dtype=torch.float32)
                for g, c in enumerate(_split(cols, geo.groups, 1))], dim=1)  # [NL, C_out]
    return acc, out_size


def _channels_first(acc: Tensor, out_shape) -> Tensor:
    """[N*L, C] -> a new contiguous Tensor[N, C, *O] (never a view: an autograd output)."""
    if len(out_shape) == 2:
        return acc
    n, c = out_shape[:2]
    acc = acc.reshape((n, ) + tuple(out_shape[2:]) + (c, )).movedim(-1, 1)
    return acc.clone(memory_format=torch.contiguous_format)


def shift_conv_forward_pass(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                            scheme: QuantScheme, geo: ConvGeometry
                            ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Forward of the ShiftQuant layer: ``(y, x_codes, x_base_scale, x_shifts)``, the last three
    saved for backward."""
    x_r = scheme.quantize_input(x)  # shifts per C_in
    w_r = scheme.quantize_weight(weight)  # shifts per C_out
    top_x, shift_x = _top_and_shift(x_r.shifts)  # [C_in]
    acc, out_size = shift_conv_gemm(x_r.codes, shift_x, w_r.codes, geo)  # [NL, C_out]
    y = acc.mul_(x_r.base_scale * 2.0**-top_x * w_r.scales)  # [C_out] per column
    if bias is not None:
        y = y.add_(bias.float())
    y = _channels_first(y, (x.shape[0], weight.shape[0]) + out_size)
    return y.to(x.dtype), x_r.codes, x_r.base_scale, x_r.shifts


def shift_conv_backward_pass(grad_y: Tensor, x_codes: Tensor, x_base: Tensor, x_shifts: Tensor,
                             weight: Tensor, scheme: QuantScheme, geo: ConvGeometry, slot: int,
                             need_x: bool, need_w: bool, need_b: bool
                             ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Backward of the ShiftQuant layer: ``(grad_x, grad_w, grad_b)`` (float32; None if not
    needed). The weight is quantized again (the forward's codes: deterministic)."""
    groups, kv = geo.groups, math.prod(geo.kernel)
    w_r = scheme.quantize_weight(weight)
    scheme.note_backward()
    grad_y = grad_y.float()
    for_w, for_x = scheme.quantize_grads(grad_y, dim=1, slot=slot, for_weight=need_w,
                                         for_input=need_x)
    grad_x = grad_w = grad_b = None
    if need_w:  # reduction over N*L: G_Y is grouped per position
        cols, _ = im2col(x_codes, geo.kernel, geo.stride, geo.padding, geo.dilation,
                         groups)  # [NL, C_in*K]
        top_r, shift_r = _top_and_shift(for_w.shifts)  # [NL]
        col_scale = channel_columns(pow2_scales(x_base, x_shifts), groups, kv)  # [G, K*Cg]
        row_scale = for_w.base_scale * 2.0**-top_r
        pairs = zip(_split(for_w.codes, groups, 1), _split(cols, groups, 1))
        parts = [shift_matmul(g_c.t(), c, shift_r, out_dtype=torch.float32)
                 for g_c, c in pairs]  # [Cout_g, K*Cg] each
        grad_w = _cat([p.mul_(row_scale * col_scale[g]) for g, p in enumerate(parts)],
                      dim=0)  # [C_out, K*Cg]
        grad_w = channels_inner_to_weight(grad_w, weight.shape).contiguous()
    if need_x:  # reduction over C_out: G_Y and W are both grouped per output channel
        top_g, shift_g = _top_and_shift(for_x.shifts)  # [C_out]
        top_w, shift_w = _top_and_shift(w_r.shifts)  # [C_out]
        scale = for_x.base_scale * w_r.base_scale * 2.0**-(top_g + top_w)
        t_geo = transposed_geometry(geo)
        if t_geo is not None:  # stride 1: a convolution of the G_Y codes, no col2im
            acc, _ = shift_conv_gemm(for_x.codes, shift_g + shift_w,
                                     transposed_weight(w_r.codes, groups), t_geo)
            grad_x = _channels_first(acc.mul_(scale), x_codes.shape)
        else:
            g_rows = channels_last_2d(for_x.codes)  # [NL, C_out]
            w_g = channels_inner_weight(w_r.codes, groups)  # [G, Cout_g, K*Cg]
            shifts = _split(shift_g + shift_w, groups, 0)
            cols = _cat([shift_matmul(g_c, w_g[g], shifts[g], out_dtype=torch.float32)
                         for g, g_c in enumerate(_split(g_rows, groups, 1))], dim=1)
            grad_x = col2im(cols.mul_(scale), x_codes.shape, geo.kernel, geo.stride,
                            geo.padding, geo.dilation, groups)
    if need_b:
        grad_b = grad_y.sum(dim=[d for d in range(grad_y.dim()) if d != 1])
    return grad_x, grad_w, grad_b


_shift_conv = define_layer_ops(
    'shift_conv', shift_conv_forward_pass, shift_conv_backward_pass,
    ('Tensor x_codes', 'Tensor x_base', 'Tensor x_shifts'),
    lambda x, weight, scheme: (torch.empty_like(x, dtype=torch.int8),
                               x.new_empty((), dtype=torch.float32),
                               x.new_empty(x.shape[1:2], dtype=torch.int64)))


def shift_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], scheme: QuantScheme,
               geo: ConvGeometry, slot: int = 0) -> Tensor:
    """ShiftQuant convolution (1-3 spatial dims): arguments and result as
    :func:`~.int8_conv_op.int8_conv`, for a scheme with ``dataflow == 'shift'``."""
    if scheme.dataflow != 'shift':
        raise ValueError(f"shift_conv needs a scheme with dataflow 'shift', but got "
                         f'{scheme.name!r} ({scheme.dataflow!r}); use int8_conv')
    y, _, _, _ = _shift_conv(x, weight, bias, scheme.op_handle, *geo.op_args(), slot)
    return y


def shift_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], scheme: QuantScheme,
                 slot: int = 0) -> Tensor:
    """:func:`shift_conv` as a Linear layer on the last dim: Tensor[*, C_in] -> Tensor[*, C_out]."""
    return linear_as_conv(shift_conv, x, weight, bias, scheme, slot=slot)
