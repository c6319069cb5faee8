"""The DAQ backward's G_Y pass in three Triton launches, without a host sync.

The backward of a DAQ layer analyses G_Y (float32 [N, C_out, *S]) per output channel and
quantizes it twice: per channel for the weight-gradient GEMM (clip from the magnitude-aware
rule, ``DAQScheme(long_tail_rule='objective')``) and per tensor for the input-gradient GEMM
(abs-max clip). :func:`daq_grad_codes_triton` does all of it, with several programs per channel
(the compiled ``mmdaq::grad_channel_stats`` runs one block per channel):

1. partial statistics of each (channel, split of its N*prod(S) values);
2. the channel's histogram of ``x = |g| / |g|max`` and ``P(|g| > sigma)``; the last program of
   each channel block computes the clip and the scales (and the per-tensor scale, once all
   channels are done), and resets the workspace;
3. both int8 copies from one read of G_Y, written channels last (the GEMMs read G_Y as
   [N*prod(S), C_out] rows).

The kernels are in :mod:`.triton_grad_stats_kernels`. The results are those of
``DAQScheme().quantize_grads(g, dim=1)`` on a first call (the clip of every update,
``clip_interval=1``), with the same arithmetic: the abs-max and zero counts are exact; sums of
float64 values (sigma, the histogram sums, the objective) are added in another order, which
can move a clip only where two candidate clips tie to rounding. ``TRITON_INTERPRET=1`` runs
the kernels on CPU tensors (slowly), as the tests do.
"""
import math
import os
from typing import Dict, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ..quantization.distribution import check_threshold
from ..quantization.quantize import max_code
from ..quantization.schemes import FusedClipState
from . import triton_grad_stats_kernels as kernels
from .triton_launch import launch
from .triton_quantize import FLOAT_DTYPES

try:
    import triton
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

#: Most values of the per-split partials one histogram program adds up (BLOCK_C * splits).
_MAX_PARTIALS = 4096


class GradCodes(NamedTuple):
    """The two int8 copies of G_Y and the per-channel results of the DAQ backward's G_Y pass.

    Attributes:
        g_q_w (Tensor[N, C, *S], int8): Codes for the weight gradient, scale per channel;
            channels last (``torch.channels_last`` for 4-D; ``[M, C]`` contiguous for 2-D).
        s_w (Tensor[C], float32): Their scales, ``clip / Q`` (0 for an all-zero channel, NaN
            where the channel is not finite).
        g_q_x (Tensor[N, C, *S], int8): Codes for the input gradient, one scale; channels last.
        s_x (Tensor[], float32): Its scale, ``abs-max(G_Y) / Q`` (NaN if G_Y is not finite).
        g_max (Tensor[C], float32): Abs-max per channel (NaN or Inf where not finite).
        frac_above_sigma (Tensor[C], float32): ``P(|g| > sigma)`` per channel.
        clip (Tensor[C], float32): The clip of the per-channel copy.
        grad_bias (Tensor[C], float32): ``G_Y`` summed over all but the channel dim.

    Note:
        The float32 results are views of one buffer the kernels write (``s_x`` a 0-d one).
    """
    g_q_w: Tensor
    s_w: Tensor
    g_q_x: Tensor
    s_x: Tensor
    g_max: Tensor
    frac_above_sigma: Tensor
    clip: Tensor
    grad_bias: Tensor


class GradStats(NamedTuple):
    """What :func:`~mmdaq.quantization.distribution.gradient_statistics_reference` returns
    besides the abs-max and ``P(|g| > sigma)``, for tests and diagnostics.

    Attributes:
        sigma (Tensor[C], float32): RMS per channel.
        hist_count, hist_sum (Tensor[C, B], float64): Histogram of ``x = |g| / |g|max``.
        zero_count (Tensor[C], int64): Exact zeros per channel.
    """
    sigma: Tensor
    hist_count: Tensor
    hist_sum: Tensor
    zero_count: Tensor


class GradStatsWorkspace(NamedTuple):
    """Buffers the kernels add into, zero between calls (each call resets what it used).

    Attributes:
        hist_count (Tensor[C * B], int32), hist_sum (Tensor[C * B], float64): Histograms.
        above (Tensor[C], int32): Counts of ``|g| > sigma``.
        counters (Tensor[C + 2], int32): Programs done per channel block, channel blocks
            done, the bits of the tensor abs-max.
    """
    hist_count: Tensor
    hist_sum: Tensor
    above: Tensor
    counters: Tensor


