"""Per-channel gradient statistics and DAQ's bell-shaped / inverted-T classification.

DAQ observes that, per output channel, layer gradients ``G_Y`` follow one of two families: a
bell-shaped (Gaussian-like) one and a sharp, long-tailed one it calls "inverted-T" (a tall spike
at 0 on a low, wide floor). A channel is called Gaussian when ``P(|g| > sigma) > lambda`` with
``lambda = 0.3`` (paper). Reference values: ``P(|g| > sigma) = 0.3173`` for a zero-mean Gaussian,
``exp(-sqrt(2)) = 0.2431`` for a Laplace law, less for sharper or heavier-tailed shapes.

Choice: ``sigma`` is the RMS, ``sqrt(mean(g**2))``, i.e. the population standard deviation about
**zero**, and the test counts ``|g| > sigma`` (not ``|g - mean| > sigma``). Reasons: the quantizer
and the clipping derivation are symmetric about zero (``p(g) = p(-g)``), so the spread that
matters is the one about zero; gradients are close to zero-mean, where RMS and the centred std
coincide; and it saves the mean reduction. For a channel with a large mean ``mu`` the RMS test
sees a narrow bump far from zero (``P(|g| > rms)`` near 0.5), which is correctly "no long tail".

Passes over the data: the abs-max is one reduction; the second moment and the exceedance count
are taken on ``|g| / abs_max``, which lies in ``[0, 1]``, so ``g**2`` cannot overflow for huge
finite gradients (``1e30 ** 2`` would be Inf in float32). A fused kernel can do this in two passes
(abs-max, then moment and count with a running rescale); in eager PyTorch each is one kernel.

Edge cases: an all-zero or empty channel has ``abs_max = sigma = 0`` and ``frac_above_sigma = 0``
(so it is classified inverted-T; its clip is 0 either way). A channel holding NaN/Inf has a
non-finite ``abs_max`` (NaN or Inf), NaN ``sigma`` and ``frac_above_sigma``, and is classified
inverted-T; the clipping rules then give it a NaN clip (see :mod:`mmdaq.quantization.quantize`).
"""
import math
from typing import NamedTuple, Tuple

import torch
from torch import Tensor

from ..kernels import grad_channel_stats, grad_channel_stats_applies
from .quantize import _as_float32, _normalize_dim


class ChannelStats(NamedTuple):
    """Per-channel statistics of a channel-major tensor.

    Attributes:
        abs_max (Tensor[C], float32): ``max |g|``; NaN/Inf where the channel is not finite.
        sigma (Tensor[C], float32): RMS ``sqrt(mean(g**2))``; NaN where not finite.
        frac_above_sigma (Tensor[C], float32): Fraction of elements with ``|g| > sigma``.
    """
    abs_max: Tensor
    sigma: Tensor
    frac_above_sigma: Tensor


class GradientStats(NamedTuple):
    """What DAQ's clipping needs from one gradient, per channel (:func:`gradient_statistics`).

    Attributes:
        abs_max, sigma, frac_above_sigma (Tensor[C], float32): As in :class:`ChannelStats`.
        hist_count, hist_sum (Tensor[C, B], float64): Histogram of ``x = |g| / abs_max`` over
            B bins of [0, 1] (count and sum of x per bin, see :func:`channel_histograms`);
            B = 0 when not asked for. Unspecified for non-finite channels.
        zero_count (Tensor[C], int64): Number of exact zeros (``g == 0``, either sign) per
            channel, see :func:`channel_zero_counts`; always computed. The objective clip
            leaves them out of its rounding term (they quantize exactly at any clip).
    """
    abs_max: Tensor
    sigma: Tensor
    frac_above_sigma: Tensor
    hist_count: Tensor
    hist_sum: Tensor
    zero_count: Tensor


