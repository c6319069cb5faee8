"""ShiftMM: exact integer GEMM with one left shift per reduction index (ShiftQuant's GEMM).

With power-of-two scales along the reduction axis K, ``s_k = s0 * 2**-e_k``, a group-quantized
product needs no per-group GEMMs and no gathering of K by group: each term is shifted before
it is accumulated, and one float rescale per output remains::

    acc[m, n] = sum_k (a[m, k] * b[k, n]) << shift[k]       shift[k] = e_max - e_k >= 0
    out[m, n] = acc[m, n] * s0 * 2**-e_max (* the scales of the non-reduction axes)

Shifting left into a wide accumulator is exact; no bit is lost.

Accumulator width: a term is at most ``|a|max |b|max 2**shift_max`` in size, so an int32
accumulator holds ``(2**31 - 1) // (|a|max |b|max 2**shift_max)`` terms
(:func:`int32_chunk_k`; about ``b_a + b_b - 2 + shift_max + log2 K <= 31`` bits). Both backends
split K so that no partial sum can overflow and add the chunk results in int64:

* ``'float_exact'`` (default): float GEMMs on the shifted codes, K split so that every
  partial sum is an integer below 2**24 (float32) or, when that would leave chunks shorter
  than 64, below 2**53 (float64): exact whatever the summation order. FP32 speed on any device.
* ``'int32'``: integer GEMMs with int32 accumulation over :func:`int32_chunk_k` terms (CPU;
  the literal integer kernel, slower). Equal to ``'float_exact'`` bit for bit (tested).

Two plain-PyTorch references for tests: :func:`shift_matmul_dequantized_reference`
(dequantize, then a float64 GEMM) and :func:`shift_matmul_rearranged_reference` (what
ordinary group quantization does: gather K by group, one GEMM per group, add the rescaled
partial products).
"""
from typing import Optional

import torch
from torch import Tensor

BACKENDS = ('float_exact', 'int32')

_INT32_MAX = 2**31 - 1
_FLOAT32_EXACT = 2**24
_FLOAT64_EXACT = 2**53
_MIN_FLOAT32_CHUNK = 64


def _check_operands(a: Tensor, b: Tensor, shift: Tensor) -> None:
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise TypeError(f'shift_matmul operands must be int8, but got {a.dtype} and {b.dtype}')
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f'shift_matmul needs [M, K] @ [K, N], but got {tuple(a.shape)} @ '
                         f'{tuple(b.shape)}')
    if shift.shape != (a.shape[1], ) or shift.dtype.is_floating_point:
        raise ValueError(f'shift must be an integer Tensor[K] with K = {a.shape[1]}, but got '
                         f'{shift.dtype} of shape {tuple(shift.shape)}')


def term_bound(a: Tensor, b: Tensor, shift: Tensor) -> int:
    """Largest possible |term| ``|a|max |b|max 2**shift_max`` (>= 1)."""
    a_max = int(a.abs().amax()) if a.numel() else 0
    b_max = int(b.abs().amax()) if b.numel() else 0
    s_max = int(shift.amax()) if shift.numel() else 0
    if s_max > 40:  # beyond any group count: the float path could not stay exact
        raise ValueError(f'shift must be <= 40, but got a maximum of {s_max}')
    return max(a_max * b_max << s_max, 1)


