"""UI8's Direction Sensitive Gradient Clipping (DSGC) and its learning-rate scaling (DCLRS).

UI8 (Zhu et al., CVPR 2020; notes in ``shared/papers/related_methods.md``, section C) quantizes
each layer's output gradient with one clip per tensor, chosen to keep the gradient's direction::

    d(c) = 1 - <g, g_hat(c)> / (|g| |g_hat(c)|)          cosine distance, in [0, 2]
    c*   = argmin_{0 < c <= max|g|} d(c)

and scales the layer's learning rate by ``phi(d) = max(exp(-alpha d), beta)`` (alpha 20, beta
0.1, the paper's values): the worse the quantized direction, the smaller the step.

Choices where the paper is not explicit [M]: the search runs over ``c = r * max|g|`` with ``r``
on a log-spaced grid in ``[2**-10, 1]`` (the abs-max is a candidate; ties keep the larger clip,
so DSGC is never worse than abs-max on its own criterion); ``g_hat`` uses nearest rounding so the
search is deterministic (training then rounds stochastically); a tensor holding NaN/Inf gets a
NaN clip and distance.
"""
import dataclasses
import math
from typing import Optional, Union

import torch
from torch import Tensor

from .clipping import ClipResult
from .distribution import _check_channel_major
from .quantize import abs_max, fake_quantize


@dataclasses.dataclass(frozen=True)
class DSGCConfig:
    """Options of the direction-sensitive clip search.

    Args:
        num_candidates (int): Clip ratios ``c / max|g|`` tried, log-spaced. Defaults to 48.
        min_ratio (float): Smallest ratio tried, in (0, 1). Defaults to 2**-10.
        num_bits (int): Bit width of the quantizer. Defaults to 8.
    """
    num_candidates: int = 48
    min_ratio: float = 2.0**-10
    num_bits: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.num_candidates, bool) or not isinstance(self.num_candidates, int) \
                or self.num_candidates < 2:
            raise ValueError(f'num_candidates must be an int >= 2, but got '
                             f'{self.num_candidates!r}')
        if not isinstance(self.min_ratio, (int, float)) or not 0.0 < self.min_ratio < 1.0:
            raise ValueError(f'min_ratio must be in (0, 1), but got {self.min_ratio!r}')


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """``1 - cos(a_c, b_c)`` per row of two [C, M] tensors (float64 sums); 0 for two zero rows.

    Returns:
        Tensor[C], float32: In [0, 2]; 1 if exactly one of the rows is zero; NaN for
        non-finite rows.
    """
    a, b = a.double(), b.double()
    dot = (a * b).sum(dim=1)
    norm = a.norm(dim=1) * b.norm(dim=1)
    both_zero = (a.abs().amax(dim=1) == 0) & (b.abs().amax(dim=1) == 0)
    dist = 1.0 - torch.where(norm > 0, dot / norm.clamp_min(1e-300), torch.zeros_like(dot))
    dist = torch.where(both_zero, torch.zeros_like(dist), dist)
    return dist.clamp(0.0, 2.0).float()


def direction_sensitive_clip(g_cm: Tensor, config: Optional[DSGCConfig] = None) -> ClipResult:
    """Per row: the clip minimising the cosine distance of the quantized row to the row.

    Args:
        g_cm (Tensor[C, M], float32/float16/bfloat16): One row per clipped unit (UI8: one row,
            ``g.reshape(1, -1)``).
        config (DSGCConfig, optional): Search options. Defaults to None (``DSGCConfig()``).

    Returns:
        ClipResult: ``clip`` (Tensor[C]) and ``info = {'cosine_distance': Tensor[C]}`` at the
        chosen clip.
    """
    config = config or DSGCConfig()
    g_cm = _check_channel_major(g_cm)
    g_max = abs_max(g_cm, dim=0)  # [C]
    ratios = torch.logspace(math.log10(config.min_ratio), 0.0, config.num_candidates,
                            device=g_cm.device)
    ratios[-1] = 1.0
    dists = torch.stack([
        cosine_distance(g_cm, fake_quantize(g_cm, r * g_max, dim=0, num_bits=config.num_bits))
        for r in ratios
    ], dim=1)  # [C, R]
    # argmin with ties to the larger clip: search the reversed order.
    best = config.num_candidates - 1 - dists.flip(1).argmin(dim=1)  # [C]
    clip = ratios[best] * g_max
    dist = dists.gather(1, best[:, None]).squeeze(1)
    finite = torch.isfinite(g_max)
    nan = torch.full_like(clip, float('nan'))
    return ClipResult(torch.where(finite, clip, nan),
                      {'cosine_distance': torch.where(finite, dist, nan)})


def dclrs_factor(distance: Union[float, Tensor], alpha: float = 20.0,
                 beta: float = 0.1) -> Union[float, Tensor]:
    """UI8's learning-rate multiplier ``max(exp(-alpha d), beta)``; 1 for a NaN distance.

    A NaN distance (non-finite gradient) leaves the step alone: the overflow is handled by the
    non-finite policy, not by shrinking the learning rate. A tensor distance gives a float32
    tensor of its shape, computed on its device in float64 (no host sync; the float the float
    path gives, rounded to float32 as a multiply of a float32 tensor by it would).
    """
    if not alpha >= 0 or not 0 < beta <= 1:
        raise ValueError(f'alpha must be >= 0 and beta in (0, 1], but got {alpha!r}, {beta!r}')
    if isinstance(distance, Tensor):
        d = distance.double()
        factor = torch.exp(-alpha * d).clamp_min(beta)
        return torch.where(torch.isnan(d), torch.ones_like(d), factor).float()
    if distance != distance:
        return 1.0
    return max(math.exp(-alpha * distance), beta)
