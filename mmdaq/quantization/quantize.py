"""Symmetric INT8 quantization as used by DAQ (Zhao et al., AAAI 2021).

The quantizer has no zero point and uses ``Q = 2**(num_bits - 1) - 1`` levels on each side of zero
(``Q = 127`` for INT8, so the code -128 is never produced)::

    scale = clip / Q
    q     = round(clamp(x, -clip, clip) / scale)      # int8 code in [-Q, Q]
    x_hat = q * scale

``clip`` defaults to the abs-max of the tensor (per-tensor) or of each channel (per-channel).
Values beyond ``clip`` saturate to ``+-Q``.

Rounding:
    * ``'nearest'``: ``torch.round``, i.e. round half to even. The paper writes plain ``round``;
      ties are a measure-zero event for real data, so the tie rule does not matter.
    * ``'stochastic'``: ``floor(v) + (u < v - floor(v))`` with ``u ~ U[0, 1)`` drawn from the
      given ``torch.Generator``. This equals ``floor(v + u)`` in distribution, is unbiased
      (``E[q] = v`` inside the clip range) and, unlike ``floor(v + u)`` in float32, can never
      round ``Q`` up to ``Q + 1``.

Numerics:
    All arithmetic is float32 whatever the input dtype (float32, float16 or bfloat16). Codes are
    computed as ``x / scale``, never as ``x * (Q / clip)``: ``Q / clip`` overflows for tiny clips
    and ``x * Q`` overflows near the float32 maximum, while ``x / scale`` only overflows for
    values that saturate anyway (``inf`` clamps to ``+-Q``). If ``clip`` is within one ulp of the
    float32 maximum the scale is nudged one ulp down, so that ``Q * scale`` stays finite. If
    ``clip / Q`` underflows to 0 (``clip`` below about 1.8e-43, all values subnormal) the scale is
    0 and the codes are 0.

Zero policy:
    An all-zero tensor (per-tensor) or channel (per-channel), or a clip of 0, gives scale 0 and
    codes 0; :func:`dequantize` returns exact zeros there (no 0/0). Empty tensors are allowed.

Non-finite policy:
    NaN and Inf are never silently made finite. If a tensor (per-tensor) or a channel
    (per-channel) holds a NaN or an Inf, its scale is NaN and its codes are 0, so the dequantized
    values and every GEMM result rescaled by that scale are NaN, and the overflow checks of
    mmengine's optimizer wrappers and of AMP's GradScaler see it. A clip that is NaN, Inf or
    negative is invalid and also gives a NaN scale. Values that are finite, however large
    (``1e30``, the float32 maximum), quantize normally. To see NaN/Inf per channel, the abs-max
    reduction runs even when a clip is given (or its result is passed in as ``data_max``).
"""
from typing import Any, Optional, Tuple, Union

import torch
from torch import Tensor

from ..kernels import (clip_to_scale, clip_to_scale_reference, compiled_op_available, quantize_int8,
                       quantize_int8_applies, quantize_int8_pair, quantize_int8_reference,
                       quantize_int8_stochastic, quantize_per_tensor_int8,
                       quantize_per_tensor_int8_applies)

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_ROUNDING_MODES = ('nearest', 'stochastic')

Clip = Union[float, Tensor]


def max_code(num_bits: int = 8) -> int:
    """Largest code ``Q = 2**(num_bits - 1) - 1`` of the symmetric quantizer.

    Args:
        num_bits (int): Bit width, 2 to 8 (codes are stored as int8). Defaults to 8.

    Returns:
        int: ``Q`` (127 for INT8).
    """
    if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not 2 <= num_bits <= 8:
        raise ValueError(f'num_bits must be an int in [2, 8], but got {num_bits!r}')
    return 2**(num_bits - 1) - 1


