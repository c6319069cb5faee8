"""Magnitude-aware Clipping Strategy (MCS) of DAQ, its objective and a numeric reference solver.

* :func:`max_clip`: abs-max clipping, the baseline rule.
* :class:`MCSConfig`, :func:`magnitude_aware_clip` (and :func:`mcs_clip_from_stats`, the same
  rule from precomputed statistics): the paper's clip per channel, ``s_t = |g|max_t`` for a
  bell-shaped channel and ``s_t = (1 - k A) s_{t-1} + A |g|max_t`` for an inverted-T one (DAQ's
  ``long_tail_rule='ema'``).
* :func:`magnitude_weighted_error`: the objective on data, the actual quantization error
  weighted by ``exp(alpha |g| / |g|max)``.
* :func:`solve_optimal_clip`: the clip per channel that minimises it, a reference for MCS.

``docs/quantization.md`` (section 3) derives the objective for both channel classes, reads the
update rule from it and compares MCS with the reference on data.
"""
import dataclasses
import math
from typing import Dict, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from .distribution import _check_channel_major, channel_statistics, check_threshold
from .quantize import abs_max, fake_quantize, max_code


class ClipResult(NamedTuple):
    """A clip per row of a channel-major tensor, with the rule's diagnostics.

    Attributes:
        clip (Tensor[C], float32): Clipping value per row; 0 for all-zero rows, NaN for rows
            holding NaN/Inf.
        info (dict[str, Tensor]): Diagnostics of the rule, e.g.
            ``{'cosine_distance': Tensor[C]}`` for direction-sensitive clipping.
    """
    clip: Tensor
    info: Dict[str, Tensor]


def max_clip(g_cm: Tensor) -> Tensor:
    """Abs-max clipping: ``s_c = max |g_c|`` (no saturation), the baseline rule.

    Args:
        g_cm (Tensor[C, M], float32/float16/bfloat16): Channel-major data; per-tensor rules use
            one row, ``g.reshape(1, -1)``.

    Returns:
        Tensor[C], float32: Abs-max per row; 0 for all-zero rows, NaN for rows with NaN/Inf.
    """
    g_max = abs_max(_check_channel_major(g_cm), dim=0)  # [C]
    return torch.where(torch.isfinite(g_max), g_max, torch.full_like(g_max, float('nan')))


@dataclasses.dataclass(frozen=True)
class MCSConfig:
    """Options of the Magnitude-aware Clipping Strategy; defaults are the paper's values.

    Args:
        threshold (float): ``lambda``: a channel is bell-shaped (clip = abs-max) when
            ``P(|g| > sigma) > threshold``; in ``[0, 1]``. Defaults to 0.3.
        k (float): ``k`` of ``s_t = (1 - k*A) s_{t-1} + A |g|max_t``; the steady-state clip of
            a constant abs-max is ``|g|max / k``. Positive, with ``k * a <= 1``. Defaults to 1.0.
        a (float): ``A``, the step of the update, in ``(0, 1]``. Defaults to 0.8.
        cap_at_abs_max (bool): Not in the paper. If True, the inverted-T clip is capped at the
            current abs-max (a clip above it only coarsens the step). Defaults to False.
    """
    threshold: float = 0.3
    k: float = 1.0
    a: float = 0.8
    cap_at_abs_max: bool = False

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        for name in ('k', 'a'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f'{name} must be a finite number, but got {value!r}')
        if not self.k > 0:
            raise ValueError(f'k must be > 0, but got {self.k!r}')
        if not 0 < self.a <= 1:
            raise ValueError(f'a must be in (0, 1], but got {self.a!r}')
        if not self.k * self.a <= 1:
            raise ValueError(f'k * a must be <= 1 so that 1 - k * a >= 0 keeps the clip '
                             f'positive, but got k * a = {self.k * self.a!r}; lower k or a')
        if not isinstance(self.cap_at_abs_max, bool):
            raise ValueError(f'cap_at_abs_max must be a bool, but got {self.cap_at_abs_max!r}')


