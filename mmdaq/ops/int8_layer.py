"""Forward and backward passes of the INT8 convolution / linear layer (the paper's dataflow).

One function serves Conv1d/2d/3d and Linear: a Linear layer is a convolution with
no spatial dims on ``x.reshape(-1, C_in)``. With L output positions and K the
kernel volume, the three GEMMs are::

    forward   Y[NL, C_out]     = cols(Xq)[NL, C_in*K] @ Wq[C_out, C_in*K]^T * s_x * s_w
    G_W       G_W[C_out, C_in*K] = s_gw[c] * s_x * (G_Yq_vec[NL, C_out]^T @ cols(Xq))
    G_X       cols(G_X)        = G_Yq[NL, C_out] @ Wq * s_g * s_w,  then col2im

All three accumulate exactly in integers (:mod:`.int8_matmul`). The per-channel
scale ``s_gw[c]`` of G_W is applied after the GEMM: row c of G_W only involves
channel c of G_Y, so the scale factors out of the sum exactly. G_X sums over
C_out, so its copy of G_Y has one scale for the whole tensor. Only the int8 codes
of X (not the float X) are saved for backward, with the weight parameter itself
(quantized again in backward, the same codes). Bias, BN, activations and the
optimizer stay in float. The custom ops of :mod:`.int8_conv_op` (``int8_conv`` /
``int8_linear``, autograd included) run these passes, and ``torch.compile`` traces them whole.
"""
import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels import channels_first_epilogue, int32_to_weight
from ..quantization.schemes import QuantScheme
from .conv_autotune import cpu_conv_mode, fastest, shape_bucket
from .geometry import ConvGeometry
from .grad_codes_cpu import daq_grad_codes_cpu, daq_grad_codes_cpu_applies
from .grad_error import int8_grad_errors
from .grouped_matmul import grouped_int8_matmul
from .im2col import channels_inner_to_weight, channels_inner_weight, col2im, im2col, weight_columns
from .onednn_conv import int8_conv_onednn, onednn_conv_supported
from .phase_grad_input import phase_grad_input_supported, phase_int8_grad_input, transposed_weight
from .pointwise_conv import (is_pointwise, pointwise_int8_conv, pointwise_int8_grad_input,
                             pointwise_pays, pointwise_supported)
from .triton_conv import (conv2d_dgrad_int8_supported, conv2d_int8_supported,
                          conv2d_wgrad_int8_supported)
from .triton_conv_op import triton_int8_conv2d, triton_int8_conv2d_dgrad, triton_int8_conv2d_wgrad

#: Use the Triton implicit-GEMM kernels for 2-D convolutions on CUDA (``MMDAQ_TRITON=0``: off).
USE_TRITON = os.environ.get('MMDAQ_TRITON', '1') != '0'


def _grouped(t: Tensor, groups: int) -> Tensor:
    """[M, G*X] -> [G, M, X] (contiguous per group)."""
    m = t.shape[0]
    return t.reshape(m, groups, -1).transpose(0, 1).contiguous()


def _ungrouped(t: Tensor) -> Tensor:
    """[G, M, X] -> [M, G*X]."""
    return t.transpose(0, 1).reshape(t.shape[1], -1)


def int8_conv_forward(x_q: Tensor, w_q: Tensor, geo: ConvGeometry) -> Tuple[Tensor, Tuple]:
    """Integer forward GEMM.

    Args:
        x_q (Tensor[N, C_in, *S], int8): Input codes.
        w_q (Tensor[C_out, C_in/G, *k], int8): Weight codes.
        geo (ConvGeometry): Convolution arguments.

    Returns:
        tuple: acc (Tensor[N*L, C_out], integer-valued) and the output size (O_1, ..).
    """
    cols, out_size = im2col(x_q, geo.kernel, geo.stride, geo.padding, geo.dilation, geo.groups)
    w_g = weight_columns(w_q, geo.groups)  # [G, K*Cg, Cout_g]
    acc = grouped_int8_matmul(_grouped(cols, geo.groups), w_g)  # [G, NL, Cout_g]
    return _ungrouped(acc), out_size