_WORKSPACES: Dict[Tuple[torch.device, int, int], GradStatsWorkspace] = {}


def grad_stats_workspace(device: torch.device, channels: int,
                         num_bins: int) -> GradStatsWorkspace:
    """The workspace for ``channels`` channels and ``num_bins`` bins on ``device``, created
    (zeroed) on first use and cached.

    Calls that share a workspace must not run concurrently (one CUDA stream, as a backward).
    """
    key = (torch.device(device), channels, num_bins)
    if key not in _WORKSPACES:
        _WORKSPACES[key] = GradStatsWorkspace(
            torch.zeros(channels * num_bins, dtype=torch.int32, device=device),
            torch.zeros(channels * num_bins, dtype=torch.float64, device=device),
            torch.zeros(channels, dtype=torch.int32, device=device),
            torch.zeros(channels + 2, dtype=torch.int32, device=device))
    return _WORKSPACES[key]


def grad_num_bins(num_bins: int, values: int) -> int:
    """Bins of the objective for ``values`` values per channel: ``DAQScheme``'s rule (fewer
    bins than values only add work; resolution 1/64 at least)."""
    return min(num_bins, max(64, values))


def daq_grad_codes_triton(g: Tensor, *, num_bins: int = 1024, alpha: float = 3.0,
                          num_bits: int = 8, threshold: Optional[float] = 0.3,
                          splits: Optional[int] = None,
                          workspace: Optional[GradStatsWorkspace] = None,
                          clip_state: Optional[FusedClipState] = None) -> GradCodes:
    """DAQ's G_Y pass: per-channel statistics and clip, both int8 copies, the bias gradient.

    Three kernel launches, no host sync; the results stay on the device.

    Args:
        g (Tensor[N, C, *S] or Tensor[M, C], float32/float16/bfloat16): G_Y, on CUDA (or on
            CPU under ``TRITON_INTERPRET=1``); contiguous or channels last, else copied.
        num_bins (int): Histogram bins of the objective, at most; ``DAQScheme``'s rule
            ``min(num_bins, max(64, values per channel))`` applies. Defaults to 1024.
        alpha (float): Magnitude weight exponent of the objective. Defaults to 3.0.
        num_bits (int): Bits of both copies, 2 to 8. Defaults to 8.
        threshold (float, optional): lambda of the distribution test: a channel with
            ``P(|g| > sigma) > threshold`` keeps its abs-max as clip; None: every channel
            keeps its abs-max (per-channel abs-max, no clipping). Defaults to 0.3.
        splits (int, optional): Programs per channel block (at most); None picks enough to
            fill the GPU. Defaults to None.
        workspace (GradStatsWorkspace, optional): See :func:`grad_stats_workspace` (for
            ``C`` channels and the bins the rule gives). Defaults to None (the cached one).
        clip_state (FusedClipState, optional): DAQ's clip state of the layer
            (:meth:`~mmdaq.quantization.schemes.DAQScheme.fused_clip_state`), updated in place
            by the last launch, as ``DAQScheme`` updates it (needs a ``threshold``). Defaults
            to None.

    Returns:
        GradCodes: Codes, scales and per-channel results (see its attributes).
    """
    return _grad_pass(g, num_bins, alpha, num_bits, threshold, splits, workspace, False,
                      clip_state)[0]


def daq_grad_codes_and_stats_triton(g: Tensor, *, num_bins: int = 1024, alpha: float = 3.0,
                                    num_bits: int = 8, threshold: Optional[float] = 0.3,
                                    splits: Optional[int] = None,
                                    workspace: Optional[GradStatsWorkspace] = None
                                    ) -> Tuple[GradCodes, GradStats]:
    """:func:`daq_grad_codes_triton` and the statistics behind its clips (histograms, sigma,
    zero counts; all-zero and non-finite channels as the reference gives them, except that
    the histogram of a non-finite channel is left empty: the reference's is unspecified)."""
    return _grad_pass(g, num_bins, alpha, num_bits, threshold, splits, workspace, True, None)