def abs_max(x: Tensor, dim: Optional[int] = None) -> Tensor:
    """Abs-max of a tensor or of each channel along ``dim``, in float32.

    NaN propagates (the result is NaN) and an Inf gives Inf, so the result is finite exactly when
    the tensor or channel is. Empty tensors and channels give 0.

    Args:
        x (Tensor[...], float32/float16/bfloat16): Input.
        dim (int, optional): Channel dimension; ``None`` reduces over everything.
            Defaults to None.

    Returns:
        Tensor[] if ``dim`` is None else Tensor[x.shape[dim]], float32.
    """
    x = _as_float32(x, 'x')
    dim = _normalize_dim(dim, x.dim())
    if dim is None:
        if not x.numel():
            return x.new_zeros(())
        low, high = torch.aminmax(x)  # one pass, no |x| temporary; NaN propagates
        return torch.maximum(high, -low)
    reduce_dims = [d for d in range(x.dim()) if d != dim]
    if x.numel() == 0:
        return x.new_zeros((x.shape[dim], ))
    if not reduce_dims:  # 1-D input: each element is its own channel; amax(()) would reduce all
        return x.abs()
    # Two reductions and no |x| temporary (x.abs().amax() writes and reads one the size of x).
    return torch.maximum(x.amax(dim=reduce_dims), -x.amin(dim=reduce_dims))


