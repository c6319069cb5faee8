"""ShiftQuant: group quantization with power-of-two group scales (Guo, Liu et al., 2024).

The tensor is cut into slices along one axis (in a GEMM: the reduction axis K). Slice k gets
the scale ``s_k = s0 * 2**-e_k``, a power-of-two fraction of the tensor's base scale, so its
codes enter an integer GEMM with one left shift instead of a float rescale (ShiftMM,
:mod:`mmdaq.ops.shift_matmul`)::

    m_k = max |x[.., k, ..]|                          # magnitude of slice k
    s0  = max_k m_k / Q                               # Q = 2**(b-1) - 1, no zero point
    e_k = min(G - 1, floor(log2(max_k m_k / m_k)))    # integer shift = group id, in [0, G-1]
    s_k = ldexp(s0, -e_k)                             # exact power-of-two scale
    q_k = clamp(round(x[.., k, ..] / s_k), -Q, Q)     # int8 container for b <= 8 bits

``e_k`` is the largest integer in ``[0, G-1]`` with ``m_k * 2**e_k <= max m``, computed exactly
(``ldexp`` comparisons, not a rounded ``log2``). Hence no slice is clipped (``m_k <= s_k Q``), and
every slice outside the last group uses more than half of the code range (``m_k > s_k Q / 2``):
its scale is within 2x of its own abs-max scale ``m_k / Q``. With ``G = 1`` this is the
per-tensor symmetric quantizer :func:`~.quantize.quantize`, code for code.

Zero and non-finite policy (as :func:`~.quantize.quantize`): an all-zero tensor gives base
scale 0 and codes 0; an all-zero slice gets ``e_k = G - 1`` and codes 0. A NaN or Inf anywhere
gives a NaN base scale and codes 0, so every GEMM result rescaled by it is NaN.
"""
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..kernels import quantize_int8_reference
from .quantize import _as_float32, _normalize_dim, abs_max, max_code

_ROUNDINGS = ('nearest', 'stochastic')


class ShiftQuantResult(NamedTuple):
    """Codes of a tensor quantized with power-of-two slice scales.

    Attributes:
        codes (Tensor[...], int8): Codes in ``[-Q, Q]``, shape of the input.
        base_scale (Tensor[], float32): ``s0`` (0 for an all-zero tensor, NaN if non-finite).
        shifts (Tensor[C], int64): ``e_k`` of each slice along ``dim``, in ``[0, G-1]``.
        dim (int): The slice axis (non-negative).
    """
    codes: Tensor
    base_scale: Tensor
    shifts: Tensor
    dim: int

    @property
    def scales(self) -> Tensor:
        """Tensor[C], float32: ``s_k = ldexp(s0, -e_k)`` per slice."""
        return pow2_scales(self.base_scale, self.shifts)

    def dequantize(self) -> Tensor:
        """Tensor[...], float32: ``q * s_k`` (the value the integer path represents)."""
        shape = [1] * self.codes.dim()
        shape[self.dim] = -1
        return self.codes.float() * self.scales.view(shape)


def pow2_scales(base_scale: Tensor, shifts: Tensor) -> Tensor:
    """``ldexp(s0, -e)``: Tensor[] ``base_scale`` times ``2**-shifts`` (Tensor[C]), exactly."""
    return torch.ldexp(base_scale.expand(shifts.shape).contiguous(), -shifts)


def slice_shifts(m: Tensor, num_groups: int) -> Tensor:
    """Group id ``e_k`` of each slice: the largest e in [0, G-1] with ``m_k 2**e <= max m``.

    Args:
        m (Tensor[C], float32): Slice magnitudes (finite, >= 0).
        num_groups (int): G.

    Returns:
        Tensor[C], int64.
    """
    top = m.amax() if m.numel() else m.new_zeros(())
    ratio = torch.where(m > 0, top / m.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    e = torch.floor(torch.log2(ratio.clamp_min(1.0))).clamp_(0, num_groups - 1).long()
    # log2 of a rounded ratio may be one off at powers of two: settle it with exact ldexp tests.
    e = torch.where((e > 0) & (torch.ldexp(m, e) > top), e - 1, e)
    grow = (e < num_groups - 1) & (torch.ldexp(m, e + 1) <= top)
    e = torch.where(grow, e + 1, e)
    return torch.where(m > 0, e, torch.full_like(e, num_groups - 1))


@torch.no_grad()
def shift_quantize(x: Tensor,
                   dim: int,
                   num_groups: int = 8,
                   num_bits: int = 4,
                   rounding: str = 'nearest',
                   generator: Optional[torch.Generator] = None) -> ShiftQuantResult:
    """Quantize ``x`` with one power-of-two scale per slice along ``dim`` (module doc).

    Args:
        x (Tensor[...], float32/float16/bfloat16): Values to quantize.
        dim (int): Slice axis (negative allowed): in a GEMM, the reduction axis.
        num_groups (int): G, the number of distinct scales ``s0 * 2**-e``, 1 to 16.
            Defaults to 8.
        num_bits (int): b, 2 to 8 (codes held in int8). Defaults to 4.
        rounding (str): ``'nearest'`` or ``'stochastic'`` (unbiased,
            ``floor(v) + (u < v - floor(v))``, as :func:`~.quantize.quantize`). Defaults to
            ``'nearest'``.
        generator (torch.Generator, optional): Noise source of stochastic rounding. Defaults
            to None (global RNG).

    Returns:
        ShiftQuantResult: codes, ``s0``, ``e`` per slice and the slice axis.

    Examples:
        >>> r = shift_quantize(torch.tensor([[4.0, 1.0], [-2.5, 0.2]]), dim=1, num_groups=4)
        >>> r.shifts.tolist(), r.codes.tolist()  # s0 = 4/7; column 1: s0/4
        ([0, 2], [[7, 7], [-4, 1]])
    """
    qmax = max_code(num_bits)
    check_num_groups(num_groups)
    if rounding not in _ROUNDINGS:
        raise ValueError(f'rounding must be one of {_ROUNDINGS}, but got {rounding!r}')
    x = _as_float32(x, 'x')
    dim = _normalize_dim(dim, x.dim())
    if dim is None:
        raise ValueError('dim must be an int (the slice axis), but got None')
    m = abs_max(x, dim)  # [C]; NaN/Inf where the slice is non-finite
    finite = bool(torch.isfinite(m).all())
    top = m.amax() if m.numel() else m.new_zeros(())
    base = top / qmax if finite else torch.full_like(top, float('nan'))
    e = slice_shifts(torch.where(torch.isfinite(m), m, 0.0), num_groups)  # [C]
    u = None if rounding == 'nearest' else torch.rand(
        x.shape, generator=generator, dtype=torch.float32, device=x.device)
    codes = quantize_int8_reference(x, pow2_scales(base, e), dim, qmax=qmax, u=u)
    return ShiftQuantResult(codes, base, e, dim)


def check_num_groups(num_groups: int) -> None:
    """Raise a ValueError unless ``num_groups`` is an int in [1, 16]."""
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) \
            or not 1 <= num_groups <= 16:
        raise ValueError(f'num_groups must be an int in [1, 16], but got {num_groups!r}')