def _grad_pass(g: Tensor, num_bins: int, alpha: float, num_bits: int, threshold: Optional[float],
               splits: Optional[int], workspace: Optional[GradStatsWorkspace],
               keep_stats: bool, clip_state: Optional[FusedClipState]
               ) -> Tuple[GradCodes, Optional[GradStats]]:
    q = _check_args(g, num_bins, alpha, num_bits, threshold, splits)
    g, inner = _channel_layout(g.float())
    channels = g.shape[1]
    _check_clip_state(clip_state, channels, g.device, threshold)
    m = g.numel() // max(channels, 1)  # values per channel
    bins = grad_num_bins(num_bins, m)
    device = g.device
    stats = torch.empty(5 * channels + 1, dtype=torch.float32, device=device)
    keep = torch.zeros(2 * channels * bins + 2 * channels, dtype=torch.float64,
                       device=device) if keep_stats else stats
    q_w, q_x = _channels_last_codes(g.shape, device), _channels_last_codes(g.shape, device)
    if channels and m:
        ws = _workspace(workspace, device, channels, bins)
        block_c, block_j = _stats_blocks(channels, m, inner == 1)
        blocks = triton.cdiv(channels, block_c)
        per_split = triton.cdiv(m, _split_count(device, blocks, m, block_c, block_j, splits))
        splits = triton.cdiv(m, per_split)
        part = torch.empty(4 * channels * splits, dtype=torch.float64, device=device)
        launch(kernels._grad_partials_kernel, (blocks, splits), g, part, channels, inner, m,
               per_split, splits, CHANNELS_INNER=inner == 1, BLOCK_C=block_c, BLOCK_J=block_j)
        # threshold None: -1 < every finite P(|g| > sigma), so every channel keeps its abs-max
        lam = -1.0 if threshold is None else float(threshold)
        launch(kernels._grad_histogram_kernel, (blocks, splits), g, part, *ws, stats, keep,
               channels, inner, m, per_split, splits, bins, float(alpha), lam,
               Q=q, CHANNELS_INNER=inner == 1, SPLITS_P2=triton.next_power_of_2(splits),
               BLOCK_C=block_c, BLOCK_J=block_j,
               BLOCK_B=max(16, min(triton.next_power_of_2(bins), 1024 // block_c)),
               KEEP_STATS=keep_stats, enable_fp_fusion=False)  # roundings as the reference
        code_c = min(32, triton.next_power_of_2(channels))
        code_j = max(16, min(triton.next_power_of_2(m), 2048 // code_c))
        keep_state = clip_state is not None
        state = (clip_state.prev_clip, clip_state.clip_ratio, clip_state.is_gaussian) \
            if keep_state else (stats, stats, stats)
        launch(kernels._grad_codes_kernel, (triton.cdiv(m, code_j), triton.cdiv(channels, code_c)),
               g, stats, q_w, q_x, *state, channels, inner, m, lam, Q=q,
               CHANNELS_INNER=inner == 1, KEEP_STATE=keep_state,
               HAS_HISTORY=keep_state and clip_state.has_history, BLOCK_C=code_c,
               BLOCK_J=code_j, enable_fp_fusion=False)
    else:  # nothing to read: zero statistics and scales
        stats.zero_()  # the clip history stays as it is
        if clip_state is not None:
            clip_state.is_gaussian.zero_()
    rows = stats[:5 * channels].view(5, channels)  # [5 * C + 1] -> [5, C] (+ s_x)
    codes = GradCodes(q_w, rows[3], q_x, stats[5 * channels], rows[0], rows[1], rows[2],
                      rows[4])
    if not keep_stats:
        return codes, None
    hist = keep[:2 * channels * bins].view(2, channels, bins)  # [2 * C * B] -> [2, C, B]
    tail = keep[2 * channels * bins:].view(2, channels)  # sigma, zero counts
    return codes, GradStats(tail[0].float(), hist[0], hist[1], tail[1].long())


def _check_args(g: Tensor, num_bins: int, alpha: float, num_bits: int,
                threshold: Optional[float],
                splits: Optional[int]) -> int:
    """Validate the options; returns the largest code Q."""
    if triton is None:
        raise RuntimeError('daq_grad_codes_triton needs triton, but it is not installed; use '
                           'DAQScheme.quantize_grads instead')
    if not isinstance(g, Tensor) or g.dtype not in FLOAT_DTYPES or g.dim() < 2:
        got = f'{g.dtype} {g.dim()}-d tensor' if isinstance(g, Tensor) else type(g).__name__
        raise TypeError(f'g must be a float32, float16 or bfloat16 tensor [N, C, *S] or [M, C], '
                        f'but got {got}')
    if g.device.type != 'cuda' and os.environ.get('TRITON_INTERPRET') != '1':
        raise ValueError(f'g must be a CUDA tensor (CPU tensors run in Triton\'s interpreter, '
                         f'TRITON_INTERPRET=1), but got one on {g.device}')
    for name, value in (('num_bins', num_bins), ('splits', splits)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f'{name} must be an int >= 1, but got {value!r}')
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
            or not 0 <= alpha < float('inf'):
        raise ValueError(f'alpha must be a finite number >= 0, but got {alpha!r}')
    if threshold is not None:
        check_threshold(threshold)
    return max_code(num_bits)


def _check_clip_state(state: Optional[FusedClipState], channels: int, device: torch.device,
                      threshold: Optional[float]) -> None:
    if state is None:
        return
    if threshold is None:
        raise ValueError('clip_state is DAQ\'s state: it needs a threshold, but got None')
    for name, dtype in (('prev_clip', torch.float32), ('clip_ratio', torch.float32),
                        ('is_gaussian', torch.bool)):
        t = getattr(state, name)
        if t.shape != (channels, ) or t.dtype != dtype or t.device != device \
                or not t.is_contiguous():
            raise ValueError(f'clip_state.{name} must be a contiguous {dtype} tensor '
                             f'[{channels}] on {device}, but got {t.dtype} '
                             f'{tuple(t.shape)} on {t.device}')


def _channel_layout(g: Tensor) -> Tuple[Tensor, int]:
    """G_Y as the memory of an [outer, C, inner] array and its ``inner``: 1 when the channels
    are innermost (channels last, or 2-D), else ``prod(S)`` of a contiguous copy."""
    if g.movedim(1, -1).is_contiguous():
        return g, 1
    g = g.contiguous()
    return g, math.prod(g.shape[2:])


def _channels_last_codes(shape: torch.Size, device: torch.device) -> Tensor:
    """An empty int8 tensor of ``shape`` [N, C, *S] whose memory is [N, *S, C]."""
    return torch.empty((shape[0], *shape[2:], shape[1]), dtype=torch.int8,
                       device=device).movedim(-1, 1)  # [N, *S, C] -> [N, C, *S]


def _workspace(workspace: Optional[GradStatsWorkspace], device: torch.device, channels: int,
               bins: int) -> GradStatsWorkspace:
    if workspace is None:
        return grad_stats_workspace(device, channels, bins)
    sizes = (channels * bins, channels * bins, channels, channels + 2)
    if tuple(t.numel() for t in workspace) != sizes or workspace.hist_count.device != device:
        raise ValueError(f'workspace must be grad_stats_workspace({device}, {channels}, {bins}) '
                         f'(sizes {sizes}), but got sizes '
                         f'{tuple(t.numel() for t in workspace)} on {workspace.hist_count.device}')
    return workspace


def _stats_blocks(channels: int, m: int, channels_inner: bool) -> Tuple[int, int]:
    """(BLOCK_C, BLOCK_J) of the statistics kernels: a block of channels where they are the
    contiguous axis, else one channel and a long run of its values."""
    if channels_inner:
        block_c = min(32, triton.next_power_of_2(channels))
        return block_c, max(16, min(triton.next_power_of_2(m), 1024 // block_c))
    return 1, max(16, min(triton.next_power_of_2(m), 1024))


def _split_count(device: torch.device, blocks: int, m: int, block_c: int, block_j: int,
                 requested: Optional[int]) -> int:
    """Programs per channel block: enough for four per SM on CUDA, at least eight tiles of
    values each; ``requested`` if given. At most ``m``, the grid's 65535 and what one program
    adds up (:data:`_MAX_PARTIALS`)."""
    cap = max(1, min(m, 65535, _MAX_PARTIALS // block_c))
    if requested is not None:
        return min(requested, cap)
    if device.type != 'cuda':
        return 1  # the interpreter runs programs one after another
    programs = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton.cdiv(programs, blocks), triton.cdiv(m, 8 * block_j), cap))