def channel_major(x: Tensor, dim: int) -> Tensor:
    """Move ``dim`` to the front and flatten the rest: one row per channel.

    A view for ``dim == 0`` on contiguous input, a copy otherwise.

    Args:
        x (Tensor[...]): Input of any shape with at least one dimension, e.g. ``G_Y`` as
            Tensor[N, C_out, H, W] with ``dim=1``.
        dim (int): Channel dimension (negative allowed).

    Returns:
        Tensor[C, M]: ``C = x.shape[dim]``, ``M = x.numel() // C`` (1 for 1-D input).

    Examples:
        >>> channel_major(torch.zeros(2, 3, 4, 5), dim=1).shape
        torch.Size([3, 40])
    """
    if not isinstance(x, Tensor) or x.dim() == 0:
        got = f'{x.dim()}-d tensor' if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f'x must be a tensor with at least one dimension, but got {got}')
    dim = _normalize_dim(dim, x.dim())
    num_channels = x.shape[dim]
    num_elements = math.prod(size for d, size in enumerate(x.shape) if d != dim)
    x = x.movedim(dim, 0)  # [.., C, ..] -> [C, ..]
    return x.reshape(num_channels, num_elements)  # [C, ..] -> [C, M]


def channel_statistics(g_cm: Tensor) -> ChannelStats:
    """Abs-max, RMS and ``P(|g| > sigma)`` of every row of a channel-major tensor.

    Args:
        g_cm (Tensor[C, M], float32/float16/bfloat16): Channel-major data, see
            :func:`channel_major`.

    Returns:
        ChannelStats: Three Tensor[C], float32.
    """
    g_cm = _check_channel_major(g_cm)
    num_channels, num_elements = g_cm.shape
    if num_elements == 0:
        zeros = g_cm.new_zeros((num_channels, ))
        return ChannelStats(zeros, zeros.clone(), zeros.clone())
    magnitude = g_cm.abs()  # [C, M]
    abs_max = magnitude.amax(dim=1)  # [C]
    finite = torch.isfinite(abs_max)
    norm = torch.where(finite & (abs_max > 0), abs_max, 1.0)  # [C]; 1 keeps 0 / NaN rows as is
    relative = magnitude / norm[:, None]  # [C, M], in [0, 1] for finite rows
    sigma_rel = relative.square().mean(dim=1).sqrt()  # [C]
    frac = (relative > sigma_rel[:, None]).to(torch.float32).mean(dim=1)  # [C]
    nan = torch.full_like(abs_max, float('nan'))
    sigma = torch.where(finite, sigma_rel * norm, nan)
    frac = torch.where(finite, frac, nan)
    return ChannelStats(abs_max, sigma, frac)


def classify_channels(g_cm: Tensor, threshold: float = 0.3) -> Tensor:
    """DAQ's per-channel test: bell-shaped (True) or inverted-T (False).

    Args:
        g_cm (Tensor[C, M], float32/float16/bfloat16): Channel-major data.
        threshold (float): ``lambda`` in ``[0, 1]``; a channel is bell-shaped when
            ``P(|g| > sigma) > threshold``. Defaults to 0.3 (paper).

    Returns:
        Tensor[C], bool: True for bell-shaped (Gaussian) channels, False for inverted-T ones
        (including all-zero and non-finite channels).
    """
    check_threshold(threshold)
    return channel_statistics(g_cm).frac_above_sigma > threshold