@torch.no_grad()
def quantize(x: Tensor,
             clip: Optional[Clip] = None,
             dim: Optional[int] = None,
             rounding: str = 'nearest',
             generator: Optional[torch.Generator] = None,
             *,
             num_bits: int = 8,
             data_max: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Quantize ``x`` to symmetric integer codes, per tensor or per channel.

    Not differentiable: gradients are defined by the ops layer.

    Args:
        x (Tensor[...], float32/float16/bfloat16): Values to quantize.
        clip (float | Tensor[] | Tensor[C], optional): Clipping value ``s``; a per-channel
            Tensor[C] needs ``dim``. Defaults to None (abs-max of the tensor or of each channel).
        dim (int, optional): Channel dimension for per-channel quantization (negative allowed);
            ``None`` is per-tensor. Defaults to None.
        rounding (str): ``'nearest'`` or ``'stochastic'``. Defaults to ``'nearest'``.
        generator (torch.Generator, optional): Source of the uniform noise for stochastic
            rounding (on ``x.device``); ignored for nearest. Defaults to None (global RNG).
        num_bits (int): Bit width, 2 to 8. Defaults to 8.
        data_max (Tensor[] or Tensor[C], optional): ``abs_max(x, dim)`` when the caller already
            has it (e.g. from the gradient statistics kernel); it must be that value (NaN where
            the data hold NaN), and saves the pass over ``x`` that computes it. Defaults to None.

    Returns:
        tuple[Tensor, Tensor]:
            - q (Tensor[...], int8): Codes in ``[-Q, Q]``, same shape as ``x``.
            - scale (Tensor[] or Tensor[C], float32): ``clip / Q``; 0 for all-zero data or a
              zero clip, NaN where the data hold NaN/Inf or the clip is invalid.

    Examples:
        >>> q, scale = quantize(torch.tensor([0.5, -1.2, 2.0]))  # scale = 2 / 127
        >>> q.tolist(), round(scale.item() * 127, 6)
        ([32, -76, 127], 2.0)
    """
    qmax = max_code(num_bits)
    if rounding not in _ROUNDING_MODES:
        raise ValueError(f'rounding must be one of {_ROUNDING_MODES}, but got {rounding!r}')
    x = _as_float32(x, 'x')
    dim = _normalize_dim(dim, x.dim())
    if clip is None and dim is None and data_max is None and rounding == 'nearest' \
            and qmax == 127 and quantize_per_tensor_int8_applies(x):
        # Abs-max, step and codes in one compiled op (the same values, tested bit-exact).
        return quantize_per_tensor_int8(x)
    if data_max is None:
        data_max = abs_max(x, dim)  # [] or [C]; non-finite exactly where the data are
    else:
        data_max = _as_data_max(data_max, x, dim)
    clip = data_max if clip is None else _as_clip(clip, data_max)
    scale = _scale_from_clip(clip, data_max, qmax)  # [] or [C]
    if qmax == 127 and quantize_int8_applies(x):
        # The same codes from one fused pass of the compiled kernel (tested bit-exact); for
        # stochastic rounding the noise is a Philox stream keyed by two numbers drawn from
        # ``generator``, so a seeded generator still gives reproducible codes.
        if rounding == 'nearest':
            return quantize_int8(x, scale, 0 if dim is None else dim), scale
        seed, offset = _philox_key(generator)
        codes = quantize_int8_stochastic(x, scale, 0 if dim is None else dim, seed, offset)
        return codes, scale
    u = None if rounding == 'nearest' else torch.rand(
        x.shape, generator=generator, dtype=torch.float32, device=x.device)
    return quantize_int8_reference(x, scale, 0 if dim is None else dim, qmax=qmax, u=u), scale


def quantize_per_channel_and_tensor(x: Tensor, clip: Clip, dim: int, *, data_max: Tensor,
                                    tensor_max: Tensor, num_bits: int = 8
                                    ) -> Tuple[Tuple[Tensor, Tensor], Tuple[Tensor, Tensor]]:
    """INT8 codes of ``x`` per channel (``clip`` along ``dim``) and per tensor (its abs-max as
    the clip), nearest rounding: the two copies of a gradient the backward GEMMs take.

    The same codes and scales as ``quantize(x, clip, dim, data_max=data_max)`` and
    ``quantize(x, data_max=tensor_max)``, from one read of ``x`` where the compiled kernel is
    built for its device (tested bit-exact).

    Args:
        x (Tensor[...], float32): Values.
        clip (float | Tensor[] | Tensor[C]): Per-channel clip, see :func:`quantize`.
        dim (int): Channel dim.
        data_max (Tensor[C]): ``abs_max(x, dim)`` (keyword-only).
        tensor_max (Tensor[]): ``abs_max(x)`` (keyword-only).
        num_bits (int): Bit width of both copies, 2 to 8 (keyword-only). Defaults to 8.

    Returns:
        tuple: ``(q_c, scale_c)`` (Tensor[C] scale) and ``(q_t, scale_t)`` (Tensor[] scale).
    """
    x = _as_float32(x, 'x')
    dim = _normalize_dim(dim, x.dim())
    if num_bits != 8 or dim is None or not (
            quantize_int8_applies(x) and compiled_op_available('quantize_int8_pair', x.device)):
        return (quantize(x, clip, dim, data_max=data_max, num_bits=num_bits),
                quantize(x, data_max=tensor_max, num_bits=num_bits))
    data_max = _as_data_max(data_max, x, dim)
    tensor_max = _as_data_max(tensor_max, x, None)
    qmax = max_code(8)
    scale_c = _scale_from_clip(_as_clip(clip, data_max), data_max, qmax)
    scale_t = _scale_from_clip(tensor_max, tensor_max, qmax)
    q_c, q_t = quantize_int8_pair(x, scale_c, dim, scale_t)
    return (q_c, scale_c), (q_t, scale_t)


def dequantize(q: Tensor, scale: Union[float, Tensor], dim: Optional[int] = None) -> Tensor:
    """Map integer codes back to float32: ``q * scale``.

    A NaN scale gives NaN for the whole tensor or channel (also where ``q == 0``); a zero scale
    gives exact zeros.

    Args:
        q (Tensor[...], int8): Codes from :func:`quantize`.
        scale (float | Tensor[] | Tensor[C], float32): Scale per tensor, or per channel along
            ``dim``.
        dim (int, optional): Channel dimension of a per-channel scale. Defaults to None.

    Returns:
        Tensor[...], float32: Dequantized values, same shape as ``q``.
    """
    if not isinstance(q, Tensor) or q.dtype != torch.int8:
        got = q.dtype if isinstance(q, Tensor) else type(q).__name__
        raise TypeError(f'q must be an int8 tensor, but got {got}')
    dim = _normalize_dim(dim, q.dim())
    scale = torch.as_tensor(scale, dtype=torch.float32, device=q.device)
    expected = () if dim is None else (q.shape[dim], )
    if tuple(scale.shape) != expected:
        raise ValueError(f'scale must have shape {list(expected)} for dim={dim}, '
                         f'but got {list(scale.shape)}')
    return q.to(torch.float32) * _broadcast_channels(scale, q.dim(), dim)


def fake_quantize(x: Tensor,
                  clip: Optional[Clip] = None,
                  dim: Optional[int] = None,
                  rounding: str = 'nearest',
                  generator: Optional[torch.Generator] = None,
                  *,
                  num_bits: int = 8) -> Tensor:
    """``dequantize(*quantize(x, ...))``: the float32 value the integer path represents.

    Args:
        x (Tensor[...], float32/float16/bfloat16): Values to quantize.
        clip (float | Tensor[] | Tensor[C], optional): See :func:`quantize`. Defaults to None.
        dim (int, optional): See :func:`quantize`. Defaults to None.
        rounding (str): See :func:`quantize`. Defaults to ``'nearest'``.
        generator (torch.Generator, optional): See :func:`quantize`. Defaults to None.
        num_bits (int): See :func:`quantize`. Defaults to 8.

    Returns:
        Tensor[...], float32: Quantized-dequantized values, same shape as ``x``.
    """
    q, scale = quantize(x, clip, dim, rounding, generator, num_bits=num_bits)
    return dequantize(q, scale, dim)


def _philox_key(generator: Optional[torch.Generator]) -> Tuple[int, int]:
    """(seed, offset) of a Philox stream, drawn from ``generator`` (global RNG if None)."""
    device = generator.device if generator is not None else 'cpu'
    seed, offset = torch.randint(0, 2**62, (2, ), generator=generator, device=device).tolist()
    return seed, offset


def _as_float32(x: Tensor, name: str) -> Tensor:
    """Check that ``x`` is a supported floating tensor and return it as float32."""
    if not isinstance(x, Tensor) or x.dtype not in _FLOAT_DTYPES:
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f'{name} must be a float32, float16 or bfloat16 tensor, but got {got}; '
                        'cast float64 data with .float() first')
    return x.to(torch.float32)


def _normalize_dim(dim: Optional[int], ndim: int) -> Optional[int]:
    """Map a possibly negative ``dim`` to ``[0, ndim)``; ``None`` stays ``None``."""
    if dim is None:
        return None
    if isinstance(dim, bool) or not isinstance(dim, int) or not -ndim <= dim < ndim:
        raise ValueError(f'dim must be None or an int in [{-ndim}, {ndim}) for a {ndim}-d '
                         f'tensor, but got {dim!r}')
    return dim % ndim


def _as_data_max(data_max: Tensor, x: Tensor, dim: Optional[int]) -> Tensor:
    """Check a given abs-max: a float32 Tensor[] (per tensor) or Tensor[C] (along ``dim``)."""
    shape = () if dim is None else (x.shape[dim], )
    if not isinstance(data_max, Tensor) or tuple(data_max.shape) != shape \
            or data_max.dtype != torch.float32 or data_max.device != x.device:
        raise ValueError(f'data_max must be a float32 Tensor of shape {list(shape)} on '
                         f'{x.device} (the abs-max of x{"" if dim is None else " per channel"}), '
                         f'but got {_describe(data_max)}')
    return data_max


def _describe(t: Any) -> str:
    if isinstance(t, Tensor):
        return f'a {t.dtype} Tensor of shape {list(t.shape)} on {t.device}'
    return repr(t)


def _as_clip(clip: Clip, data_max: Tensor) -> Tensor:
    """Turn a user clip into a float32 tensor shaped like ``data_max`` ([] or [C])."""
    clip_t = torch.as_tensor(clip, dtype=torch.float32, device=data_max.device)
    if clip_t.dim() == 0:
        return clip_t.expand_as(data_max)
    if data_max.dim() == 0 or clip_t.shape != data_max.shape:
        raise ValueError(f'clip must be a scalar or, with dim set, have shape '
                         f'{list(data_max.shape)}, but got shape {list(clip_t.shape)}')
    return clip_t


def _scale_from_clip(clip: Tensor, data_max: Tensor, qmax: int) -> Tensor:
    """``clip / qmax`` with the non-finite policy applied; ``clip``, ``data_max``: [] or [C].

    One compiled op where built for the device (a dozen tiny elementwise launches otherwise,
    per quantization), else its plain-PyTorch reference; bit-identical (tested).
    """
    if compiled_op_available('clip_to_scale', clip.device):
        return clip_to_scale(clip.contiguous(), data_max.contiguous(), qmax)
    return clip_to_scale_reference(clip, data_max, qmax)


def _broadcast_channels(t: Tensor, ndim: int, dim: Optional[int]) -> Tensor:
    """View a per-channel Tensor[C] as [1, .., C, .., 1] (C at ``dim``); per-tensor unchanged."""
    if dim is None:
        return t
    shape = [1] * ndim
    shape[dim] = -1
    return t.view(shape)  # [C] -> [1, .., C, .., 1]
