"""Implicit-GEMM INT8 convolutions in Triton (CUDA): no im2col, no col2im, epilogues fused.

Three kernels, one launch each (plus one small reduction for a split weight gradient):

- :func:`int8_conv2d_triton`, the forward: reads the int8 codes of X channels last, gathers each
  (kernel position, channel block) tile of the virtual column matrix inside the kernel (zero
  padding by masking), accumulates ``tl.dot`` products in int32 and writes ``* scale (+ bias)``
  in NCHW float32.
- :func:`int8_conv2d_dgrad_triton`, the input gradient for any stride, padding and dilation: a
  transposed convolution of the G_Y codes, computed per input position (each input position
  gathers the output positions its kernel taps reach), so there are no columns to fold back.
- :func:`int8_conv2d_wgrad_triton`, the weight gradient: the long reduction over the positions
  is split over programs, int32 blocks are flushed into float64 before they could overflow, and
  the result is written scaled per channel in the weight's layout.

Every sum is exact (integers; float64 only holds integers below 2**53) and is rounded once to
float32 before the one multiply by the scale, as the reference does. ``TRITON_INTERPRET=1`` runs
the kernels on CPU tensors (slowly): the tests compare them there with the reference path, bit
for bit. The kernels and their autotuned tiles are in :mod:`.triton_conv_kernels`; every
launch goes through :func:`.triton_launch.launch`. The layers call these launchers through the
custom ops of :mod:`.triton_conv_op` (CUDA kernels and fakes).
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .im2col import conv_output_size
from .int8_matmul import MAX_CHUNK_K
from .triton_launch import launch
from .triton_quantize import FLOAT_DTYPES

try:
    import triton
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None


def triton_available() -> bool:
    """Whether Triton can be imported (it ships with CUDA builds of torch)."""
    return triton is not None


if triton is not None:
    from . import triton_conv_kernels as kernels


def _channels_last_rows(t: Tensor) -> Tensor:
    """[N, C, H, W] -> [N*H*W, C], contiguous: a view if ``t`` is channels-last already."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]).contiguous()


#: Memory orders of W's codes the kernels read fastest, as permutations of [C_out, C, KH, KW]:
#: [KH, KW, C, C_out] (the forward's B operand, rows (tap, c)) and [KH, KW, C_out, C] (the
#: input gradient's). The fused chain writes the first (:mod:`.triton_quantize`).
FORWARD_WEIGHT_ORDER = (2, 3, 1, 0)
DGRAD_WEIGHT_ORDER = (2, 3, 0, 1)


def taps_first_weight(w: Tensor, order=FORWARD_WEIGHT_ORDER) -> Tensor:
    """A [C_out, C, KH, KW] tensor whose memory is ``w`` permuted to ``order`` (a view of a new
    contiguous tensor; ``w`` itself if it is laid out so already)."""
    inverse = tuple(order.index(d) for d in range(4))
    return w.permute(order).contiguous().permute(inverse)


def _weight_operand(w_q: Tensor, order) -> Tuple[Tensor, int, int, int]:
    """W's codes [C_out, C, KH, KW] as the GEMM kernels address them: ``(w, stride of a tap,
    stride of C, stride of C_out)``, the tap (kh, kw) at ``(kh * KW + kw) * stride``.

    Any layout whose two kernel dims merge into one tap index and whose unit-stride dim is C
    or C_out (coalesced loads) is read as it is, with no copy: the forward's and the input
    gradient's orders both qualify. Any other (the parameter's own [C_out, C, KH, KW]) is
    copied to ``order`` first.
    """
    co, c, kh, kw = w_q.shape
    s_co, s_c, s_kh, s_kw = w_q.stride()
    if kw == 1:
        s_tap = s_kh
    elif kh == 1 or s_kh == kw * s_kw:
        s_tap = s_kw
    else:
        s_tap = None
    if s_tap is None or not (s_c == 1 or s_co == 1 or c == 1 or co == 1):
        return _weight_operand(taps_first_weight(w_q, order), order)
    return w_q, s_tap, s_c, s_co


def _check_out_dtype(out_dtype: torch.dtype) -> None:
    if out_dtype not in FLOAT_DTYPES:
        raise ValueError(f'out_dtype must be float32, float16 or bfloat16, but got {out_dtype}')


