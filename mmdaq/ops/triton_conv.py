"""Implicit-GEMM INT8 convolution in Triton (CUDA): no im2col, epilogue fused.

The kernel reads the int8 codes of X in channels-last order straight from memory, gathers each
(kernel position, channel block) tile of the virtual column matrix inside the kernel (zero
padding by masking), accumulates ``tl.dot`` products in int32 and writes the scaled (and
biased) float32 output in NC* layout: one launch for the whole forward GEMM, without the
copies around ``torch._int_mm`` (im2col of the int8 input, transposes, padding) and the many
small launches of the GEMM path.

:func:`int8_conv2d_wgrad_triton` computes the weight gradient the same way (columns gathered
in the kernel, the long reduction over positions split over programs, int32 blocks added in
float64). The forward kernel also computes the input gradient of a stride-1 convolution (a
convolution of the G_Y codes with the flipped, transposed weight, see
:func:`.int8_layer.transposed_geometry`).

``TRITON_INTERPRET=1`` runs it on CPU tensors (slowly): the tests compare it there with the
reference path, bit for bit (integer accumulation; the epilogue rounds as
:func:`mmdaq.kernels.int32_to_channels_first_reference` does). The layers call these launchers
through the custom ops of :mod:`.triton_conv_op` (CUDA kernels and fakes).
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .im2col import conv_output_size
from .int8_matmul import MAX_CHUNK_K

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None


def triton_available() -> bool:
    """Whether Triton can be imported (it ships with CUDA builds of torch)."""
    return triton is not None


if triton is not None:

    @triton.jit
    def _int8_conv2d_kernel(x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr,
                            N, H, W, C, OH, OW, CO, KH, KW,
                            stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                            PER_CHANNEL: tl.constexpr, HAS_BIAS: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_K: tl.constexpr):
        # x: int8 [N, H, W, C] (channels last); w: int8 [KH * KW * C, CO] (row k = (kh, kw, c));
        # out: float32 [N, CO, OH, OW]. One program: BLOCK_M output positions x BLOCK_N channels.
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        L = OH * OW
        m_ok = offs_m < N * L
        n_img = offs_m // L
        rem = offs_m % L
        oh = rem // OW
        ow = rem % OW
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        offs_k = tl.arange(0, BLOCK_K)
        # One flat loop over (kernel position, channel block), so Triton pipelines the loads.
        c_blocks = tl.cdiv(C, BLOCK_K)
        for step in range(0, KH * KW * c_blocks):
            pos = step // c_blocks
            c0 = (step % c_blocks) * BLOCK_K
            kh = pos // KW
            kw = pos % KW
            ih = oh * stride_h - pad_h + kh * dil_h
            iw = ow * stride_w - pad_w + kw * dil_w
            row_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x_row = ((n_img * H + ih) * W + iw).to(tl.int64) * C
            c = c0 + offs_k
            c_ok = c < C
            a = tl.load(x_ptr + x_row[:, None] + c[None, :],
                        mask=row_ok[:, None] & c_ok[None, :], other=0)
            b = tl.load(w_ptr + (pos * C + c)[:, None].to(tl.int64) * CO + offs_n[None, :],
                        mask=c_ok[:, None] & (offs_n[None, :] < CO), other=0)
            acc += tl.dot(a, b, out_dtype=tl.int32)
        n_ok = offs_n < CO
        if PER_CHANNEL:
            s = tl.load(scale_ptr + offs_n, mask=n_ok, other=0.0)
        else:
            s = tl.load(scale_ptr + offs_n * 0)
        y = acc.to(tl.float32) * s[None, :]
        if HAS_BIAS:
            y = y + tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0)[None, :]
        out = (n_img[:, None].to(tl.int64) * CO + offs_n[None, :]) * L + rem[:, None]
        tl.store(out_ptr + out, y, mask=m_ok[:, None] & n_ok[None, :])

    @triton.jit
    def _int8_conv2d_wgrad_kernel(g_ptr, x_ptr, part_ptr,
                                  N, H, W, C, OH, OW, CO, KH, KW,
                                  stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                                  M_PER_SPLIT, FLUSH_STEPS,
                                  BLOCK_CO: tl.constexpr, BLOCK_C: tl.constexpr,
                                  BLOCK_M: tl.constexpr):
        # g: int8 [N * OH * OW, CO] (G_Y codes, channels last); x: int8 [N, H, W, C];
        # part: float64 [SPLITS, CO, KH * KW * C], the exact integer sums of each M split.
        # One program: BLOCK_CO output channels x BLOCK_C input channels of one kernel position,
        # summed over its split of the N * OH * OW positions.
        pid_co = tl.program_id(0)
        pid_kc = tl.program_id(1)
        split = tl.program_id(2)
        c_blocks = tl.cdiv(C, BLOCK_C)
        pos = pid_kc // c_blocks
        kh = pos // KW
        kw = pos % KW
        offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
        offs_c = (pid_kc % c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
        co_ok = offs_co < CO
        c_ok = offs_c < C
        L = OH * OW
        M = N * L
        m_begin = split * M_PER_SPLIT
        m_end = tl.minimum(m_begin + M_PER_SPLIT, M)
        total = tl.zeros((BLOCK_CO, BLOCK_C), dtype=tl.float64)
        acc = tl.zeros((BLOCK_CO, BLOCK_C), dtype=tl.int32)
        steps = tl.cdiv(m_end - m_begin, BLOCK_M)
        for step in range(0, steps):
            offs_m = m_begin + step * BLOCK_M + tl.arange(0, BLOCK_M)
            m_ok = offs_m < m_end
            n_img = offs_m // L
            rem = offs_m % L
            ih = (rem // OW) * stride_h - pad_h + kh * dil_h
            iw = (rem % OW) * stride_w - pad_w + kw * dil_w
            row_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a = tl.load(g_ptr + offs_m[None, :].to(tl.int64) * CO + offs_co[:, None],
                        mask=co_ok[:, None] & m_ok[None, :], other=0)  # [BLOCK_CO, BLOCK_M]
            x_row = ((n_img * H + ih) * W + iw).to(tl.int64) * C
            b = tl.load(x_ptr + x_row[:, None] + offs_c[None, :],
                        mask=row_ok[:, None] & c_ok[None, :], other=0)  # [BLOCK_M, BLOCK_C]
            acc += tl.dot(a, b, out_dtype=tl.int32)
            if (step + 1) % FLUSH_STEPS == 0:  # before int32 could overflow: exact in float64
                total += acc.to(tl.float64)
                acc = tl.zeros((BLOCK_CO, BLOCK_C), dtype=tl.int32)
        total += acc.to(tl.float64)
        kc = KH * KW * C
        out = (split * CO + offs_co[:, None]).to(tl.int64) * kc + pos * C + offs_c[None, :]
        tl.store(part_ptr + out, total, mask=co_ok[:, None] & c_ok[None, :])


def conv2d_int8_supported(x_q: Tensor, kernel: Sequence[int], channels: int, groups: int) -> bool:
    """Whether :func:`int8_conv2d_triton` takes this convolution (2-D, one group, and a
    reduction short enough for exact int32 accumulation)."""
    return (triton is not None and x_q.dim() == 4 and groups == 1 and len(kernel) == 2
            and kernel[0] * kernel[1] * channels <= MAX_CHUNK_K)


def int8_conv2d_triton(x_q: Tensor, w_q: Tensor, scale: Tensor, bias: Optional[Tensor],
                       stride: Sequence[int], padding: Sequence[int],
                       dilation: Sequence[int]) -> Tuple[Tensor, Tuple[int, int]]:
    """``conv2d(x_q, w_q) * scale (+ bias)`` from int8 codes, in one kernel.

    Args:
        x_q (Tensor[N, C, H, W], int8): Input codes (any memory format; read channels last).
        w_q (Tensor[C_out, C, KH, KW], int8): Weight codes.
        scale (Tensor[] or Tensor[C_out], float32): Multiplier of the integer sums.
        bias (Tensor[C_out], optional): Added after scaling.
        stride, padding, dilation (Sequence[int]): Two values each.

    Returns:
        tuple: out (Tensor[N, C_out, OH, OW], float32, contiguous) and (OH, OW).
    """
    n, c, h, w = x_q.shape
    c_out, _, kh, kw = w_q.shape
    oh, ow = conv_output_size((h, w), (kh, kw), stride, padding, dilation)
    x_nhwc = x_q.permute(0, 2, 3, 1).contiguous()  # free if x_q is channels_last already
    w_kc = w_q.permute(2, 3, 1, 0).reshape(kh * kw * c, c_out).contiguous()
    scale = scale.float().reshape(-1).contiguous()
    out = torch.empty((n, c_out, oh, ow), dtype=torch.float32, device=x_q.device)
    if out.numel() == 0:
        return out, (oh, ow)
    block_m, block_n = 64, max(16, min(128, triton.next_power_of_2(c_out)))
    block_k = max(32, min(64, triton.next_power_of_2(c)))  # int8 tl.dot needs K >= 32 on GPUs
    grid = (triton.cdiv(n * oh * ow, block_m), triton.cdiv(c_out, block_n))
    _int8_conv2d_kernel[grid](
        x_nhwc, w_kc, scale, bias.float().contiguous() if bias is not None else scale, out,
        n, h, w, c, oh, ow, c_out, kh, kw, stride[0], stride[1], padding[0], padding[1],
        dilation[0], dilation[1], PER_CHANNEL=scale.numel() > 1, HAS_BIAS=bias is not None,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        enable_fp_fusion=False)  # scale then bias, two roundings, as the reference
    return out, (oh, ow)


def conv2d_wgrad_int8_supported(x_q: Tensor, kernel: Sequence[int], groups: int) -> bool:
    """Whether :func:`int8_conv2d_wgrad_triton` takes this convolution (2-D, one group)."""
    return triton is not None and x_q.dim() == 4 and groups == 1 and len(kernel) == 2


def int8_conv2d_wgrad_triton(g_q: Tensor, x_q: Tensor, kernel: Sequence[int], scale: Tensor,
                             stride: Sequence[int], padding: Sequence[int],
                             dilation: Sequence[int], splits: Optional[int] = None) -> Tensor:
    """Weight gradient ``scale[co] * sum_m g_q[m, co] * cols(x_q)[m, (k, c)]`` from int8 codes.

    The reduction over the N*OH*OW positions runs in int32 blocks added into float64 before
    they could overflow (exact: every partial sum is an integer below 2**53), split over
    programs so that a small layer still fills the GPU; the splits are added in float64.

    Args:
        g_q (Tensor[N, C_out, OH, OW], int8): Output-gradient codes.
        x_q (Tensor[N, C, H, W], int8): Input codes.
        kernel (Sequence[int]): (KH, KW).
        scale (Tensor[C_out], float32): Per-channel multiplier of the integer sums.
        stride, padding, dilation (Sequence[int]): Two values each.
        splits (int, optional): Programs along the reduction. Defaults to enough for about
            four programs per multiprocessor (eight on CPU).

    Returns:
        Tensor[C_out, KH*KW*C], float32: in the (k, c) column order of
        :func:`.im2col.channels_inner_weight`, like the reference's integer GEMM.
    """
    n, c_out, oh, ow = g_q.shape
    _, c, h, w = x_q.shape
    kh, kw = kernel
    m = n * oh * ow
    g_mc = g_q.permute(0, 2, 3, 1).reshape(m, c_out).contiguous()
    x_nhwc = x_q.permute(0, 2, 3, 1).contiguous()
    block_co = max(16, min(64, triton.next_power_of_2(c_out)))
    block_c = max(16, min(64, triton.next_power_of_2(c)))
    block_m = 64
    tiles = triton.cdiv(c_out, block_co) * kh * kw * triton.cdiv(c, block_c)
    if splits is None:
        sms = torch.cuda.get_device_properties(g_q.device).multi_processor_count \
            if g_q.is_cuda else 2
        splits = max(1, min(triton.cdiv(m, block_m), (4 * sms + tiles - 1) // tiles))
    m_per_split = triton.cdiv(triton.cdiv(m, splits), block_m) * block_m
    splits = triton.cdiv(m, m_per_split)
    part = torch.empty((splits, c_out, kh * kw * c), dtype=torch.float64, device=g_q.device)
    flush = MAX_CHUNK_K // block_m  # int32 holds 2**17 products of two codes
    grid = (triton.cdiv(c_out, block_co), kh * kw * triton.cdiv(c, block_c), splits)
    _int8_conv2d_wgrad_kernel[grid](
        g_mc, x_nhwc, part, n, h, w, c, oh, ow, c_out, kh, kw, stride[0], stride[1],
        padding[0], padding[1], dilation[0], dilation[1], m_per_split, flush,
        BLOCK_CO=block_co, BLOCK_C=block_c, BLOCK_M=block_m)
    acc = part.sum(0) if splits > 1 else part[0]  # exact: integers below 2**53
    return acc.float() * scale.float().reshape(-1, 1)