def int8_conv_grad_weight(x_q: Tensor, g_q: Tensor, geo: ConvGeometry) -> Tensor:
    """Integer G_W GEMM, reduction over N*L (split so int32 never overflows).

    Args:
        x_q (Tensor[N, C_in, *S], int8): Saved input codes.
        g_q (Tensor[N, C_out, *O], int8): Output-gradient codes (Tensor[M, C_out] for Linear).

    Returns:
        Tensor[C_out, K * C_in/G]: integer-valued, columns in (k, C_in/G) order
        (:func:`~.im2col.channels_inner_to_weight` gives the weight layout).
    """
    g_t = channels_first_rows(g_q, geo.groups)  # [G, Cout_g, NL]
    if is_pointwise(geo) and all(s == 1 for s in geo.stride):
        # 1x1, stride 1: the columns are X itself; as rows [G, Cg, NL] (one copy of runs of L
        # codes, none for N = 1) against which G_Y's rows multiply as a transposed operand.
        x_t = channels_first_rows(x_q, geo.groups)
        acc = grouped_int8_matmul(g_t, x_t.transpose(1, 2))  # [G, Cout_g, Cg]
    else:
        cols, _ = im2col(x_q, geo.kernel, geo.stride, geo.padding, geo.dilation,
                         geo.groups)  # [NL, C_in*K], (G, k, Cg) order
        acc = grouped_int8_matmul(g_t, _grouped(cols, geo.groups))  # [G, Cout_g, K*Cg]
    return acc.reshape(g_t.shape[0] * g_t.shape[1], -1)


def channels_first_rows(t: Tensor, groups: int) -> Tensor:
    """[N, C, *O] -> [G, C/G, N*L] (for Linear, [M, C] -> [G, C/G, M]); one copy of runs of L
    values (none for N = 1), where going through channels last would transpose twice."""
    n, c = t.shape[:2]
    rows = t.reshape(n, groups, c // groups, -1).permute(1, 2, 0, 3)
    return rows.reshape(groups, c // groups, -1)


def int8_conv_grad_input(g_q: Tensor, w_q: Tensor, geo: ConvGeometry) -> Tensor:
    """Integer G_X GEMM into columns; the caller scales them and folds them back with col2im.

    Args:
        g_q (Tensor[N*L, C_out], int8): Output-gradient codes, channels last.
        w_q (Tensor[C_out, C_in/G, *k], int8): Weight codes.

    Returns:
        Tensor[N*L, C_in*K]: integer-valued column gradient, in im2col's column order.
    """
    w_g = channels_inner_weight(w_q, geo.groups)  # [G, Cout_g, K*Cg]
    return _ungrouped(grouped_int8_matmul(_grouped(g_q, geo.groups), w_g.contiguous()))


def transposed_geometry(geo: ConvGeometry) -> Optional[ConvGeometry]:
    """Geometry of G_X as a plain convolution of G_Y, or None where there is none.

    With stride 1, ``G_X = conv(G_Y, W')`` with ``W'[c_in, c_out, j] = W[c_out, c_in, k-1-j]``
    (per group), padding ``d (k - 1) - p`` and the same dilation: the columns of G_Y are int8
    (1 byte each) and the GEMM output is the size of X, instead of int32 columns K times
    the size of X folded back by col2im. Needs ``p <= d (k - 1)``; strided convolutions would
    need zeros inserted into G_Y and keep the col2im path.
    """
    if not geo.kernel or any(s != 1 for s in geo.stride):
        return None
    padding = tuple(d * (k - 1) - p for k, p, d in zip(geo.kernel, geo.padding, geo.dilation))
    if any(p < 0 for p in padding):
        return None
    return ConvGeometry(geo.kernel, geo.stride, padding, geo.dilation, geo.groups)


def channels_last_2d(t: Tensor) -> Tensor:
    """[N, C, *O] -> [N*L, C] (for Linear, [M, C] stays)."""
    return t.movedim(1, -1).reshape(-1, t.shape[1])


def _check_dataflow(scheme: QuantScheme) -> None:
    if scheme.dataflow != 'int8':
        raise ValueError(f"the INT8 layer needs a scheme with dataflow 'int8', but got "
                         f'{scheme.name!r} ({scheme.dataflow!r}); use the layer function '
                         'of that dataflow (e.g. mmdaq.ops.shift_layer.shift_conv)')


def int8_conv_forward_pass(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                           scheme: QuantScheme, geo: ConvGeometry) -> Tuple[Tensor, ...]:
    """Forward of the INT8 layer: ``(y, x_q, s_x, w_q, s_w)``, the codes of X and W and their
    scales saved for backward (W's codes are a quarter of the float weight's bytes, and the
    backward need not quantize W again)."""
    _check_dataflow(scheme)
    x_q, s_x = scheme.quantize_input(x)
    w_q, s_w = scheme.quantize_weight(weight)
    if scheme.forward == 'fp32':  # ablation: float forward, the codes serve the backward
        return float_conv(x, weight, bias, geo).contiguous(), x_q, s_x, w_q, s_w
    scale = s_x * s_w  # [] or [C_out]
    y = scaled_int8_conv(x_q, w_q, scale, bias, geo)
    return y.to(x.dtype).contiguous(), x_q, s_x, w_q, s_w


def float_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], geo: ConvGeometry) -> Tensor:
    """The layer's float forward (``F.linear`` / ``F.conv{1,2,3}d``) in ``x``'s dtype."""
    if not geo.kernel:
        return F.linear(x, weight, bias)
    conv = (F.conv1d, F.conv2d, F.conv3d)[len(geo.kernel) - 1]
    return conv(x, weight, bias, geo.stride, geo.padding, geo.dilation, geo.groups)