def conv2d_int8_supported(x_q: Tensor, kernel: Sequence[int], channels: int, groups: int) -> bool:
    """Whether :func:`int8_conv2d_triton` takes this convolution (2-D, one group, and a
    reduction short enough for exact int32 accumulation)."""
    return (triton is not None and x_q.dim() == 4 and groups == 1 and len(kernel) == 2
            and kernel[0] * kernel[1] * channels <= MAX_CHUNK_K)


def int8_conv2d_triton(x_q: Tensor, w_q: Tensor, scale: Tensor, bias: Optional[Tensor],
                       stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                       scale2: Optional[Tensor] = None,
                       out_dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tuple[int, int]]:
    """``conv2d(x_q, w_q) * scale (+ bias)`` from int8 codes, in one kernel.

    Args:
        x_q (Tensor[N, C, H, W], int8): Input codes (any memory format; read channels last).
        w_q (Tensor[C_out, C, KH, KW], int8): Weight codes (read without a copy if laid out as
            :data:`FORWARD_WEIGHT_ORDER` or :data:`DGRAD_WEIGHT_ORDER`).
        scale (Tensor[] or Tensor[C_out], float32): Multiplier of the integer sums.
        bias (Tensor[C_out], optional): Added after scaling.
        stride, padding, dilation (Sequence[int]): Two values each.
        scale2 (Tensor[], float32, optional): A second factor of the multiplier, ``scale *
            scale2`` taken in the kernel (as a float32 product, the same as outside it).
            Defaults to None.
        out_dtype (torch.dtype): float32, float16 or bfloat16: the kernel rounds its float32
            result to it when it stores (as ``.to(out_dtype)`` would). Defaults to float32.

    Returns:
        tuple: out (Tensor[N, C_out, OH, OW], ``out_dtype``, contiguous) and (OH, OW).
    """
    n, c, h, w = x_q.shape
    c_out, _, kh, kw = w_q.shape
    oh, ow = conv_output_size((h, w), (kh, kw), stride, padding, dilation)
    x_nhwc = x_q.permute(0, 2, 3, 1).contiguous()  # free if x_q is channels_last already
    w_k, *w_strides = _weight_operand(w_q, FORWARD_WEIGHT_ORDER)
    scale = scale.float().reshape(-1).contiguous()
    _check_out_dtype(out_dtype)
    out = torch.empty((n, c_out, oh, ow), dtype=out_dtype, device=x_q.device)
    if out.numel() == 0:
        return out, (oh, ow)
    m = n * oh * ow

    def grid(meta):
        return triton.cdiv(m, meta['BLOCK_M']), triton.cdiv(c_out, meta['BLOCK_N'])

    launch(kernels.int8_conv2d_kernel, grid,
           x_nhwc, w_k, scale, _scale2(scale2, scale),
           bias.float().contiguous() if bias is not None else scale, out,
           n, h, w, c, oh, ow, c_out, kh, kw, stride[0], stride[1], padding[0], padding[1],
           dilation[0], dilation[1], kernels.position_bucket(m), *w_strides,
           PER_CHANNEL=scale.numel() > 1, HAS_SCALE2=scale2 is not None,
           HAS_BIAS=bias is not None, OUT_BF16=out_dtype == torch.bfloat16,
           enable_fp_fusion=False)  # scale then bias, two roundings, as the reference
    return out, (oh, ow)


def conv2d_dgrad_int8_supported(g_q: Tensor, kernel: Sequence[int], groups: int) -> bool:
    """Whether :func:`int8_conv2d_dgrad_triton` takes this convolution (2-D, one group; any
    stride, padding, dilation and reduction length)."""
    return triton is not None and g_q.dim() == 4 and groups == 1 and len(kernel) == 2


