"""``mmdaq::grad_channel_stats``: DAQ's per-channel gradient statistics, compiled kernel.

The plain-PyTorch reference is the quantization math itself,
:func:`mmdaq.quantization.distribution.gradient_statistics_reference` (and, for the clip
ratio, :func:`mmdaq.quantization.histogram_clip.clip_from_histograms`), which
:func:`mmdaq.quantization.distribution.gradient_statistics` falls back to where
:func:`grad_channel_stats_applies` says no.
"""
from typing import Tuple

import torch
from torch import Tensor

from .extension import compiled_op_available, register_fake_if_built, require_extension

Stats = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]

#: Most histogram bins the CUDA kernel keeps in shared memory.
CUDA_MAX_BINS = 4096


@register_fake_if_built('mmdaq::grad_channel_stats')
def _grad_channel_stats_fake(g: Tensor, dim: int, num_bins: int, alpha: float, max_code: int,
                             return_hist: bool) -> Stats:
    torch._check(g.dtype == torch.float32,
                 lambda: f'grad_channel_stats: g must be float32, but got {g.dtype}')
    torch._check(-g.dim() <= dim < g.dim(),
                 lambda: f'grad_channel_stats: dim must be in [{-g.dim()}, {g.dim()}), but got '
                 f'{dim}')
    channels = g.shape[dim]
    per_channel = [g.new_empty(channels) for _ in range(4)]
    bins = num_bins if return_hist else 0
    hist = [g.new_empty(channels, bins, dtype=torch.float64) for _ in range(2)]
    zero_count = g.new_empty(channels, dtype=torch.int64)
    return tuple(per_channel + hist + [zero_count])


def grad_channel_stats(g: Tensor, dim: int, num_bins: int = 0, alpha: float = 3.0,
                       max_code: int = 127, return_hist: bool = True) -> Stats:
    """Per-channel statistics of G_Y and DAQ's objective clip, in one kernel.

    Args:
        g (Tensor[...], float32, CPU): e.g. G_Y as Tensor[N, C, *S].
        dim (int): Channel dimension.
        num_bins (int): Histogram bins over [0, 1]; 0 for none. Defaults to 0.
        alpha (float): Magnitude weight exponent of the objective. Defaults to 3.0.
        max_code (int): Largest code (127 for 8 bits). Defaults to 127.
        return_hist (bool): Return the histograms (else they are [C, 0]). Defaults to True.

    Returns:
        tuple: abs_max, sigma, frac_above, clip_ratio (Tensor[C], float32: the clip
        minimising the objective over the bin edges, divided by the abs-max; 1 without bins),
        hist_count, hist_sum (Tensor[C, num_bins], float64) and zero_count (Tensor[C], int64:
        the exact zeros of each channel, always computed; the objective leaves them out of its
        rounding term, see :mod:`mmdaq.quantization.histogram_clip`).
    """
    require_extension('grad_channel_stats')
    return torch.ops.mmdaq.grad_channel_stats(g, dim, num_bins, alpha, max_code, return_hist)


def grad_channel_stats_applies(g: Tensor, num_bins: int) -> bool:
    """Whether :func:`grad_channel_stats` is built for ``g``'s device and takes ``num_bins``."""
    return g.dim() > 0 and compiled_op_available('grad_channel_stats', g.device) and (
        g.device.type != 'cuda' or num_bins <= CUDA_MAX_BINS)
