"""L1 batch normalization: BatchNorm with the mean absolute deviation instead of the std.

The normalization of ShiftQuant's integer training framework (Guo, Liu et al., 2024), in the
form of L1-BN (Wu et al., 2018). Per channel c, over N and the spatial dims::

    mu_c     = mean(x_c)
    sigma1_c = mean(|x_c - mu_c|)                       # no squares, no square root
    y        = gamma_c (x_c - mu_c) / (kappa sigma1_c + eps) + beta_c

``kappa = sqrt(pi / 2)`` (default) makes ``kappa sigma1`` the std of Gaussian data, so the layer
is a drop-in for BatchNorm; ``kappa = 1`` is the plain mean absolute deviation. The backward
pass needs only ``sign(x - mu)`` (autograd of ``abs``).

Running statistics: ``running_mean`` is the EMA of ``mu``; the EMA of the denominator
``kappa sigma1`` is kept as its square in ``running_var`` (for Gaussian data an estimate of the
variance), so that the buffers and ``state_dict`` keys are BatchNorm's: a BatchNorm checkpoint
loads strictly into the L1 model and back, and mmcv/mmdet treat the layer as a BatchNorm
(``_BatchNorm`` subclass: abbreviation ``bn``, ``norm_eval``, norm weight decay). Eval mode
divides by ``sqrt(running_var) + eps``.

Quantized mode (``num_bits`` set): the input is quantized with ShiftQuant per channel
(:func:`~mmdaq.quantization.shift_quantize`, nearest rounding), the statistics are computed on
the integer codes (:func:`integer_l1_statistics`: integer sums, one division per channel),
and the output is quantized per tensor to the same width. Gradients pass both quantizers
straight through (STE) and follow the float formula on the quantized input.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..quantization.quantize import fake_quantize
from ..quantization.shift_quant import ShiftQuantResult, check_num_groups, shift_quantize

KAPPA_GAUSSIAN = math.sqrt(math.pi / 2)


def integer_l1_statistics(result: ShiftQuantResult) -> Tuple[Tensor, Tensor]:
    """Per-channel mean and mean absolute deviation from integer codes, in float units.

    With n values of channel c, codes q and scale s_c: ``S = sum q`` and
    ``D = sum |n q - S|`` are integers (int64), ``mu = s_c S / n`` and
    ``sigma1 = s_c D / n**2``; only the last step divides.

    Args:
        result (ShiftQuantResult): Codes Tensor[N, C, *S] sliced along dim 1.

    Returns:
        tuple: mu (Tensor[C], float32) and sigma1 (Tensor[C], float32).
    """
    q = result.codes.movedim(1, 0).reshape(result.codes.shape[1], -1).long()  # [C, n]
    n = q.shape[1]
    total = q.sum(dim=1, keepdim=True)  # [C, 1], S
    deviation = (n * q - total).abs().sum(dim=1)  # [C], D
    scale = result.scales.double()
    mu = scale * total.squeeze(1).double() / n
    sigma1 = scale * deviation.double() / (n * n)
    return mu.float(), sigma1.float()


def _straight_through(x: Tensor, x_hat: Tensor) -> Tensor:
    """``x_hat`` in forward, identity gradient to ``x`` in backward."""
    return x + (x_hat.to(x.dtype) - x).detach()


class _L1BatchNorm(_BatchNorm):
    """Shared by :class:`L1BatchNorm1d`/2d/3d; arguments as :class:`L1BatchNorm2d`."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 kappa: float = KAPPA_GAUSSIAN, num_bits: Optional[int] = None,
                 num_groups: int = 8, device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) \
                or not 0 < kappa < float('inf'):
            raise ValueError(f'kappa must be a finite number > 0, but got {kappa!r}')
        if num_bits is not None and (isinstance(num_bits, bool) or not isinstance(num_bits, int)
                                     or not 2 <= num_bits <= 8):
            raise ValueError(f'num_bits must be None or an int in [2, 8], but got {num_bits!r}')
        check_num_groups(num_groups)
        self.kappa = float(kappa)
        self.num_bits = num_bits
        self.num_groups = num_groups

    def _batch_statistics(self, x: Tensor, dims) -> Tuple[Tensor, Tensor]:
        """mu and sigma1 per channel (Tensor[C] each) of a training batch."""
        if self.num_bits is None:
            mu = x.mean(dim=dims)
            sigma1 = (x - mu.view(_shape(x))).abs().mean(dim=dims)
            return mu, sigma1
        # Quantized mode: statistics from the integer codes (their gradient: the float
        # formula on the quantized input).
        x_f = x.float()
        mu = x_f.mean(dim=dims)
        sigma1 = (x_f - mu.view(_shape(x))).abs().mean(dim=dims)
        with torch.no_grad():
            mu_int, sigma1_int = integer_l1_statistics(self._input_codes(x))
        return _straight_through(mu, mu_int), _straight_through(sigma1, sigma1_int)

    def _input_codes(self, x: Tensor) -> ShiftQuantResult:
        return shift_quantize(x.detach(), 1, self.num_groups, self.num_bits)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        x = input
        if self.num_bits is not None:
            x = _straight_through(input, self._input_codes(input).dequantize())
        dims = [0] + list(range(2, x.dim()))
        use_batch = self.training or self.running_mean is None
        if use_batch:
            mu, sigma1 = self._batch_statistics(x, dims)
            denominator = self.kappa * sigma1 + self.eps
            if self.training and self.track_running_stats:
                self._update_running(mu.detach(), self.kappa * sigma1.detach())
        else:
            mu, denominator = self.running_mean, self.running_var.sqrt() + self.eps
        shape = _shape(x)
        y = (x - mu.view(shape).to(x.dtype)) / denominator.view(shape).to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.num_bits is not None:
            y = _straight_through(y, fake_quantize(y.detach(), num_bits=self.num_bits))
        return y

    @torch.no_grad()
    def _update_running(self, mu: Tensor, scale: Tensor) -> None:
        """EMA of mu and of ``kappa sigma1`` (stored squared in running_var)."""
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None \
            else self.momentum
        self.running_mean.lerp_(mu.to(self.running_mean.dtype), factor)
        root = self.running_var.clamp_min(0).sqrt()
        root.lerp_(scale.to(root.dtype), factor)
        self.running_var.copy_(root.square())

    def extra_repr(self) -> str:
        quant = '' if self.num_bits is None else f', num_bits={self.num_bits}'
        return f'{super().extra_repr()}, kappa={self.kappa:.4f}{quant}'


