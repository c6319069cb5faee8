"""Device code of :mod:`.triton_conv`: the Triton kernels and their autotuned tiles.

Kernels: the forward implicit GEMM, the input-gradient implicit GEMM (any stride), the
weight-gradient GEMM and the epilogue that adds its split partial sums. On a GPU each GEMM is
autotuned (``triton.autotune``) over the few tile shapes below, keyed on the channels, the
kernel, the stride and a power-of-two bucket of the positions, after pruning the tiles wider
than the problem. Under Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors) each kernel
has one config: autotuning times launches with CUDA events, which is slow and meaningless
there; ``MMDAQ_TRITON_AUTOTUNE=0`` gives one tile on a GPU too. The lists are built at import
time (the tests reload the module after setting the variable). int8 ``tl.dot`` needs a
reduction block of at least 32 on GPUs.
Import this module only where Triton is installed (:func:`.triton_conv.triton_available`).
The kernels call only builtins of ``triton.language`` (``tl.full``, not the ``@jit`` helpers
``tl.zeros`` / ``tl.cdiv``), so that they also run in the interpreter when Triton was imported
before ``TRITON_INTERPRET`` was set.
"""
import os
from typing import Dict, List, Sequence

import triton
import triton.language as tl

#: Whether the kernels run in Triton's interpreter (CPU tensors).
INTERPRET = os.environ.get('TRITON_INTERPRET') == '1'

#: Implicit GEMM tiles (forward and input gradient): BLOCK_M positions x BLOCK_N output
#: columns, BLOCK_K channels of the reduction per step; then num_warps, num_stages.
_GEMM_TILES = [
    (128, 128, 128, 8, 3),
    (128, 128, 64, 8, 3),
    (128, 64, 64, 4, 4),
    (64, 128, 64, 4, 4),
    (64, 64, 64, 4, 4),
    (128, 32, 32, 4, 4),
    (64, 32, 32, 4, 4),
]
_GEMM_INTERPRETED = (64, 32, 64, 4, 1)

#: Weight-gradient tiles: BLOCK_CO x BLOCK_C outputs, BLOCK_M positions of the reduction per
#: step; then num_warps, num_stages.
_WGRAD_TILES = [
    (128, 64, 64, 8, 3),
    (128, 64, 64, 4, 3),
    (64, 128, 64, 4, 3),
    (64, 64, 128, 4, 3),
    (64, 64, 64, 4, 4),
    (32, 64, 128, 4, 3),
    (32, 32, 128, 4, 3),
]
_WGRAD_INTERPRETED = (32, 32, 64, 4, 1)


def _configs(names: Sequence[str], tiles: List[tuple]) -> List['triton.Config']:
    return [triton.Config(dict(zip(names, tile[:3])), num_warps=tile[3], num_stages=tile[4])
            for tile in tiles]


#: ``MMDAQ_TRITON_AUTOTUNE=0``: one tile per GEMM on GPUs too (for tests: with autotuning every
#: new shape compiles and times all the tiles, minutes on a fresh machine).
AUTOTUNE = os.environ.get('MMDAQ_TRITON_AUTOTUNE', '1') != '0'
_GEMM_FIXED = (64, 64, 64, 4, 4)
_WGRAD_FIXED = (64, 64, 64, 4, 4)


def _tiles(tiles: List[tuple], interpreted: tuple, fixed: tuple) -> List[tuple]:
    if INTERPRET:
        return [interpreted]
    return tiles if AUTOTUNE else [fixed]


GEMM_CONFIGS = _configs(('BLOCK_M', 'BLOCK_N', 'BLOCK_K'),
                        _tiles(_GEMM_TILES, _GEMM_INTERPRETED, _GEMM_FIXED))
WGRAD_CONFIGS = _configs(('BLOCK_CO', 'BLOCK_C', 'BLOCK_M'),
                         _tiles(_WGRAD_TILES, _WGRAD_INTERPRETED, _WGRAD_FIXED))

#: The splits of the weight gradient's reduction are multiples of every BLOCK_M (fewer masked
#: steps; any length stays correct).
WGRAD_SPLIT_UNIT = max(config.kwargs['BLOCK_M'] for config in WGRAD_CONFIGS)

#: Autotuning keys (kernel argument names); M_BUCKET is a power of two >= the positions.
GEMM_KEY = ['C', 'CO', 'KH', 'KW', 'stride_h', 'stride_w', 'M_BUCKET']
WGRAD_KEY = ['C', 'CO', 'KH', 'KW', 'stride_h', 'stride_w', 'M_BUCKET']


