"""Input gradient of a strided convolution as stride-1 convolutions of the G_Y codes, one per phase.

For stride ``s`` (dilation 1), the input positions ``i`` with ``(i + p) mod s = r`` (phase ``r``)
receive only the kernel taps ``j = r, r + s, r + 2 s, ..``: along each spatial dim::

    G_X[m s + r - p] = sum_t W[r + t s] G_Y[m - t]

a stride-1 *convolution* of G_Y with the sub-kernel ``W[r::s]``, i.e. a cross-correlation with
that sub-kernel flipped (and, per group, C_in and C_out swapped: :func:`transposed_weight`).
Each phase runs through the layer's INT8 convolution (oneDNN or GEMM, their one exact int32
sum per output and one scaling), on G_Y codes padded or cropped to the phase's output range,
and is written to ``G_X[..., i0::s]``. Against im2col + col2im (int32 columns K times the size
of G_Y, scaled, then summed back by K strided adds) this reads int8 codes and computes every
product once; the sum of an input position is one exact integer sum instead of K float adds, so
the floats differ from col2im's (closer to the exact value; tested against float64).
"""
import itertools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels import int8_transposed_weight


def transposed_weight(w_q: Tensor, groups: int) -> Tensor:
    """[C_out, C_in/G, *k] -> [C_in, C_out/G, *k], spatially flipped: the weight of G_X.

    For one group: a view of a single-tap weight; int8 codes of more taps in one pass, stored as
    the GEMM reads them (:func:`~mmdaq.kernels.int8_transposed_weight`: spatial dims first, so
    :func:`_spatial_first` is then a view too)."""
    if groups == 1 and math.prod(w_q.shape[2:]) == 1:
        return w_q.transpose(0, 1)
    if groups == 1 and w_q.dtype == torch.int8 and 3 <= w_q.dim() <= 5:
        return int8_transposed_weight(w_q)
    c_out, c_in_g = w_q.shape[:2]
    spatial = tuple(w_q.shape[2:])
    w = w_q.reshape((groups, c_out // groups, c_in_g) + spatial).transpose(1, 2)
    w = w.flip(dims=tuple(range(3, 3 + len(spatial))))
    return w.reshape((groups * c_in_g, c_out // groups) + spatial)


def _spatial_first(w: Tensor) -> Tensor:
    """``w`` (Tensor[C_out, C_in, *k], a convolution weight) with the same values, stored
    [*k, C_in, C_out]: the storage of the GEMM operand :func:`~.im2col.weight_columns`, which
    is then a view, and its slices along the spatial dims are whole [C_in, C_out] blocks (a
    plain ``.contiguous()`` of a strided slice would copy element by element)."""
    nd = w.dim() - 2
    stored = w.permute(tuple(range(2, 2 + nd)) + (1, 0)).contiguous()  # [*k, C_in, C_out]
    return stored.permute((nd + 1, nd) + tuple(range(nd)))


def phase_grad_input_supported(geo) -> bool:
    """Strided convolutions without dilation (with dilation the phases would interleave)."""
    return (bool(geo.kernel) and any(s > 1 for s in geo.stride)
            and all(d == 1 for d in geo.dilation))


def phase_int8_grad_input(g_q: Tensor, w_q: Tensor, scale: Tensor, input_shape: Sequence[int],
                          geo, conv: Callable[..., Tensor]) -> Tensor:
    """G_X of a strided convolution from the output-gradient codes, float32.

    Args:
        g_q (Tensor[N, C_out, *O], int8): Output-gradient codes.
        w_q (Tensor[C_out, C_in/G, *k], int8): Weight codes.
        scale (Tensor[]): Multiplier of the integer sums.
        input_shape: (N, C_in, *S) of the convolution input.
        geo (ConvGeometry): The convolution's geometry (``phase_grad_input_supported``).
        conv: ``conv(x_q, w_q, scale, bias, geo) -> float32`` stride-1 INT8 convolution (the
            layer's ``scaled_int8_conv``).

    Returns:
        Tensor[N, C_in, *S]; positions no output reads (kernel < stride) are 0.
    """
    size = tuple(input_shape[2:])
    out_size = tuple(g_q.shape[2:])
    nd = len(size)
    # Every position is written when every phase has a tap (kernel >= stride in each dim).
    covered = all(k >= s for k, s in zip(geo.kernel, geo.stride))
    grad_x = (torch.empty if covered else torch.zeros)(
        tuple(input_shape), dtype=torch.float32, device=g_q.device)
    unit = (1, ) * nd
    # The transposed, flipped weight once: each phase's kernel (taps r, r + s, .. of W,
    # transposed and flipped) is a strided slice of it, taken from k - 1 - r backwards.
    w_t = _spatial_first(transposed_weight(w_q, geo.groups))  # [C_in, C_out/G, *k]
    for phase in itertools.product(*(range(s) for s in geo.stride)):
        taps_len = tuple(len(range(r, k, s)) for r, k, s in zip(phase, geo.kernel, geo.stride))
        if 0 in taps_len:  # kernel < stride: this phase gets no tap
            continue
        sub_t = w_t[(slice(None), slice(None)) + tuple(
            slice(k - 1 - r - s * (t - 1), k - r, s)
            for r, k, s, t in zip(phase, geo.kernel, geo.stride, taps_len))]  # [C_in, Cout_g, *T]
        # Output range m0..m1 of the phase: input i = m s + r - p within [0, S).
        m0 = [-((r - p) // s) for r, p, s in zip(phase, geo.padding, geo.stride)]
        m1 = [(s_in - 1 + p - r) // s
              for s_in, r, p, s in zip(size, phase, geo.padding, geo.stride)]
        if any(b < a for a, b in zip(m0, m1)):
            continue
        # G_Y index m - t for t = 0..T-1: pad (or crop, negative) left by T - 1 - m0 and right
        # so that the valid correlation has m1 - m0 + 1 outputs.
        pads = []
        for d in reversed(range(nd)):  # F.pad lists the last dim first
            left = taps_len[d] - 1 - m0[d]
            right = (m1[d] - m0[d] + 1) + taps_len[d] - 1 - out_size[d] - left
            pads += [left, right]
        g_phase = F.pad(g_q, pads)
        # The slice stored spatial dims first again: a copy of whole blocks.
        part = conv(g_phase, _spatial_first(sub_t), scale, None,
                    geo._replace(kernel=tuple(taps_len), stride=unit, padding=(0, ) * nd,
                                 dilation=unit))
        first = [m * s + r - p for m, r, p, s in zip(m0, phase, geo.padding, geo.stride)]
        target = (slice(None), slice(None)) + tuple(
            slice(i0, None, s) for i0, s in zip(first, geo.stride))
        grad_x[target] = part
    return grad_x
