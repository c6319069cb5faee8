"""``mmdaq::grad_channel_stats``: DAQ's per-channel gradient statistics, compiled kernel.

The plain-PyTorch reference is
:func:`mmdaq.quantization.distribution.gradient_statistics_reference`, which
:func:`mmdaq.quantization.distribution.gradient_statistics` falls back to where the kernel
is not built or the tensor is not on the CPU.
"""
from typing import Tuple

import torch
from torch import Tensor

from .extension import register_fake_if_built, require_extension


@register_fake_if_built('mmdaq::grad_channel_stats')
def _grad_channel_stats_fake(g: Tensor, dim: int,
                             num_bins: int) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    torch._check(g.dtype == torch.float32,
                 lambda: f'grad_channel_stats: g must be float32, but got {g.dtype}')
    torch._check(-g.dim() <= dim < g.dim(),
                 lambda: f'grad_channel_stats: dim must be in [{-g.dim()}, {g.dim()}), but got '
                 f'{dim}')
    channels = g.shape[dim]
    per_channel = [g.new_empty(channels) for _ in range(3)]
    hist = [g.new_empty(channels, num_bins, dtype=torch.float64) for _ in range(2)]
    return tuple(per_channel + hist)


def grad_channel_stats(g: Tensor, dim: int,
                       num_bins: int = 0) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Abs-max, RMS sigma, ``P(|g| > sigma)`` and the ``|g| / abs-max`` histogram per channel.

    Args:
        g (Tensor[...], float32, CPU): e.g. G_Y as Tensor[N, C, *S].
        dim (int): Channel dimension.
        num_bins (int): Histogram bins over [0, 1]; 0 for none. Defaults to 0.

    Returns:
        tuple: abs_max, sigma, frac_above (Tensor[C], float32) and hist_count, hist_sum
        (Tensor[C, num_bins], float64).
    """
    require_extension('grad_channel_stats')
    return torch.ops.mmdaq.grad_channel_stats(g, dim, num_bins)