def _shape(x: Tensor) -> Tuple[int, ...]:
    """[1, C, 1, ..]: a per-channel vector broadcast over x."""
    return (1, -1) + (1, ) * (x.dim() - 2)


class L1BatchNorm1d(_L1BatchNorm):
    """L1 batch normalization of Tensor[N, C] or Tensor[N, C, L]; see :class:`L1BatchNorm2d`."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3):
            raise ValueError(f'input must be 2-d or 3-d (N, C[, L]), but got {input.dim()}-d')


class L1BatchNorm2d(_L1BatchNorm):
    """L1 batch normalization of Tensor[N, C, H, W] (module doc); registered as ``'L1BN'``.

    Args:
        num_features (int): C.
        eps (float): Added to ``kappa sigma1``. Defaults to 1e-5.
        momentum (float, optional): EMA factor of the running statistics; None is the
            cumulative average, as BatchNorm. Defaults to 0.1.
        affine (bool): Learn gamma and beta. Defaults to True.
        track_running_stats (bool): Keep running statistics for eval. Defaults to True.
        kappa (float): Factor on sigma1. Defaults to sqrt(pi/2).
        num_bits (int, optional): Quantized mode: input and output widths (2-8); None runs
            in float. Defaults to None.
        num_groups (int): Power-of-two groups of the quantized input. Defaults to 8.

    Examples:
        >>> norm = L1BatchNorm2d(4)
        >>> y = norm(torch.randn(8, 4, 5, 5) * 3 + 1)
        >>> bool(y.mean(dim=(0, 2, 3)).abs().max() < 1e-5)
        True
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f'input must be 4-d (N, C, H, W), but got {input.dim()}-d')


class L1BatchNorm3d(_L1BatchNorm):
    """L1 batch normalization of Tensor[N, C, T, H, W]; see :class:`L1BatchNorm2d`."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 5:
            raise ValueError(f'input must be 5-d (N, C, T, H, W), but got {input.dim()}-d')
