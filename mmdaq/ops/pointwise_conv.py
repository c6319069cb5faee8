"""1x1 INT8 convolutions as GEMMs on the channels-first layout: no im2col, no transposes.

A 1x1 convolution without padding is, per sample n, ``Y[n] = W @ X[n]`` with ``X[n]`` the
[C_in, L] block of an NC* tensor and ``W`` the [C_out, C_in] weight, so the result comes out
NC* and the epilogue is elementwise. Its input gradient is ``W^T @ G_Y[n]``, put at the strided
positions of X. Only CPU and ``groups == 1`` (a GEMM per sample and group would not pay), and
reductions of at most 2**17 products (one exact int32 GEMM). The floats are the GEMM path's,
bit for bit (tested): the same integer sums, scaled and offset by the same two roundings.
"""
import math
from typing import Optional

import torch
from torch import Tensor

from .int8_matmul import MAX_CHUNK_K, gemm_left_operand, int8_matmul


def is_pointwise(geo) -> bool:
    """Whether a convolution is 1x1 without padding (any stride and groups; not Linear)."""
    return (bool(geo.kernel) and all(k == 1 for k in geo.kernel)
            and all(p == 0 for p in geo.padding))


def pointwise_supported(x_q: Tensor, w_q: Tensor, geo) -> bool:
    """Whether :func:`pointwise_int8_conv` / :func:`pointwise_int8_grad_input` apply."""
    return (x_q.device.type == 'cpu' and is_pointwise(geo) and geo.groups == 1
            and w_q.shape[1] <= MAX_CHUNK_K and w_q.shape[0] <= MAX_CHUNK_K)


#: Output positions per sample below which one im2col GEMM over the whole batch beats the GEMMs
#: per sample, which are then too narrow (the crossover on ResNet-50's 1x1 layers is in
#: ``docs/benchmarks/notes_from_code.md``).
MIN_POSITIONS = 128


def pointwise_pays(x_q: Tensor, geo) -> bool:
    """Whether the GEMMs per sample of :func:`pointwise_int8_conv` are the faster choice: a
    sample's output has at least :data:`MIN_POSITIONS` positions (each GEMM is that wide)."""
    positions = math.prod(-(-s // st) for s, st in zip(x_q.shape[2:], geo.stride))  # ceil(S/st)
    return positions >= MIN_POSITIONS


def _strided(t: Tensor, stride) -> Tensor:
    return t[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)]


def _scaled_per_sample_gemm(a: Tensor, b: Tensor, scale: Tensor,
                            bias: Optional[Tensor]) -> Tensor:
    """float32 ``(a @ b[n]) * scale (+ bias[m])`` for a (Tensor[M, K], int8) and b
    (Tensor[N, K, L], int8): Tensor[N, M, L].

    Each sample's int32 sums go to one reused buffer and are scaled from there while they are
    still in cache, so no [N, M, L] int32 tensor is written to memory and read back. Two
    roundings (multiply, then add), as the fused epilogue of the GEMM path.
    """
    a = gemm_left_operand(a)  # once, not per sample
    out = torch.empty((b.shape[0], a.shape[0], b.shape[2]), dtype=torch.float32)
    acc = torch.empty((a.shape[0], b.shape[2]), dtype=torch.int32)
    offset = None if bias is None else bias.float().reshape(-1, 1)
    for n in range(b.shape[0]):
        int8_matmul(a, b[n], out=acc)
        torch.mul(acc, scale, out=out[n])
        if offset is not None:
            out[n].add_(offset)
    return out


def pointwise_int8_conv(x_q: Tensor, w_q: Tensor, scale: Tensor, bias: Optional[Tensor],
                        geo) -> Tensor:
    """``conv(x_q, w_q) * scale (+ bias)`` of a 1x1 convolution, float32.

    Args:
        x_q (Tensor[N, C_in, *S], int8): Input codes.
        w_q (Tensor[C_out, C_in, 1, ..], int8): Weight codes.

    Returns:
        Tensor[N, C_out, *O], contiguous.
    """
    x = _strided(x_q, geo.stride)  # [N, C_in, *O]
    out_size = tuple(x.shape[2:])
    rows = x.reshape(x.shape[0], x.shape[1], -1).contiguous()  # a copy only if strided
    y = _scaled_per_sample_gemm(w_q.reshape(w_q.shape[0], -1), rows, scale, bias)
    return y.reshape((x.shape[0], w_q.shape[0]) + out_size)


def pointwise_int8_grad_input(g_q: Tensor, w_q: Tensor, scale: Tensor, input_shape,
                              geo) -> Tensor:
    """Input gradient of a 1x1 convolution from the output-gradient codes, float32.

    Args:
        g_q (Tensor[N, C_out, *O], int8): Output-gradient codes.
        w_q (Tensor[C_out, C_in, 1, ..], int8): Weight codes.
        scale (Tensor[]): Multiplier of the integer result.
        input_shape: (N, C_in, *S) of the convolution input.

    Returns:
        Tensor[N, C_in, *S]: zero where no output position reads the input (strides > 1).
    """
    w_t = w_q.reshape(w_q.shape[0], -1).t()  # [C_in, C_out]
    grad = _scaled_per_sample_gemm(w_t, g_q.reshape(g_q.shape[0], g_q.shape[1], -1), scale, None)
    grad = grad.reshape((g_q.shape[0], w_t.shape[0]) + tuple(g_q.shape[2:]))
    if all(s == 1 for s in geo.stride):
        return grad
    out = grad.new_zeros(tuple(input_shape))
    _strided(out, geo.stride).copy_(grad)
    return out