def int8_conv2d_dgrad_triton(g_q: Tensor, w_q: Tensor, scale: Tensor, input_size: Sequence[int],
                             stride: Sequence[int], padding: Sequence[int],
                             dilation: Sequence[int], max_int32_k: int = MAX_CHUNK_K,
                             scale2: Optional[Tensor] = None,
                             out_dtype: torch.dtype = torch.float32) -> Tensor:
    """Input gradient ``scale * conv_transpose2d(g_q, w_q)`` from int8 codes, in one kernel.

    Any stride, padding and dilation, with no columns and no col2im: each input position sums
    the output positions its kernel taps reach (none for the last rows and columns a strided
    convolution skips: their gradient is zero). Exact integer sums at any length (int32, or
    float64 blocks past ``max_int32_k`` products), rounded once to float32, times ``scale``.

    Args:
        g_q (Tensor[N, C_out, OH, OW], int8): Output-gradient codes (any memory format; read
            channels last, without a copy if already so).
        w_q (Tensor[C_out, C, KH, KW], int8): Weight codes (read without a copy if laid out as
            :data:`FORWARD_WEIGHT_ORDER` or :data:`DGRAD_WEIGHT_ORDER`).
        scale (Tensor[] or Tensor[1], float32): Multiplier of the integer sums (``s_g * s_w``),
            read by the kernel.
        input_size (Sequence[int]): (N, C, H, W) of the convolution's input.
        stride, padding, dilation (Sequence[int]): Two values each, of the forward convolution.
        max_int32_k (int): Longest reduction (KH*KW*C_out) summed in int32. Defaults to
            :data:`~.int8_matmul.MAX_CHUNK_K`, the exact limit; tests lower it.
        scale2 (Tensor[], float32, optional): A second factor of the multiplier (as in
            :func:`int8_conv2d_triton`). Defaults to None.
        out_dtype (torch.dtype): float32, float16 or bfloat16, rounded to as in
            :func:`int8_conv2d_triton`. Defaults to float32.

    Returns:
        Tensor[N, C, H, W], ``out_dtype``, contiguous (NCHW like X and the forward's output,
        so the layers before see the layout they produced).
    """
    n, c_out, oh, ow = g_q.shape
    _, c, kh, kw = w_q.shape
    h, w = input_size[2:]
    g_rows = _channels_last_rows(g_q)  # [N*OH*OW, C_out]
    w_k, *w_strides = _weight_operand(w_q, DGRAD_WEIGHT_ORDER)
    _check_out_dtype(out_dtype)
    scale = scale.float().reshape(-1)
    out = torch.empty((n, c, h, w), dtype=out_dtype, device=g_q.device)
    if out.numel() == 0:
        return out
    positions = n * triton.cdiv(h, stride[0]) * triton.cdiv(w, stride[1])  # per phase

    def grid(meta):
        return (stride[0] * stride[1] * triton.cdiv(positions, meta['BLOCK_M']),
                triton.cdiv(c, meta['BLOCK_N']))

    launch(kernels.int8_conv2d_dgrad_kernel, grid,
           g_rows, w_k, scale, _scale2(scale2, scale), out, n, h, w, c, oh, ow, c_out, kh, kw,
           stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
           kernels.position_bucket(positions), *w_strides, HAS_SCALE2=scale2 is not None,
           LONG_K=kh * kw * c_out > max_int32_k, OUT_BF16=out_dtype == torch.bfloat16,
           enable_fp_fusion=False)
    return out


def conv2d_wgrad_int8_supported(x_q: Tensor, kernel: Sequence[int], groups: int) -> bool:
    """Whether :func:`int8_conv2d_wgrad_triton` takes this convolution (2-D, one group)."""
    return triton is not None and x_q.dim() == 4 and groups == 1 and len(kernel) == 2


def _wgrad_splits(m: int, tile_count: int, device: torch.device,
                  splits: Optional[int]) -> Tuple[int, int]:
    """(splits, positions per split) of the weight gradient's reduction over ``m`` positions:
    ``splits`` if given, else about four programs per multiprocessor over the ``tile_count``
    output tiles (eight programs on CPU); each split a multiple of every BLOCK_M."""
    unit = kernels.WGRAD_SPLIT_UNIT
    if splits is None:
        sms = torch.cuda.get_device_properties(device).multi_processor_count \
            if device.type == 'cuda' else 2
        splits = min(triton.cdiv(m, unit), triton.cdiv(4 * sms, tile_count))
    m_per_split = max(1, triton.cdiv(triton.cdiv(m, max(1, splits)), unit)) * unit
    return max(1, triton.cdiv(m, m_per_split)), m_per_split


