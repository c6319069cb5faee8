"""Per-channel clip minimising the MCS objective on each channel's own gradient values.

The paper's objective (see :mod:`.clipping`) with its error model, evaluated on the empirical
distribution of the channel instead of an assumed shape. With ``x = |g| / |g|max`` (so the
clip is a ratio ``u`` of the abs-max), ``w(x) = exp(alpha * (x - 1))`` and ``Q`` the largest
code::

    E(u) = sum_{x_i > u} w_i (x_i - u)           clipping: a saturated value lands on u exactly
         + u / (4 Q) * sum_{x_i <= u} w_i         rounding: mean |error| of a uniform step u/Q

except that values at the clip itself are exact (code Q): at ``u = 1`` the abs-max value(s) are
left out of the rounding term. Without that, the model would always prefer a clip a hair below
the abs-max, whose only cost is the clipping of those very values.

One pass over the data scatters ``w_i`` and ``w_i * x_i`` into ``num_bins`` bins of ``x``; the
candidates are the bin edges ``u = j / num_bins``, so both sums over ``x_i > u`` are suffix
sums of whole bins and every candidate's ``E`` is exact under this error model, for the cost
of a cumulative sum (no per-candidate pass over the data). Ties keep the larger clip, so a
bell-shaped channel (or a large ``alpha``) gets the abs-max, as the paper derives.

This is mmdaq's rule ``long_tail_rule='objective'`` of the DAQ scheme (its default, chosen by
measurement: see ``docs/quantization.md``); the paper's own rule is the iterative update of
:func:`.clipping.magnitude_aware_clip` (``long_tail_rule='ema'``).
"""
from typing import Tuple

import torch
from torch import Tensor

from .distribution import _check_channel_major
from .quantize import abs_max, max_code


def channel_histograms(g_cm: Tensor, num_bins: int,
                       alpha: float = 0.0) -> Tuple[Tensor, Tensor, Tensor]:
    """Weighted histograms of ``x = |g| / |g|max`` per channel.

    Each bin's weight is its count times ``w(mean x of the bin)``: within a bin of width
    ``1 / num_bins`` the weight varies by a factor ``exp(alpha / num_bins)`` at most, and one
    exponential per bin instead of per value keeps this at two histogram passes.

    Args:
        g_cm (Tensor[C, M]): Channel-major data.
        num_bins (int): Bins over [0, 1]; bin b holds ``b / B <= x < (b + 1) / B`` (x = 1 in
            the last).
        alpha (float): Weight exponent of ``w(x) = exp(alpha * (x - 1))``; 0 counts values.
            Defaults to 0.

    Returns:
        tuple: ``weights`` (Tensor[C, B], float64: weight of each bin), ``moments``
        (Tensor[C, B], float64: weight times mean x of each bin) and the abs-max (Tensor[C],
        float32). NaN/Inf values are counted as 0 (the caller marks such channels).
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f'num_bins must be an int >= 1, but got {num_bins!r}')
    channels = g_cm.shape[0]
    g_max = abs_max(g_cm, dim=0)  # [C]
    norm = torch.where(g_max > 0, g_max, torch.ones_like(g_max))
    x = g_cm.float().abs().div_(norm[:, None])  # [C, M], in [0, 1] where finite
    if not bool(torch.isfinite(g_max).all()):
        x = x.nan_to_num_(0.0, 0.0, 0.0).clamp_(0.0, 1.0)
    idx = x.mul(num_bins).long().clamp_(max=num_bins - 1)  # [C, M]
    idx += torch.arange(0, channels * num_bins, num_bins, device=g_cm.device)[:, None]
    # One flat bincount per statistic: every channel owns num_bins consecutive slots.
    counts = torch.bincount(idx.reshape(-1), minlength=channels * num_bins).view(channels, -1)
    sums = torch.bincount(idx.reshape(-1), weights=x.reshape(-1).double(),
                          minlength=channels * num_bins).view(channels, -1)
    counts = counts.double()
    means = sums / counts.clamp_min(1.0)  # [C, B]
    weights = counts * torch.exp(alpha * (means - 1.0))
    return weights, weights * means, g_max


def objective_curve(g_cm: Tensor, alpha: float = 3.0, num_bins: int = 1024,
                    num_bits: int = 8) -> Tuple[Tensor, Tensor]:
    """The MCS objective of every candidate clip ratio ``u = j / num_bins``, j = 1..B.

    Args:
        g_cm (Tensor[C, M], float32/float16/bfloat16): Channel-major gradient.
        alpha (float): Magnitude weight exponent, ``>= 0``. Defaults to 3.0.
        num_bins (int): Histogram bins = candidates. Defaults to 1024.
        num_bits (int): Bit width. Defaults to 8.

    Returns:
        tuple: ``ratios`` (Tensor[B], float64, ascending, the last is 1 = abs-max) and
        ``energy`` (Tensor[C, B], float64: ``E(u)`` per channel, in units of ``|g|max``,
        normalised by the channel's element count).
    """
    g_cm = _check_channel_major(g_cm)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise ValueError(f'alpha must be a finite number >= 0, but got {alpha!r}')
    q = max_code(num_bits)
    weights, moments, _ = channel_histograms(g_cm, num_bins, alpha)  # [C, B] x2
    # Suffix sums from bin j on: the values with x >= j / B, i.e. those a clip u = j / B cuts.
    tail_w = weights.flip(1).cumsum(1).flip(1)  # [C, B]
    tail_wx = moments.flip(1).cumsum(1).flip(1)
    ratios = torch.arange(1, num_bins + 1, dtype=torch.float64, device=g_cm.device) / num_bins
    zero = torch.zeros_like(tail_w[:, :1])
    above_w = torch.cat([tail_w[:, 1:], zero], dim=1)  # [C, B]: values beyond candidate j
    above_wx = torch.cat([tail_wx[:, 1:], zero], dim=1)
    total = tail_w[:, :1]  # [C, 1]
    rounded = total - above_w  # [C, B]: weight of the values inside the clip
    rounded[:, -1] -= 1.0  # the abs-max value is exact at u = 1 (w(1) = 1; ties are rare)
    energy = above_wx - ratios * above_w + ratios / (4 * q) * rounded.clamp_min(0.0)
    return ratios, energy / max(g_cm.shape[1], 1)


def histogram_objective_clip(g_cm: Tensor, alpha: float = 3.0, num_bins: int = 1024,
                             num_bits: int = 8) -> Tensor:
    """Clip per channel minimising the magnitude-weighted error (see the module docstring).

    Args:
        g_cm (Tensor[C, M], float32/float16/bfloat16): Channel-major gradient.
        alpha (float): Magnitude weight exponent (scale-free, as in
            :func:`.clipping.magnitude_weighted_error`). Defaults to 3.0.
        num_bins (int): Histogram bins; the clip resolution is ``|g|max / num_bins``.
            Defaults to 1024.
        num_bits (int): Bit width. Defaults to 8.

    Returns:
        Tensor[C], float32: Clip per channel; 0 for all-zero channels, NaN where the channel
        holds NaN/Inf.
    """
    ratios, energy = objective_curve(g_cm, alpha, num_bins, num_bits)  # [B], [C, B]
    best = num_bins - 1 - energy.flip(1).argmin(dim=1)  # argmin, ties to the larger clip
    g_max = abs_max(g_cm, dim=0)
    clip = ratios[best].float() * g_max
    return torch.where(torch.isfinite(g_max), clip, torch.full_like(clip, float('nan')))