def magnitude_aware_clip(g_cm: Tensor,
                         prev_clip: Optional[Tensor] = None,
                         config: Optional[MCSConfig] = None) -> Tuple[Tensor, Tensor]:
    """DAQ's Magnitude-aware Clipping Strategy for one iteration, per channel.

    Bell-shaped channels get ``s_t = |g|max_t``; inverted-T channels get
    ``s_t = (1 - k*A) * s_{t-1} + A * |g|max_t``. Store the returned clip and pass it back as
    ``prev_clip`` at the next iteration.

    Open choices (not in the paper): ``s_{t-1}`` is the clip actually used at ``t - 1``, whatever
    the class was then (one state buffer, no separate running average). A channel without a
    usable history (``prev_clip`` None, or its entry 0, NaN or Inf) restarts at the abs-max, as
    at the first iteration; so a zero-filled buffer means "no history", and one NaN iteration
    does not poison later ones. An all-zero (or empty) channel gets clip 0, hence scale 0 and
    exact zeros, and its history restarts. A channel holding NaN/Inf gets a NaN clip.

    Args:
        g_cm (Tensor[C, M], float32/float16/bfloat16): Channel-major gradient, e.g.
            ``channel_major(G_Y, dim=1)``.
        prev_clip (Tensor[C], optional): Clip returned at the previous iteration.
            Defaults to None (first iteration).
        config (MCSConfig, optional): Options. Defaults to None (``MCSConfig()``).

    Returns:
        tuple[Tensor, Tensor]:
            - clip (Tensor[C], float32): Clipping value ``s_t`` per channel.
            - is_gaussian (Tensor[C], bool): True for bell-shaped channels.

    Examples:
        >>> g = torch.tensor([[1.0, -2.0, 1.5, 0.5], [0.0, 0.0, 0.0, 8.0]])
        >>> clip, is_gaussian = magnitude_aware_clip(g, prev_clip=torch.tensor([4.0, 4.0]))
        >>> [round(c, 4) for c in clip.tolist()], is_gaussian.tolist()  # 0.2 * 4 + 0.8 * 8
        ([2.0, 7.2], [True, False])
    """
    config = MCSConfig() if config is None else config
    if not isinstance(config, MCSConfig):
        raise TypeError(f'config must be an MCSConfig, but got {type(config).__name__}')
    stats = channel_statistics(g_cm)
    return mcs_clip_from_stats(stats.abs_max, stats.frac_above_sigma, prev_clip, config)


def mcs_clip_from_stats(g_max: Tensor, frac_above_sigma: Tensor, prev_clip: Optional[Tensor],
                        config: MCSConfig) -> Tuple[Tensor, Tensor]:
    """:func:`magnitude_aware_clip` from precomputed statistics (abs-max, ``P(|g| > sigma)``).

    Args:
        g_max (Tensor[C], float32): Abs-max per channel.
        frac_above_sigma (Tensor[C], float32): ``P(|g| > sigma)`` per channel.
        prev_clip (Tensor[C], optional): Clip of the previous iteration.
        config (MCSConfig): Options.

    Returns:
        tuple[Tensor, Tensor]: clip (Tensor[C], float32) and is_gaussian (Tensor[C], bool).
    """
    is_gaussian = frac_above_sigma > config.threshold  # [C]
    clip = g_max
    if prev_clip is not None:
        prev = _check_prev_clip(prev_clip, g_max)
        has_history = torch.isfinite(prev) & (prev > 0)
        ema = (1.0 - config.k * config.a) * prev + config.a * g_max  # [C]
        if config.cap_at_abs_max:
            ema = torch.minimum(ema, g_max)
        use_ema = has_history & ~is_gaussian & (g_max > 0)
        clip = torch.where(use_ema, ema, g_max)
    clip = torch.where(torch.isfinite(g_max), clip, torch.full_like(clip, float('nan')))
    return clip, is_gaussian


def _check_prev_clip(prev_clip: Tensor, g_max: Tensor) -> Tensor:
    """Check ``prev_clip`` against the channel count and return it as float32 [C]."""
    if not isinstance(prev_clip, Tensor) or tuple(prev_clip.shape) != tuple(g_max.shape):
        got = list(prev_clip.shape) if isinstance(prev_clip, Tensor) else type(prev_clip).__name__
        raise ValueError(f'prev_clip must be None or a tensor of shape {list(g_max.shape)} (one '
                         f'clip per channel), but got {got}')
    return prev_clip.to(device=g_max.device, dtype=torch.float32)