def int32_chunk_k(term: int) -> int:
    """How many terms of size up to ``term`` an int32 accumulator sums without overflow."""
    return max(_INT32_MAX // term, 1)


def shift_matmul(a: Tensor, b: Tensor, shift: Tensor, backend: str = 'float_exact',
                 out_dtype: torch.dtype = torch.int64) -> Tensor:
    """Exact ``sum_k a[m, k] b[k, n] 2**shift[k]``.

    Args:
        a (Tensor[M, K], int8): Left codes.
        b (Tensor[K, N], int8): Right codes.
        shift (Tensor[K], integer): Left shift of each reduction index, >= 0.
        backend (str): ``'float_exact'`` or ``'int32'`` (module doc). Defaults to
            'float_exact'.
        out_dtype (torch.dtype): int64 (exact), or float32/float64 for a caller that rescales
            in float anyway: the exact sum rounded once to that dtype (no int64 pass).
            Defaults to torch.int64.

    Returns:
        Tensor[M, N], ``out_dtype``.
    """
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, but got {backend!r}')
    if out_dtype not in (torch.int64, torch.float32, torch.float64):
        raise ValueError(f'out_dtype must be torch.int64, torch.float32 or torch.float64, but '
                         f'got {out_dtype}')
    _check_operands(a, b, shift)
    if bool((shift < 0).any()) if shift.numel() else False:
        raise ValueError('shift must be >= 0 everywhere (a left shift), but got a negative one')
    m, k = a.shape
    n = b.shape[1]
    if not m or not n or not k:
        return torch.zeros(m, n, dtype=out_dtype, device=a.device)
    term = term_bound(a, b, shift)
    if backend == 'int32':
        if term > _INT32_MAX:
            raise ValueError(f'one term of size {term} must fit int32 for backend=\'int32\'; '
                             'use backend=\'float_exact\'')
        chunk, dtype = int32_chunk_k(term), torch.int32
    else:
        chunk, dtype = (_FLOAT32_EXACT - 1) // term, torch.float32
        if chunk < _MIN_FLOAT32_CHUNK:
            chunk, dtype = max((_FLOAT64_EXACT - 1) // term, 1), torch.float64
    # Chunk results are exact integers; they add exactly in int64, or in float64 while the
    # total stays below 2**53 (the float outputs), else in int64.
    acc_dtype = torch.int64 if out_dtype == torch.int64 or k * term >= _FLOAT64_EXACT \
        else torch.float64
    # The shift goes onto the smaller operand's rows or columns: still exact, fewer products.
    shift_a = a.shape[0] < b.shape[1]
    out: Optional[Tensor] = None
    for k0 in range(0, k, chunk):
        a_c, b_c, s_c = a[:, k0:k0 + chunk], b[k0:k0 + chunk], shift[k0:k0 + chunk]
        if dtype == torch.int32:
            factor = torch.ones_like(s_c, dtype=torch.int32) << s_c.int()
        else:
            factor = torch.ldexp(torch.ones_like(s_c, dtype=dtype), s_c)
        if shift_a:
            part = (a_c.to(dtype) * factor) @ b_c.to(dtype)
        else:
            part = a_c.to(dtype) @ (b_c.to(dtype) * factor.unsqueeze(1))
        if k <= chunk:  # one chunk: already exact, round once
            return part.to(out_dtype)
        out = part.to(acc_dtype) if out is None else out.add_(part.to(acc_dtype))
    return out.to(out_dtype)


def shift_matmul_int_reference(a: Tensor, b: Tensor, shift: Tensor) -> Tensor:
    """int64 ``a @ (b << shift)`` in plain integer arithmetic (CPU; slow; for tests)."""
    _check_operands(a, b, shift)
    return a.long() @ (b.long() << shift.long().unsqueeze(1))


def shift_matmul_dequantized_reference(a: Tensor, a_scale: Tensor, b: Tensor,
                                       b_scale: Tensor) -> Tensor:
    """Dequantize-then-GEMM in float64: ``(a * a_scale) @ (b * b_scale)``.

    Args:
        a (Tensor[M, K], int8): Left codes.
        a_scale (Tensor[K]): Scale of each reduction index of ``a``.
        b (Tensor[K, N], int8): Right codes.
        b_scale (Tensor[K] or Tensor[]): Scale of each reduction index of ``b``.

    Returns:
        Tensor[M, N], float64.
    """
    return (a.double() * a_scale.double()) @ (b.double() * b_scale.double().reshape(-1, 1))


def shift_matmul_rearranged_reference(a: Tensor, a_scale: Tensor, b: Tensor,
                                      b_scale: Optional[Tensor] = None) -> Tensor:
    """Ordinary group quantization's GEMM: gather K by scale, one GEMM per group, rescale, add.

    Args:
        a (Tensor[M, K], int8): Left codes.
        a_scale (Tensor[K]): Scale of each reduction index of ``a`` (few distinct values).
        b (Tensor[K, N], int8): Right codes.
        b_scale (Tensor[], optional): Per-tensor scale of ``b``. Defaults to None (1).

    Returns:
        Tensor[M, N], float64.
    """
    order = torch.argsort(a_scale, stable=True)  # the memory rearrangement ShiftMM avoids
    a_sorted, b_sorted, s_sorted = a[:, order], b[order], a_scale[order]
    values, counts = torch.unique_consecutive(s_sorted, return_counts=True)
    out = torch.zeros(a.shape[0], b.shape[1], dtype=torch.float64, device=a.device)
    start = 0
    for value, count in zip(values.tolist(), counts.tolist()):
        part = a_sorted[:, start:start + count].long() @ b_sorted[start:start + count].long()
        out += part.double() * value
        start += count
    return out if b_scale is None else out * float(b_scale)