def check_threshold(threshold: float, name: str = 'threshold') -> None:
    """Raise unless ``threshold`` is a real number in ``[0, 1]``."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0.0 <= threshold <= 1.0:
        raise ValueError(f'{name} must be a number in [0, 1], but got {threshold!r}')


def _check_channel_major(g_cm: Tensor) -> Tensor:
    """Check a channel-major tensor and return it as float32 [C, M]."""
    g_cm = _as_float32(g_cm, 'g_cm')
    if g_cm.dim() != 2:
        raise ValueError(f'g_cm must be a 2-d channel-major tensor [C, M], but got shape '
                         f'{list(g_cm.shape)}; use channel_major(x, dim) first')
    return g_cm


def channel_histograms(g_cm: Tensor, num_bins: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Histogram of ``x = |g| / |g|max`` per channel: count and sum of x in each bin.

    Args:
        g_cm (Tensor[C, M]): Channel-major data.
        num_bins (int): Bins over [0, 1]; bin b holds ``b / B <= x < (b + 1) / B`` (x = 1 in
            the last), with ``x = |g| * (1 / |g|max)`` and ``x * B`` computed in float32.

    Returns:
        tuple: ``counts`` and ``sums`` (Tensor[C, B], float64) and the abs-max (Tensor[C],
        float32). An all-zero channel has all its values in bin 0; NaN/Inf values count as 0.
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f'num_bins must be an int >= 1, but got {num_bins!r}')
    g_cm = _check_channel_major(g_cm)
    channels = g_cm.shape[0]
    g_max = g_cm.abs().amax(dim=1) if g_cm.shape[1] else g_cm.new_zeros(channels)  # [C]
    norm = torch.where(g_max > 0, g_max, torch.ones_like(g_max))
    # x = |g| * (1 / max) in float32, exactly as the compiled kernel computes it (same bins);
    # the quotient where 1 / max overflows (abs-max below about 2**-128).
    inv = norm.reciprocal()
    x = g_cm.abs().mul_(inv[:, None])  # [C, M], in [0, 1] where finite
    tiny = torch.isinf(inv)
    if bool(tiny.any()):
        x[tiny] = g_cm[tiny].abs() / norm[tiny, None]
    if not bool(torch.isfinite(g_max).all()):
        x = x.nan_to_num_(0.0, 0.0, 0.0).clamp_(0.0, 1.0)
    idx = x.mul(num_bins).long().clamp_(max=num_bins - 1)  # [C, M]
    idx += torch.arange(0, channels * num_bins, num_bins, device=g_cm.device)[:, None]
    # One flat bincount per statistic: every channel owns num_bins consecutive slots.
    counts = torch.bincount(idx.reshape(-1), minlength=channels * num_bins)
    sums = torch.bincount(idx.reshape(-1), weights=x.reshape(-1).double(),
                          minlength=channels * num_bins)
    return counts.double().view(channels, -1), sums.view(channels, -1), g_max


def channel_zero_counts(g_cm: Tensor) -> Tensor:
    """Number of exact zeros (``g == 0``, +0 and -0) in every row of a channel-major tensor.

    Exact zeros are common in G_Y after a ReLU (often most of a channel) and are the one value
    every quantizer reproduces exactly, whatever the clip; the objective clip
    (:mod:`.histogram_clip`) needs their number to leave them out of its rounding term. NaN is
    not zero, so a non-finite channel still gets the count of its exact zeros.

    Args:
        g_cm (Tensor[C, M]): Channel-major data.

    Returns:
        Tensor[C], int64: Zeros per channel; ``M`` for an all-zero channel.
    """
    g_cm = _check_channel_major(g_cm)
    return (g_cm == 0).sum(dim=1)


def gradient_statistics(g: Tensor, dim: int, num_bins: int = 0) -> GradientStats:
    """Per-channel statistics and (``num_bins > 0``) histograms of ``g`` along ``dim``.

    Uses the compiled kernel ``mmdaq::grad_channel_stats`` (one CPU task or CUDA block per
    channel, no channel-major copy) when it is built for ``g``'s device, else
    :func:`gradient_statistics_reference`; the two agree to float rounding (tested).

    Args:
        g (Tensor[...], float32/float16/bfloat16): e.g. G_Y as Tensor[N, C_out, *S], dim=1.
        dim (int): Channel dimension.
        num_bins (int): Histogram bins (0: none). Defaults to 0.

    Returns:
        GradientStats: Per-channel statistics.
    """
    g = _as_float32(g, 'g')
    if grad_channel_stats_applies(g, num_bins):
        stats = grad_channel_stats(g, dim, num_bins, 0.0, 127, True)
        return GradientStats(*stats[:3], *stats[4:])  # all but the clip ratio
    return gradient_statistics_reference(g, dim, num_bins)


def gradient_statistics_reference(g: Tensor, dim: int, num_bins: int = 0) -> GradientStats:
    """Plain-PyTorch twin of :func:`gradient_statistics`."""
    g_cm = channel_major(_as_float32(g, 'g'), dim)
    stats = channel_statistics(g_cm)
    if num_bins:
        counts, sums, _ = channel_histograms(g_cm, num_bins)
    else:
        counts = sums = torch.zeros(g_cm.shape[0], 0, dtype=torch.float64, device=g.device)
    return GradientStats(*stats, counts, sums, channel_zero_counts(g_cm))
