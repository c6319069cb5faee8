"""Per-channel clip minimising the MCS objective on each channel's own gradient values.

The paper's objective (see :mod:`.clipping`) with its error model, evaluated on the empirical
distribution of the channel instead of an assumed shape. With ``x = |g| / |g|max`` (so the
clip is a ratio ``u`` of the abs-max), ``w(x) = exp(alpha * (x - 1))`` and ``Q`` the largest
code::

    E(u) = sum_{x_i > u} w_i (x_i - u)           clipping: a saturated value lands on u exactly
         + u / (4 Q) * sum_{0 < x_i <= u} w_i     rounding: mean |error| of a uniform step u/Q

Two kinds of values inside the clip are exact and are left out of the rounding term:

* exact zeros (``g == 0``): code 0 at any clip. G_Y after a ReLU is mostly exact zeros (often
  50-90% of a channel); charging each a quarter step would make every large clip look
  expensive in proportion to the sparsity and clip sparse channels far too hard (Laplace with
  80% zeros: the model put the error at u = 0.2 at 6.5x that of the abs-max, the measured
  ratio is 24x). Their number comes from :func:`.distribution.channel_zero_counts` (the
  compiled kernel counts them in its first pass) and is taken out of bin 0, whose weight and
  mean are then those of its nonzero values;
* the values at the clip itself (code Q): at ``u = 1`` the abs-max value(s). Without that, the
  model would always prefer a clip a hair below the abs-max, whose only cost is the clipping
  of those very values.

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

from ..kernels import grad_channel_stats, grad_channel_stats_applies
from .distribution import (_as_float32, _check_channel_major, channel_histograms,
                           channel_zero_counts, gradient_statistics_reference)
from .quantize import max_code


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
    counts, sums, _ = channel_histograms(g_cm, num_bins)
    return objective_curve_from_histograms(counts, sums, alpha, num_bits,
                                           zero_count=channel_zero_counts(g_cm))


def objective_curve_from_histograms(counts: Tensor, sums: Tensor, alpha: float = 3.0,
                                    num_bits: int = 8, *,
                                    zero_count: Tensor) -> Tuple[Tensor, Tensor]:
    """:func:`objective_curve` from :func:`~.distribution.channel_histograms` output.

    Each bin's weight is its count times ``w(mean x of the bin)``: within a bin of width
    ``1 / B`` the weight varies by a factor ``exp(alpha / B)`` at most. The exact zeros, all in
    bin 0 and exact at any clip, are taken out of bin 0 first (its count less ``zero_count``;
    its sum is unchanged, zeros add nothing to it), so they weigh nothing in the rounding term.

    Args:
        counts, sums (Tensor[C, B], float64): Count and sum of ``x`` per bin.
        alpha (float): Magnitude weight exponent, ``>= 0``. Defaults to 3.0.
        num_bits (int): Bit width. Defaults to 8.
        zero_count (Tensor[C], int64 or float64): Exact zeros per channel (keyword-only,
            required: see :func:`~.distribution.channel_zero_counts`; ``GradientStats`` and the
            compiled kernel return it). Pass zeros to charge every value as before.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise ValueError(f'alpha must be a finite number >= 0, but got {alpha!r}')
    if zero_count.shape != counts.shape[:1]:
        raise ValueError(f'zero_count must have shape [C] = {list(counts.shape[:1])}, but got '
                         f'{list(zero_count.shape)}')
    q = max_code(num_bits)
    num_bins = counts.shape[1]
    # Bin 0 without the exact zeros (at most all of it: a non-finite channel's histogram is
    # unspecified, its clip NaN anyway).
    counts = counts.clone()
    counts[:, 0] = (counts[:, 0] - zero_count.to(counts.dtype)).clamp_min(0.0)
    means = sums / counts.clamp_min(1.0)  # [C, B]
    weights = counts * torch.exp(alpha * (means - 1.0))
    moments = weights * means
    # Suffix sums from bin j on: the values with x >= j / B, i.e. those a clip u = j / B cuts.
    tail_w = weights.flip(1).cumsum(1).flip(1)  # [C, B]
    tail_wx = moments.flip(1).cumsum(1).flip(1)
    ratios = torch.arange(1, num_bins + 1, dtype=torch.float64, device=counts.device) / num_bins
    zero = torch.zeros_like(tail_w[:, :1])
    above_w = torch.cat([tail_w[:, 1:], zero], dim=1)  # [C, B]: values beyond candidate j
    above_wx = torch.cat([tail_wx[:, 1:], zero], dim=1)
    rounded = tail_w[:, :1] - above_w  # [C, B]: weight of the values inside the clip
    rounded[:, -1] -= 1.0  # the abs-max value is exact at u = 1 (w(1) = 1; ties are rare)
    energy = above_wx - ratios * above_w + ratios / (4 * q) * rounded.clamp_min(0.0)
    total = counts.sum(1, keepdim=True) + zero_count.to(counts.dtype)[:, None]  # all values
    return ratios, energy / total.clamp_min(1.0)