def magnitude_weighted_error(g: Tensor,
                             clip: Union[float, Tensor],
                             alpha: float,
                             num_bits: int = 8) -> Tensor:
    """Empirical MCS objective per channel: ``mean |g - g_hat| * exp(alpha * |g| / |g|max)``.

    ``g_hat`` is the actual nearest-rounding quantize-dequantize of ``g`` with ``clip`` (no
    half-step model). The weight is normalised by the channel's own abs-max, so ``alpha`` is
    scale-free (the largest value weighs ``e**alpha`` times a zero) and
    ``E(c * g, c * s) = c * E(g, s)`` for ``c > 0``.

    Args:
        g (Tensor[C, M], float32/float16/bfloat16): Channel-major data.
        clip (float | Tensor[] | Tensor[C]): Clipping value per channel.
        alpha (float): Magnitude weight exponent, ``>= 0``.
        num_bits (int): Bit width. Defaults to 8.

    Returns:
        Tensor[C], float32: Weighted mean absolute error; 0 for all-zero channels, NaN for
        channels with NaN/Inf. Overflows to Inf only if the true value exceeds float32.
    """
    g = _check_channel_major(g)
    scaled, norm = _scaled_error(g, clip, alpha, num_bits)  # [C], [C]
    log_err = torch.log(scaled.double() * norm.double()) + alpha  # [C]; log(0) = -inf gives 0
    return torch.exp(log_err).to(torch.float32)


def solve_optimal_clip(g_cm: Tensor,
                       alpha: float,
                       num_bits: int = 8,
                       *,
                       num_grid: int = 64,
                       num_starts: int = 3,
                       num_refine: int = 2,
                       min_ratio: float = 2.0**-10) -> Tensor:
    """Per-channel clip minimising :func:`magnitude_weighted_error` directly on the data.

    A log-spaced grid of ``num_grid`` ratios ``s / |g|max`` in ``[min_ratio, 1]``; then, around
    each of the ``num_starts`` best grid points, ``num_refine`` rounds of a 17-point linear grid
    between the neighbours of the best point so far. The empirical objective is piecewise smooth
    and can have several local minima (each large value that crosses the clip makes a kink), so a
    multi-start grid is used rather than golden-section. The abs-max (ratio 1) is a candidate and
    ties keep the larger clip, so the result is never worse than abs-max clipping.
    Cost: ``num_grid + 17 * num_starts * num_refine`` quantize passes over the data.

    Args:
        g_cm (Tensor[C, M], float32/float16/bfloat16): Channel-major data.
        alpha (float): Magnitude weight exponent, ``>= 0``.
        num_bits (int): Bit width. Defaults to 8.
        num_grid (int): Points of the initial log grid, ``>= 2``. Defaults to 64.
        num_starts (int): Grid points refined, ``>= 1``. Defaults to 3.
        num_refine (int): Refinement rounds per start, ``>= 0``. Defaults to 2.
        min_ratio (float): Smallest ratio ``s / |g|max`` tried, in ``(0, 1)``.
            Defaults to 2**-10.

    Returns:
        Tensor[C], float32: Clip per channel; 0 for all-zero channels, NaN for channels with
        NaN/Inf.
    """
    g_cm = _check_channel_major(g_cm)
    _check_solver_options(num_grid, num_starts, num_refine, min_ratio)
    g_max = abs_max(g_cm, dim=0)  # [C]
    grid = torch.logspace(math.log10(min_ratio), 0.0, num_grid, device=g_cm.device)  # [G]
    grid[-1] = 1.0  # exactly the abs-max
    ratios = grid.expand(g_cm.shape[0], num_grid)  # [C, G]
    errors = _errors(g_cm, g_max, ratios, alpha, num_bits)  # [C, G]
    order = torch.argsort(errors.flip(1), dim=1, stable=True)  # ties: larger ratio first
    starts = num_grid - 1 - order[:, :num_starts]  # [C, K], best grid point first
    best_ratio, best_err = _pick(ratios, starts[:, 0]), _pick(errors, starts[:, 0])
    steps = torch.linspace(0.0, 1.0, 17, device=g_cm.device)  # [P]
    for k in range(starts.shape[1]):
        lo, hi = _neighbours(ratios, starts[:, k])
        for _ in range(num_refine):
            candidates = lo[:, None] + (hi - lo)[:, None] * steps  # [C, P]
            cand_errors = _errors(g_cm, g_max, candidates, alpha, num_bits)  # [C, P]
            idx = steps.numel() - 1 - cand_errors.flip(1).argmin(dim=1)  # ties: larger ratio
            err = _pick(cand_errors, idx)
            better = err < best_err
            best_ratio = torch.where(better, _pick(candidates, idx), best_ratio)
            best_err = torch.where(better, err, best_err)
            lo, hi = _neighbours(candidates, idx)
    clip = best_ratio * g_max
    return torch.where(torch.isfinite(g_max), clip, torch.full_like(clip, float('nan')))


