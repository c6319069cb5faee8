"""``mmdaq::quantize_int8``: float32 -> INT8 codes for given step(s), compiled kernel.

The plain-PyTorch reference :func:`quantize_int8_reference` is what the kernel is
tested against, bit-exactly.
"""
import torch
from torch import Tensor

from .extension import register_fake_if_built, require_extension


def _check_args(x: Tensor, scale: Tensor, dim: int) -> int:
    ndim = max(x.dim(), 1)
    torch._check(x.dtype == torch.float32,
                 lambda: f'quantize_int8: x must be float32, but got {x.dtype}')
    torch._check(scale.dtype == torch.float32,
                 lambda: f'quantize_int8: scale must be float32, but got {scale.dtype}')
    torch._check(-ndim <= dim < ndim,
                 lambda: f'quantize_int8: dim must be in [{-ndim}, {ndim}), but got {dim}')
    return dim % ndim


@register_fake_if_built('mmdaq::quantize_int8')
def _quantize_int8_fake(x: Tensor, scale: Tensor, dim: int) -> Tensor:
    _check_args(x, scale, dim)
    return torch.empty_like(x, dtype=torch.int8)


def quantize_int8(x: Tensor, scale: Tensor, dim: int = 0) -> Tensor:
    """INT8 codes ``clamp(round(x / scale), -127, 127)`` by the compiled kernel.

    Args:
        x (Tensor[...], float32): Values to quantize.
        scale (Tensor[] or Tensor[x.shape[dim]], float32): Step per tensor or per channel.
        dim (int): Channel dim for a per-channel scale. Defaults to 0.

    Returns:
        Tensor[...], int8: Codes; 0 where the scale is 0 or not finite, or x is not finite.
    """
    require_extension('quantize_int8')
    return torch.ops.mmdaq.quantize_int8(x, scale, dim)


def quantize_int8_reference(x: Tensor, scale: Tensor, dim: int = 0) -> Tensor:
    """Plain-PyTorch twin of :func:`quantize_int8` (same arguments, same result)."""
    dim = _check_args(x, scale, dim)
    if scale.numel() != 1:
        shape = [1] * x.dim()
        shape[dim] = -1
        scale = scale.reshape(shape)  # broadcast along dim: [1, .., C, .., 1]
    valid = (scale > 0) & torch.isfinite(x)
    codes = torch.round(x / torch.where(scale > 0, scale, torch.ones_like(scale)))
    codes = torch.where(valid, codes.clamp(-127, 127), torch.zeros_like(codes))
    return codes.to(torch.int8)