def scaled_int8_conv(x_q: Tensor, w_q: Tensor, scale: Tensor, bias: Optional[Tensor],
                     geo: ConvGeometry) -> Tensor:
    """``conv(x_q, w_q) * scale (+ bias)`` in float32 from int8 codes.

    One Triton implicit-GEMM kernel for 2-D convolutions on CUDA (:mod:`.triton_conv`; off
    with ``MMDAQ_TRITON=0``); on CPUs with VNNI, oneDNN's int8 convolution or the GEMM path,
    whichever was measured faster for the shape (:mod:`.conv_autotune`). The GEMM path: for a
    1x1 convolution on CPU, GEMMs on the NC* layout (:mod:`.pointwise_conv`); else im2col,
    the integer GEMM and the fused epilogue.
    """
    if scale.dim() > 0:  # per output channel: im2col, the integer GEMM, the epilogue
        acc, out_size = int8_conv_forward(x_q, w_q, geo)  # [NL, C_out]
        return channels_first_epilogue(acc, scale, bias,
                                       (x_q.shape[0], w_q.shape[0]) + out_size)
    use_triton = x_q.is_cuda and USE_TRITON
    if use_triton and conv2d_int8_supported(x_q, geo.kernel, x_q.shape[1], geo.groups):
        return triton_int8_conv2d(x_q, w_q, scale, bias, geo.stride, geo.padding, geo.dilation)

    def gemm() -> Tensor:
        if pointwise_supported(x_q, w_q, geo) and pointwise_pays(x_q, geo):
            # 1x1: GEMMs on the NC* layout itself
            return pointwise_int8_conv(x_q, w_q, scale, bias, geo)
        acc, out_size = int8_conv_forward(x_q, w_q, geo)  # [NL, C_out]
        # Scale, bias and the [NL, C_out] -> [N, C_out, *O] layout in one pass.
        return channels_first_epilogue(acc, scale, bias,
                                       (x_q.shape[0], w_q.shape[0]) + out_size)

    mode = cpu_conv_mode() if x_q.device.type == 'cpu' else 'gemm'
    if mode == 'gemm' or not onednn_conv_supported(x_q, w_q, geo):
        return gemm()

    def onednn() -> Tensor:
        return int8_conv_onednn(x_q, w_q, scale, bias, geo)

    if mode == 'onednn':
        return onednn()
    # Both give the same floats (tested): the choice is speed only.
    positions = x_q.shape[0] * x_q[0, 0].numel()
    key = ('conv', x_q.shape[1], tuple(w_q.shape), geo, bias is not None,
           shape_bucket(positions), torch.get_num_threads())
    return fastest(key, {'gemm': gemm, 'onednn': onednn})


def _scaled_weight_gradient(acc: Tensor, scale: Tensor, weight_shape) -> Tensor:
    """``acc * scale[c_out]`` (acc: Tensor[C_out, K*Cg], int32 or float64 sums) as a contiguous
    float32 Tensor of ``weight_shape``; int32 sums are scaled straight into that layout (one pass,
    :func:`~mmdaq.kernels.int32_to_weight`).
    """
    if acc.dtype != torch.int32:
        return channels_inner_to_weight((acc * scale.unsqueeze(1)).float(),
                                        weight_shape).contiguous()
    return int32_to_weight(acc, scale, weight_shape)


