"""Per-channel clip minimising the MCS objective on each channel's gradient histogram.

The paper's objective (see :mod:`.clipping`) with its error model, evaluated on the empirical
distribution of the channel instead of an assumed shape::

    E(s) = sum_b n_b * w(x_b) * err(x_b, s),   w(x) = exp(alpha * (x - 1)),  x = |g| / |g|max
    err(x, s) = step / 4            for x <= s  (mean |rounding error| of a uniform step)
              = (x - s) + step / 4  for x >  s  (saturated at the clip)
    step = s / Q

``n_b`` counts the channel's values in bin b of ``|g| / |g|max`` and ``x_b`` is their mean, so
one pass over the data builds everything the minimisation needs; the candidates are ``s =
j / J * |g|max``. Ties keep the larger clip, so for a bell-shaped channel (or a large
``alpha``) the result is the abs-max, as the paper derives. This is mmdaq's own rule
(``long_tail_rule='objective'`` of the DAQ scheme); the paper's own is the iterative update
of :func:`.clipping.magnitude_aware_clip`.
"""
import torch
from torch import Tensor

from .distribution import _check_channel_major
from .quantize import abs_max, max_code


def channel_histograms(g_cm: Tensor, num_bins: int) -> tuple:
    """Counts and mean value of ``|g| / |g|max`` per bin, per channel.

    Args:
        g_cm (Tensor[C, M]): Channel-major data.
        num_bins (int): Bins over [0, 1].

    Returns:
        tuple: counts (Tensor[C, B], float32), means (Tensor[C, B], float32; bin centre where
        empty) and the abs-max (Tensor[C], float32).
    """
    g_max = abs_max(g_cm, dim=0)  # [C]
    norm = torch.where(g_max > 0, g_max, torch.ones_like(g_max))
    rel = (g_cm.float().abs() / norm[:, None]).nan_to_num_(0.0).clamp_(0.0, 1.0)  # [C, M]
    idx = (rel * num_bins).long().clamp_(max=num_bins - 1)  # [C, M]
    counts = torch.zeros(g_cm.shape[0], num_bins, device=g_cm.device)
    sums = torch.zeros_like(counts)
    counts.scatter_add_(1, idx, torch.ones_like(rel))
    sums.scatter_add_(1, idx, rel)
    centres = (torch.arange(num_bins, device=g_cm.device) + 0.5) / num_bins  # [B]
    means = torch.where(counts > 0, sums / counts.clamp_min(1.0), centres)
    return counts, means, g_max


def histogram_objective_clip(g_cm: Tensor, alpha: float = 3.0, num_bins: int = 64,
                             num_candidates: int = 32, num_bits: int = 8) -> Tensor:
    """Clip per channel minimising the magnitude-weighted error on its histogram.

    Args:
        g_cm (Tensor[C, M], float32/float16/bfloat16): Channel-major gradient.
        alpha (float): Magnitude weight exponent (scale-free, as in
            :func:`.clipping.magnitude_weighted_error`). Defaults to 3.0.
        num_bins (int): Histogram bins. Defaults to 64.
        num_candidates (int): Candidate clips ``j / J * |g|max``, j = 1..J. Defaults to 32.
        num_bits (int): Bit width. Defaults to 8.

    Returns:
        Tensor[C], float32: Clip per channel; 0 for all-zero channels, NaN where the channel
        holds NaN/Inf.
    """
    g_cm = _check_channel_major(g_cm)
    if not alpha >= 0:
        raise ValueError(f'alpha must be >= 0, but got {alpha!r}')
    q = max_code(num_bits)
    counts, means, g_max = channel_histograms(g_cm, num_bins)  # [C, B], [C, B], [C]
    weight = counts * torch.exp(alpha * (means - 1.0))  # [C, B]
    u = torch.arange(1, num_candidates + 1, device=g_cm.device) / num_candidates  # [J]
    over = (means[:, None, :] - u[None, :, None]).clamp_min(0.0)  # [C, J, B]
    err = over + (u / (4 * q))[None, :, None]  # [C, J, B]
    energy = (err * weight[:, None, :]).sum(dim=2)  # [C, J]
    # argmin with ties to the largest candidate: search the reversed order.
    best = num_candidates - 1 - energy.flip(1).argmin(dim=1)  # [C]
    clip = u[best] * g_max
    return torch.where(torch.isfinite(g_max), clip, torch.full_like(clip, float('nan')))