def position_bucket(m: int) -> int:
    """Power of two >= ``m`` (at least 16): the positions' part of the autotuning key."""
    return max(16, triton.next_power_of_2(m))


def _fits(block: int, size: int) -> bool:
    """Whether a tile side of ``block`` suits a dimension of ``size``: at most its next power
    of two (any side up to 32 fits)."""
    return block <= max(32, triton.next_power_of_2(size))


def _prune(configs: List['triton.Config'], sizes: Dict[str, int]) -> List['triton.Config']:
    """The configs whose blocks fit ``sizes`` (block name -> problem size); the smallest tile
    if none does."""
    kept = [cfg for cfg in configs if all(_fits(cfg.kwargs[b], s) for b, s in sizes.items())]
    return kept or [min(configs, key=lambda cfg: sum(cfg.kwargs[b] for b in sizes))]


def prune_forward(configs: List['triton.Config'], nargs: Dict, **kwargs) -> List['triton.Config']:
    """Forward GEMM: BLOCK_N spans C_out, BLOCK_K the input channels, BLOCK_M the positions."""
    return _prune(configs, dict(BLOCK_M=nargs['M_BUCKET'], BLOCK_N=nargs['CO'],
                                BLOCK_K=nargs['C']))


def prune_dgrad(configs: List['triton.Config'], nargs: Dict, **kwargs) -> List['triton.Config']:
    """Input-gradient GEMM: BLOCK_N spans the input channels, BLOCK_K C_out."""
    return _prune(configs, dict(BLOCK_M=nargs['M_BUCKET'], BLOCK_N=nargs['C'],
                                BLOCK_K=nargs['CO']))


def prune_wgrad(configs: List['triton.Config'], nargs: Dict, **kwargs) -> List['triton.Config']:
    """Weight-gradient GEMM: BLOCK_CO spans C_out, BLOCK_C the input channels, BLOCK_M the
    positions of one split."""
    return _prune(configs, dict(BLOCK_CO=nargs['CO'], BLOCK_C=nargs['C'],
                                BLOCK_M=nargs['M_BUCKET']))


@triton.jit
def _rounded_for(y, out_ptr, OUT_BF16: tl.constexpr):
    # float32 y in the dtype of out_ptr, rounded to nearest even as .to(dtype) would: for
    # bfloat16 by bit arithmetic (the interpreter's cast truncates), float16 by the cast.
    if OUT_BF16:
        bits = y.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        y = tl.where(y == y, bits.to(tl.float32, bitcast=True), y)  # NaN stays NaN
    return y.to(out_ptr.dtype.element_ty)


@triton.autotune(configs=GEMM_CONFIGS, key=GEMM_KEY,
                 prune_configs_by=dict(early_config_prune=prune_forward))
@triton.jit
def int8_conv2d_kernel(x_ptr, w_ptr, scale_ptr, scale2_ptr, bias_ptr, out_ptr,
                       N, H, W, C, OH, OW, CO, KH, KW,
                       stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, M_BUCKET,
                       w_stride_tap, w_stride_c, w_stride_co,
                       PER_CHANNEL: tl.constexpr, HAS_SCALE2: tl.constexpr,
                       HAS_BIAS: tl.constexpr, OUT_BF16: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # x: int8 [N, H, W, C] (channels last); w: int8, W[co, c, kh, kw] at
    # (kh * KW + kw) * w_stride_tap + c * w_stride_c + co * w_stride_co; scale: float32 [CO]
    # or [], times scale2 (float32 []) if HAS_SCALE2; out: float32 (or float16 / bfloat16)
    # [N, CO, OH, OW].
    # One program: BLOCK_M output positions x BLOCK_N channels.
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
    acc = tl.full((BLOCK_M, BLOCK_N), 0, tl.int32)
    offs_k = tl.arange(0, BLOCK_K)
    # One flat loop over (kernel position, channel block), so Triton pipelines the loads.
    c_blocks = (C + BLOCK_K - 1) // BLOCK_K
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
        b = tl.load(w_ptr + pos * w_stride_tap + c[:, None].to(tl.int64) * w_stride_c
                    + offs_n[None, :].to(tl.int64) * w_stride_co,
                    mask=c_ok[:, None] & (offs_n[None, :] < CO), other=0)
        acc += tl.dot(a, b, out_dtype=tl.int32)
    n_ok = offs_n < CO
    if PER_CHANNEL:
        s = tl.load(scale_ptr + offs_n, mask=n_ok, other=0.0)
    else:
        s = tl.load(scale_ptr + offs_n * 0)
    if HAS_SCALE2:
        s = s * tl.load(scale2_ptr + offs_n * 0)
    y = acc.to(tl.float32) * s[None, :]
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0)[None, :]
    out = (n_img[:, None].to(tl.int64) * CO + offs_n[None, :]) * L + rem[:, None]
    tl.store(out_ptr + out, _rounded_for(y, out_ptr, OUT_BF16), mask=m_ok[:, None] & n_ok[None, :])