def int8_conv_backward_pass(grad_y: Tensor, x_q: Tensor, s_x: Tensor, w_q: Tensor, s_w: Tensor,
                            weight: Tensor, scheme: QuantScheme, geo: ConvGeometry, slot: int,
                            need_x: bool, need_w: bool, need_b: bool
                            ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Backward of the INT8 layer: ``(grad_x, grad_w, grad_b)`` (float32; None if not needed),
    from the forward's codes of X and W (``weight``, the parameter itself, serves the fidelity
    guard's float reference only)."""
    scheme.note_backward()
    grad_y = grad_y.float()
    grad_x = grad_w = grad_b = None
    per_channel_w = s_w.dim() > 0
    rule = scheme.fused_grad_rule(slot) if need_w else None  # implies per-tensor W scales
    fused_bias = None
    if daq_grad_codes_cpu_applies(grad_y, rule, scheme):  # the G_Y pass in one compiled op
        codes = daq_grad_codes_cpu(grad_y, rule, scheme.fused_clip_state(
            slot, grad_y.shape[1], grad_y.device), need_b)
        scheme.record_fused_grads(slot, rule, codes)
        for_w, for_x, fused_bias = (codes.g_q_w, codes.s_w), (codes.g_q_x, codes.s_x), \
            codes.grad_bias
    else:
        for_w, for_x = scheme.quantize_grads(grad_y, dim=1, slot=slot, for_weight=need_w,
                                             for_input=need_x and not per_channel_w)
    if need_x and per_channel_w:
        # G_X = sum_c G_Y[:, c] s_w[c] Wq[c]: the weight scales go into G_Y's per-tensor copy.
        channel_shape = (1, -1) + (1, ) * (grad_y.dim() - 2)
        for_x = scheme.quantize_grad_for_input(grad_y * s_w.reshape(channel_shape), slot)
        s_w = s_w.new_ones(())
    # The method's factor on the weight and bias gradients (1 except UI8's LR scaling).
    factor = scheme.weight_grad_scale(slot) if need_w or need_b else 1.0
    if need_w:
        g_q, s_gw = for_w  # s_gw: [C_out]
        # The per-channel scale factors out of the integer sum: one multiply per row.
        scale = s_gw * (s_x * factor)
        use_triton = x_q.is_cuda and USE_TRITON
        if use_triton and conv2d_wgrad_int8_supported(x_q, geo.kernel, geo.groups):
            grad_w = triton_int8_conv2d_wgrad(g_q, x_q, geo.kernel, scale, geo.stride,
                                              geo.padding, geo.dilation)  # weight layout
        else:
            grad_w = _scaled_weight_gradient(int8_conv_grad_weight(x_q, g_q, geo), scale,
                                             w_q.shape)
    if need_x:
        g_q, s_g = for_x  # g_q: [N, C_out, *O]
        t_geo = transposed_geometry(geo)
        use_triton = g_q.is_cuda and USE_TRITON
        if use_triton and conv2d_dgrad_int8_supported(g_q, geo.kernel, geo.groups):
            # any stride and dilation in one implicit GEMM, no columns or col2im
            grad_x = triton_int8_conv2d_dgrad(g_q, w_q, s_g * s_w, x_q.shape, geo.stride,
                                              geo.padding, geo.dilation)
        elif pointwise_supported(g_q, w_q, geo) and t_geo is None:  # strided 1x1: no col2im
            grad_x = pointwise_int8_grad_input(g_q, w_q, s_g * s_w, x_q.shape, geo)
        elif t_geo is not None:  # stride 1: a convolution of the int8 G_Y codes
            grad_x = scaled_int8_conv(g_q, transposed_weight(w_q, geo.groups), s_g * s_w, None,
                                      t_geo)
        elif g_q.device.type == 'cpu' and phase_grad_input_supported(geo):  # strided
            grad_x = phase_int8_grad_input(g_q, w_q, s_g * s_w, x_q.shape, geo, scaled_int8_conv)
        else:  # dilated and strided (and CUDA without Triton): columns and col2im
            cols = int8_conv_grad_input(channels_last_2d(g_q), w_q, geo)
            cols = cols * (s_g * s_w)
            grad_x = col2im(cols, x_q.shape, geo.kernel, geo.stride, geo.padding,
                            geo.dilation, geo.groups)
    if need_b:  # (a scheme with a fused rule has factor 1: UI8 has no such rule)
        grad_b = fused_bias if fused_bias is not None else \
            grad_y.sum(dim=[d for d in range(grad_y.dim()) if d != 1]) * factor
    if scheme.measure_error:  # the fidelity guard's probe of this layer (grad_error.py)
        scheme.measure_error = False
        scheme.last_error = int8_grad_errors(grad_y, x_q, s_x, weight, geo, grad_x,
                                             None if grad_w is None else grad_w / factor)
    return grad_x, grad_w, grad_b