def clip_from_histograms(counts: Tensor, sums: Tensor, g_max: Tensor, alpha: float = 3.0,
                         num_bits: int = 8, *, zero_count: Tensor) -> Tensor:
    """Clip per channel minimising the objective, from the channel histograms.

    Args:
        counts, sums (Tensor[C, B], float64): Count and sum of ``x = |g| / g_max`` per bin.
        g_max (Tensor[C], float32): Abs-max per channel.
        alpha (float): Magnitude weight exponent. Defaults to 3.0.
        num_bits (int): Bit width. Defaults to 8.
        zero_count (Tensor[C]): Exact zeros per channel (keyword-only, required), see
            :func:`objective_curve_from_histograms`.

    Returns:
        Tensor[C], float32: Clip per channel; 0 for all-zero channels, NaN where ``g_max`` is
        not finite. Ties keep the larger clip.
    """
    ratios, energy = objective_curve_from_histograms(counts, sums, alpha, num_bits,
                                                     zero_count=zero_count)
    best = counts.shape[1] - 1 - energy.flip(1).argmin(dim=1)  # argmin, ties to the larger clip
    clip = ratios[best].float() * g_max
    return torch.where(torch.isfinite(g_max), clip, torch.full_like(clip, float('nan')))


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
    g_cm = _check_channel_major(g_cm)
    counts, sums, g_max = channel_histograms(g_cm, num_bins)
    return clip_from_histograms(counts, sums, g_max, alpha, num_bits,
                                zero_count=channel_zero_counts(g_cm))


def objective_clip(g: Tensor, dim: int, alpha: float = 3.0, num_bins: int = 1024,
                   num_bits: int = 8) -> Tuple[Tensor, Tensor, Tensor]:
    """Abs-max, ``P(|g| > sigma)`` and the objective clip of every channel of ``g``.

    One compiled kernel (``mmdaq::grad_channel_stats``, CPU or CUDA) when built, reading G_Y in
    place; else the eager reference (channel-major copy, :func:`clip_from_histograms`). Both
    search the same candidates with the same arithmetic; they can differ only where two
    candidates' objectives tie to rounding (tested).

    Args:
        g (Tensor[...], float32/float16/bfloat16): e.g. G_Y as Tensor[N, C_out, *S].
        dim (int): Channel dimension.
        alpha (float): Magnitude weight exponent. Defaults to 3.0.
        num_bins (int): Histogram bins = candidate clips. Defaults to 1024.
        num_bits (int): Bit width. Defaults to 8.

    Returns:
        tuple: ``abs_max``, ``frac_above_sigma`` and ``clip`` (Tensor[C], float32; the clip is
        NaN where the channel is not finite, 0 for all-zero channels).
    """
    g = _as_float32(g, 'g')
    q = max_code(num_bits)
    if grad_channel_stats_applies(g, num_bins):
        g_max, _, frac, ratio, _, _, _ = grad_channel_stats(
            g, dim, num_bins, float(alpha), q, False)
        clip = ratio * g_max
        clip = torch.where(torch.isfinite(g_max), clip, torch.full_like(clip, float('nan')))
        return g_max, frac, clip
    stats = gradient_statistics_reference(g, dim, num_bins)
    clip = clip_from_histograms(stats.hist_count, stats.hist_sum, stats.abs_max, alpha, num_bits,
                                zero_count=stats.zero_count)
    return stats.abs_max, stats.frac_above_sigma, clip