def int8_conv2d_wgrad_triton(g_q: Tensor, x_q: Tensor, kernel: Sequence[int], scale: Tensor,
                             stride: Sequence[int], padding: Sequence[int],
                             dilation: Sequence[int], splits: Optional[int] = None,
                             max_int32_k: int = MAX_CHUNK_K,
                             scale2: Optional[Tensor] = None) -> Tensor:
    """Weight gradient ``scale[co] * sum_m g_q[m, co] * cols(x_q)[m, (c, kh, kw)]`` from codes.

    The reduction over the N*OH*OW positions runs in int32 blocks added into float64 before
    they could overflow (exact: every partial sum is an integer below 2**53), split over
    programs so that a small layer still fills the GPU. One launch writes the scaled result
    when there is one split; with more, the GEMM writes float64 partial sums and a second
    launch adds them in a fixed order (deterministic), rounds once to float32 and scales.

    Args:
        g_q (Tensor[N, C_out, OH, OW], int8): Output-gradient codes (any memory format).
        x_q (Tensor[N, C, H, W], int8): Input codes (any memory format).
        kernel (Sequence[int]): (KH, KW).
        scale (Tensor[C_out] or Tensor[], float32): Multiplier of the integer sums, per output
            channel or per tensor, read by the kernel.
        stride, padding, dilation (Sequence[int]): Two values each.
        splits (int, optional): Programs along the reduction (rounded so each split is a
            multiple of every BLOCK_M). Defaults to about four programs per multiprocessor
            (eight on CPU).
        max_int32_k (int): Products per int32 block before it is flushed into float64.
            Defaults to :data:`~.int8_matmul.MAX_CHUNK_K`, the exact limit; tests lower it.
        scale2 (Tensor[], float32, optional): A second factor of the multiplier (as in
            :func:`int8_conv2d_triton`). Defaults to None.

    Returns:
        Tensor[C_out, C, KH, KW], float32, contiguous: the weight's layout.
    """
    n, c_out, oh, ow = g_q.shape
    _, c, h, w = x_q.shape
    kh, kw = kernel
    g_rows = _channels_last_rows(g_q)  # [N*OH*OW, C_out]
    x_nhwc = x_q.permute(0, 2, 3, 1).contiguous()  # free if x_q is channels_last already
    scale = scale.float().reshape(-1).contiguous()
    out = torch.empty((c_out, c, kh, kw), dtype=torch.float32, device=g_q.device)
    if out.numel() == 0:
        return out
    tile_count = triton.cdiv(c_out, 64) * kh * kw * triton.cdiv(c, 64)  # nominal 64 x 64 tiles
    splits, m_per_split = _wgrad_splits(n * oh * ow, tile_count, g_q.device, splits)
    part = out if splits == 1 else torch.empty((splits, ) + out.shape, dtype=torch.float64,
                                               device=out.device)

    def grid(meta):
        return (triton.cdiv(c_out, meta['BLOCK_CO']), kh * kw * triton.cdiv(c, meta['BLOCK_C']),
                splits)

    per_channel = scale.numel() > 1
    launch(kernels.int8_conv2d_wgrad_kernel, grid,
           g_rows, x_nhwc, scale, _scale2(scale2, scale), part, n, h, w, c, oh, ow, c_out, kh, kw,
           stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
           kernels.position_bucket(m_per_split), m_per_split, max_int32_k,
           PER_CHANNEL=per_channel, HAS_SCALE2=scale2 is not None, SPLIT=splits > 1,
           enable_fp_fusion=False)
    if splits > 1:
        block = 1024
        launch(kernels.weight_grad_epilogue_kernel, (triton.cdiv(out.numel(), block), ),
               part, scale, _scale2(scale2, scale), out, splits, out.numel(), c * kh * kw,
               PER_CHANNEL=per_channel, HAS_SCALE2=scale2 is not None, BLOCK=block,
               enable_fp_fusion=False)
    return out


def _scale2(scale2: Optional[Tensor], scale: Tensor) -> Tensor:
    """The kernels' second scale operand: ``scale2`` as float32 (0-d or one element), or any
    float32 pointer where there is none (the kernel does not read it)."""
    if scale2 is None:
        return scale
    if scale2.numel() != 1:
        raise ValueError(f'scale2 must have one element, but got shape {tuple(scale2.shape)}')
    return scale2.float().reshape(-1)