def _check_solver_options(num_grid: int, num_starts: int, num_refine: int,
                          min_ratio: float) -> None:
    """Raise on invalid search options of :func:`solve_optimal_clip`."""
    for name, value, least in (('num_grid', num_grid, 2), ('num_starts', num_starts, 1),
                               ('num_refine', num_refine, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f'{name} must be an int >= {least}, but got {value!r}')
    if isinstance(min_ratio, bool) or not isinstance(min_ratio, (int, float)) \
            or not 0.0 < min_ratio < 1.0:
        raise ValueError(f'min_ratio must be in (0, 1), but got {min_ratio!r}')


def _errors(g_cm: Tensor, g_max: Tensor, ratios: Tensor, alpha: float, num_bits: int) -> Tensor:
    """Scaled objective of each candidate clip ``ratios * g_max``; ``ratios``: [C, P] -> [C, P]."""
    columns = [
        _scaled_error(g_cm, ratios[:, j] * g_max, alpha, num_bits)[0]
        for j in range(ratios.shape[1])
    ]  # P x [C]
    return torch.stack(columns, dim=1)


def _pick(values: Tensor, idx: Tensor) -> Tensor:
    """``values[c, idx[c]]`` for every row: [C, P], [C] -> [C]."""
    return values.gather(1, idx[:, None]).squeeze(1)


def _neighbours(ratios: Tensor, idx: Tensor) -> Tuple[Tensor, Tensor]:
    """Ratios just below and above ``idx`` (clamped at the ends): [C, P], [C] -> [C], [C]."""
    last = ratios.shape[1] - 1
    return _pick(ratios, (idx - 1).clamp(min=0)), _pick(ratios, (idx + 1).clamp(max=last))


def _scaled_error(g_cm: Tensor, clip: Union[float, Tensor], alpha: float,
                  num_bits: int) -> Tuple[Tensor, Tensor]:
    """Objective divided by ``|g|max * e**alpha`` (same argmin, never overflows) and the norm.

    Returns ``(mean(|g - g_hat| / |g|max * exp(alpha * (|g| / |g|max - 1))), |g|max)``, both
    [C]; the norm is 1 for all-zero channels.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
            or not 0.0 <= alpha < math.inf:
        raise ValueError(f'alpha must be a finite number >= 0, but got {alpha!r}')
    max_code(num_bits)
    g_max = abs_max(g_cm, dim=0)  # [C]
    norm = torch.where(g_max > 0, g_max, 1.0)  # [C]; a NaN row gives NaN through g_hat
    if g_cm.shape[1] == 0:
        return torch.zeros_like(g_max), norm
    g_hat = fake_quantize(g_cm, clip, dim=0, num_bits=num_bits)  # [C, M]
    relative = g_cm.abs() / norm[:, None]  # [C, M], in [0, 1]
    weight = torch.exp(alpha * (relative - 1.0))  # [C, M], in [e**-alpha, 1]
    err = ((g_cm - g_hat).abs() / norm[:, None] * weight).mean(dim=1)  # [C]
    return err, norm
