"""``mmdaq::quantize_int8`` (and its stochastic and pair forms): float32 -> INT8 codes for
given step(s); ``mmdaq::quantize_per_tensor_int8``: the abs-max step and its codes in one op;
``mmdaq::clip_to_scale``: the step of a clip. Compiled kernels.

The plain-PyTorch references :func:`quantize_int8_reference` (the one eager quantizer, which
:mod:`mmdaq.quantization` also runs where the kernels do not apply) and
:func:`clip_to_scale_reference` are what the kernels are tested against, bit-exactly.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .extension import compiled_op_available, register_fake_if_built, require_extension


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


def quantize_int8_reference(x: Tensor, scale: Tensor, dim: int = 0, *, qmax: int = 127,
                            u: Optional[Tensor] = None) -> Tensor:
    """The plain-PyTorch quantizer: :func:`quantize_int8` (``u`` None) and
    :func:`quantize_int8_stochastic` (given its uniform numbers ``u``), at any width.

    ``v = clamp(x / scale, -qmax, qmax)``; the code is ``round(v)`` (half to even), or
    ``floor(v) + (u < v - floor(v))`` with ``u`` given.

    Args:
        x (Tensor[...], float32): Values to quantize.
        scale (Tensor[] or Tensor[x.shape[dim]], float32): Step per tensor or per channel.
        dim (int): Channel dim for a per-channel scale. Defaults to 0.
        qmax (int): Largest code (keyword-only). Defaults to 127.
        u (Tensor[...], float32, optional): Uniform numbers in [0, 1), one per element of
            ``x``, for stochastic rounding (keyword-only). Defaults to None (nearest).

    Returns:
        Tensor[...], int8: Codes in ``[-qmax, qmax]``; 0 where the scale is 0 or not finite,
        or x is not finite.
    """
    dim = _check_args(x, scale, dim)
    if scale.numel() != 1:
        shape = [1] * x.dim()
        shape[dim] = -1
        scale = scale.reshape(shape)  # broadcast along dim: [1, .., C, .., 1]
    usable = scale > 0  # False for zero and NaN steps
    v = (x / torch.where(usable, scale, 1.0)).clamp_(-qmax, qmax)
    if u is None:
        v = torch.round(v)
    else:
        floor = torch.floor(v)
        v = floor + (u.reshape(x.shape) < v - floor).to(torch.float32)
    return torch.where(usable & torch.isfinite(x), v, 0.0).to(torch.int8)


@register_fake_if_built('mmdaq::quantize_int8_pair')
def _quantize_int8_pair_fake(x: Tensor, scale: Tensor, dim: int,
                             tensor_scale: Tensor) -> Tuple[Tensor, Tensor]:
    _check_args(x, scale, dim)
    return torch.empty_like(x, dtype=torch.int8), torch.empty_like(x, dtype=torch.int8)


def quantize_int8_pair(x: Tensor, scale: Tensor, dim: int,
                       tensor_scale: Tensor) -> Tuple[Tensor, Tensor]:
    """The codes of ``x`` for two steps from one read of it (compiled kernel, CPU).

    Args:
        x (Tensor[...], float32): Values to quantize.
        scale (Tensor[] or Tensor[x.shape[dim]], float32): First step, per tensor or channel.
        dim (int): Channel dim of a per-channel ``scale``.
        tensor_scale (Tensor[], float32): Second step, per tensor.

    Returns:
        tuple[Tensor, Tensor]: ``quantize_int8(x, scale, dim)`` and
        ``quantize_int8(x, tensor_scale)``, int8 with x's shape.
    """
    require_extension('quantize_int8_pair')
    return torch.ops.mmdaq.quantize_int8_pair(x, scale, dim, tensor_scale)


@register_fake_if_built('mmdaq::quantize_int8_stochastic')
def _quantize_int8_stochastic_fake(x: Tensor, scale: Tensor, dim: int, seed: int,
                                   offset: int) -> Tensor:
    _check_args(x, scale, dim)
    return torch.empty_like(x, dtype=torch.int8)


@register_fake_if_built('mmdaq::philox_uniform')
def _philox_uniform_fake(like: Tensor, seed: int, offset: int) -> Tensor:
    return torch.empty_like(like, dtype=torch.float32)


def quantize_int8_stochastic(x: Tensor, scale: Tensor, dim: int, seed: int,
                             offset: int) -> Tensor:
    """INT8 codes with stochastic rounding, the noise from a Philox stream (compiled kernel).

    Code = ``floor(v) + (u < v - floor(v))`` with ``v = clamp(x / scale, -127, 127)``: unbiased
    inside the clip. ``u`` of element i (in x's contiguous order) comes from Philox-4x32-10 block
    ``offset + i // 4`` under ``seed``: the same codes on every device and thread count, given
    by :func:`philox_uniform`.

    Args:
        x (Tensor[...], float32): Values to quantize.
        scale (Tensor[] or Tensor[x.shape[dim]], float32): Step per tensor or per channel.
        dim (int): Channel dim for a per-channel scale.
        seed (int): Philox key, in [0, 2**63).
        offset (int): First Philox block, in [0, 2**63).

    Returns:
        Tensor[...], int8: Codes; 0 where the scale is 0 or not finite, or x is not finite.
    """
    require_extension('quantize_int8_stochastic')
    return torch.ops.mmdaq.quantize_int8_stochastic(x, scale, dim, seed, offset)


def philox_uniform(like: Tensor, seed: int, offset: int) -> Tensor:
    """The uniform numbers in [0, 1) that :func:`quantize_int8_stochastic` draws for ``like``."""
    require_extension('philox_uniform')
    return torch.ops.mmdaq.philox_uniform(like, seed, offset)


@register_fake_if_built('mmdaq::quantize_per_tensor_int8')
def _quantize_per_tensor_int8_fake(x: Tensor) -> Tuple[Tensor, Tensor]:
    torch._check(x.dtype == torch.float32 and x.dim() > 0,
                 lambda: 'quantize_per_tensor_int8: x must be a float32 tensor with at least one '
                 f'dim, but got {x.dtype} of shape {tuple(x.shape)}')
    return torch.empty_like(x, dtype=torch.int8), x.new_empty(())


def quantize_per_tensor_int8(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-tensor INT8 codes of ``x`` with its abs-max as the clip, by one compiled kernel.

    Args:
        x (Tensor[...], float32): Values (at least one dim).

    Returns:
        tuple: codes (Tensor[...], int8, as :func:`quantize_int8` gives them for the step) and
        the step ``clip_to_scale(abs-max, abs-max, 127)`` (Tensor[], float32).
    """
    require_extension('quantize_per_tensor_int8')
    return torch.ops.mmdaq.quantize_per_tensor_int8(x)


def quantize_per_tensor_int8_applies(x: Tensor) -> bool:
    """Whether :func:`quantize_per_tensor_int8` is built for ``x``'s device and takes ``x``."""
    return x.dim() > 0 and x.dtype == torch.float32 and \
        compiled_op_available('quantize_per_tensor_int8', x.device)


def quantize_int8_applies(x: Tensor) -> bool:
    """Whether :func:`quantize_int8` and :func:`quantize_int8_stochastic` are built for
    ``x``'s device and take ``x`` (not 0-d)."""
    return x.dim() > 0 and compiled_op_available('quantize_int8', x.device) and \
        compiled_op_available('quantize_int8_stochastic', x.device)


@register_fake_if_built('mmdaq::clip_to_scale')
def _clip_to_scale_fake(clip: Tensor, data_max: Tensor, qmax: int) -> Tensor:
    torch._check(clip.shape == data_max.shape,
                 lambda: 'clip_to_scale: clip and data_max must have one shape and device')
    return torch.empty_like(clip)


def clip_to_scale(clip: Tensor, data_max: Tensor, qmax: int) -> Tensor:
    """The step ``clip / qmax`` of the symmetric quantizer, with its non-finite policy, in one
    compiled kernel (a dozen small elementwise launches in eager PyTorch).

    Args:
        clip (Tensor[] or Tensor[C], float32): Clip per tensor or per channel.
        data_max (Tensor, float32): Abs-max of the data, shaped like ``clip``.
        qmax (int): Largest code.

    Returns:
        Tensor, float32, shaped like ``clip``: NaN where ``clip`` or ``data_max`` is not
        finite or ``clip < 0``; one ulp below ``clip / qmax`` where ``qmax`` times it would
        overflow.
    """
    require_extension('clip_to_scale')
    return torch.ops.mmdaq.clip_to_scale(clip, data_max, qmax)


def clip_to_scale_reference(clip: Tensor, data_max: Tensor, qmax: int) -> Tensor:
    """Plain-PyTorch twin of :func:`clip_to_scale` (any shapes that broadcast)."""
    valid = torch.isfinite(data_max) & torch.isfinite(clip) & (clip >= 0)
    scale = clip / qmax
    # qmax * scale may round up past the float32 maximum when clip is within an ulp of it.
    scale = torch.where(torch.isinf(scale * qmax), torch.nextafter(scale, torch.zeros_like(scale)),
                        scale)
    return torch.where(valid, scale, torch.full_like(scale, float('nan')))