@triton.autotune(configs=GEMM_CONFIGS, key=GEMM_KEY,
                 prune_configs_by=dict(early_config_prune=prune_dgrad))
@triton.jit
def int8_conv2d_dgrad_kernel(g_ptr, w_ptr, scale_ptr, scale2_ptr, out_ptr,
                             N, H, W, C, OH, OW, CO, KH, KW,
                             stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, M_BUCKET,
                             w_stride_tap, w_stride_c, w_stride_co,
                             HAS_SCALE2: tl.constexpr, LONG_K: tl.constexpr,
                             OUT_BF16: tl.constexpr, BLOCK_M: tl.constexpr,
                             BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # g: int8 [N * OH * OW, CO] (G_Y codes, channels last); w: int8, addressed as in
    # int8_conv2d_kernel; scale: float32 [], times scale2 (float32 []) if HAS_SCALE2;
    # out: float32 (or float16 / bfloat16) [N, C, H, W].
    # G_X[n, c, ih, iw] = scale * sum over taps (kh, kw) and co of
    #   G_Y[n, co, oh, ow] * W[co, c, kh, kw], with ih = oh * stride_h - pad_h + kh * dil_h.
    # The input positions are taken by phase (ih % stride_h, iw % stride_w): one program
    # covers BLOCK_M positions of one phase x BLOCK_N channels, so all its positions meet
    # the same taps, and a tap that reaches no output position from this phase is skipped
    # whole instead of masked (1 / (stride_h * stride_w) of the taps remain).
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    PH = (H + stride_h - 1) // stride_h
    PW = (W + stride_w - 1) // stride_w
    tiles_per_phase = (N * PH * PW + BLOCK_M - 1) // BLOCK_M
    phase = pid_m // tiles_per_phase
    rh = phase // stride_w
    rw = phase % stride_w
    offs_m = (pid_m % tiles_per_phase) * BLOCK_M + tl.arange(0, BLOCK_M)
    n_img = offs_m // (PH * PW)
    qh = (offs_m % (PH * PW)) // PW
    qw = offs_m % PW
    ih = qh * stride_h + rh
    iw = qw * stride_w + rw
    m_ok = (n_img < N) & (ih < H) & (iw < W)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < C
    offs_k = tl.arange(0, BLOCK_K)
    # int32 sums are exact up to MAX_CHUNK_K products; a longer reduction (LONG_K) adds
    # each block's int32 dot into float64 instead (exact: integers below 2**53).
    acc = tl.full((BLOCK_M, BLOCK_N), 0, tl.float64 if LONG_K else tl.int32)
    for pos in range(0, KH * KW):
        th = rh + pad_h - (pos // KW) * dil_h  # = (oh - qh) * stride_h
        tw = rw + pad_w - (pos % KW) * dil_w
        if (th % stride_h == 0) & (tw % stride_w == 0):  # the tap meets this phase
            oh = qh + th // stride_h  # exact: C's truncation and Python's floor agree
            ow = qw + tw // stride_w
            row_ok = m_ok & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)
            g_row = ((n_img * OH + oh) * OW + ow).to(tl.int64) * CO
            for co0 in range(0, CO, BLOCK_K):
                co = co0 + offs_k
                co_ok = co < CO
                a = tl.load(g_ptr + g_row[:, None] + co[None, :],
                            mask=row_ok[:, None] & co_ok[None, :], other=0)
                b = tl.load(w_ptr + pos * w_stride_tap + co[:, None].to(tl.int64) * w_stride_co
                            + offs_n[None, :].to(tl.int64) * w_stride_c,
                            mask=co_ok[:, None] & n_ok[None, :], other=0)
                acc += tl.dot(a, b, out_dtype=tl.int32).to(acc.dtype)
    s = tl.load(scale_ptr)
    if HAS_SCALE2:
        s = s * tl.load(scale2_ptr)
    y = acc.to(tl.float32) * s
    out = ((n_img[:, None].to(tl.int64) * C + offs_n[None, :]) * H + ih[:, None]) * W \
        + iw[:, None]
    tl.store(out_ptr + out, _rounded_for(y, out_ptr, OUT_BF16), mask=m_ok[:, None] & n_ok[None, :])


@triton.autotune(configs=WGRAD_CONFIGS, key=WGRAD_KEY,
                 prune_configs_by=dict(early_config_prune=prune_wgrad))
@triton.jit
def int8_conv2d_wgrad_kernel(g_ptr, x_ptr, scale_ptr, scale2_ptr, out_ptr,
                             N, H, W, C, OH, OW, CO, KH, KW,
                             stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, M_BUCKET,
                             M_PER_SPLIT, FLUSH_K,
                             PER_CHANNEL: tl.constexpr, HAS_SCALE2: tl.constexpr,
                             SPLIT: tl.constexpr, BLOCK_CO: tl.constexpr,
                             BLOCK_C: tl.constexpr, BLOCK_M: tl.constexpr):
    # g: int8 [N * OH * OW, CO] (G_Y codes, channels last); x: int8 [N, H, W, C];
    # scale: float32 [CO] or [], times scale2 (float32 []) if HAS_SCALE2. One program:
    # BLOCK_CO output channels x BLOCK_C input channels of one kernel position, summed over
    # its split of the N * OH * OW positions.
    # out: with SPLIT, float64 [SPLITS, CO, C, KH, KW], the exact integer sums of each
    # split; else float32 [CO, C, KH, KW], the scaled weight gradient.
    pid_co = tl.program_id(0)
    pid_kc = tl.program_id(1)
    split = tl.program_id(2)
    c_blocks = (C + BLOCK_C - 1) // BLOCK_C
    pos = pid_kc // c_blocks
    kh = pos // KW
    kw = pos % KW
    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_c = (pid_kc % c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    co_ok = offs_co < CO
    c_ok = offs_c < C
    L = OH * OW
    m_begin = split * M_PER_SPLIT
    m_end = tl.minimum(m_begin + M_PER_SPLIT, N * L)
    flush_steps = tl.maximum(FLUSH_K // BLOCK_M, 1)  # int32 sums of <= FLUSH_K products
    total = tl.full((BLOCK_CO, BLOCK_C), 0, tl.float64)
    acc = tl.full((BLOCK_CO, BLOCK_C), 0, tl.int32)
    for step in range(0, (m_end - m_begin + BLOCK_M - 1) // BLOCK_M):
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
        if (step + 1) % flush_steps == 0:  # before int32 could overflow: exact in float64
            total += acc.to(tl.float64)
            acc = tl.full((BLOCK_CO, BLOCK_C), 0, tl.int32)
    total += acc.to(tl.float64)
    out = ((split * CO + offs_co[:, None]).to(tl.int64) * C + offs_c[None, :]) * (KH * KW) \
        + pos
    out_ok = co_ok[:, None] & c_ok[None, :]
    if SPLIT:
        tl.store(out_ptr + out, total, mask=out_ok)
    else:
        if PER_CHANNEL:
            s = tl.load(scale_ptr + offs_co, mask=co_ok, other=0.0)
        else:
            s = tl.load(scale_ptr + offs_co * 0)
        if HAS_SCALE2:
            s = s * tl.load(scale2_ptr + offs_co * 0)
        tl.store(out_ptr + out, total.to(tl.float32) * s[:, None], mask=out_ok)


@triton.jit
def weight_grad_epilogue_kernel(part_ptr, scale_ptr, scale2_ptr, out_ptr, SPLITS, SIZE, PER_CO,
                                PER_CHANNEL: tl.constexpr, HAS_SCALE2: tl.constexpr,
                                BLOCK: tl.constexpr):
    # part: float64 [SPLITS, SIZE] integer-valued sums; scale: float32 [CO] or [] (times
    # scale2, float32 [], if HAS_SCALE2);
    # out: float32 [SIZE] = [CO, PER_CO]. Splits added in a fixed order (deterministic;
    # exact anyway), rounded once to float32, then scaled.
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < SIZE
    total = tl.full((BLOCK, ), 0, tl.float64)
    part = part_ptr + offs
    for _ in range(0, SPLITS):
        total += tl.load(part, mask=ok, other=0.0)
        part += SIZE  # pointer arithmetic: 64-bit
    if PER_CHANNEL:
        s = tl.load(scale_ptr + offs // PER_CO, mask=ok, other=0.0)
    else:
        s = tl.load(scale_ptr + offs * 0)
    if HAS_SCALE2:
        s = s * tl.load(scale2_ptr + offs * 0)
    tl.store(out_ptr + offs, total.to(tl.float32) * s, mask=ok)
