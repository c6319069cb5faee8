"""Fused INT8 quantization of X and W in Triton: abs-max, step and codes on the device, no sync.

:func:`quantize_per_tensor_triton` gives the codes and step of :func:`mmdaq.quantization.quantize`
(per tensor, nearest rounding) in two launches and without reading anything back to the host:

1. ``_abs_max_kernel``: each program reduces its tiles of ``x`` to one partial abs-max, written
   to a small buffer (at most ``_MAX_PARTIALS`` values);
2. ``_codes_kernel``: each program reduces that buffer itself (a few hundred floats, from L2),
   turns the abs-max into the step exactly as ``clip_to_scale`` does, and writes the int8 codes
   of its tiles; program 0 also writes the step.

The codes of a 4-D (5-D) input are written channels last (channels last 3d), the order the
implicit-GEMM kernels read, whatever the memory format of the input: the transpose is done by
the tiles of the codes kernel, not by a separate copy. :func:`quantize_weight_triton` quantizes
weights per tensor the same way (contiguous codes) or per output channel in one launch.

The arithmetic is that of :func:`mmdaq.kernels.quantize_int8_reference` and
:func:`mmdaq.kernels.clip_to_scale_reference`, and the results are bit-identical (tested):
``scale = clip / Q`` (IEEE division, nudged one ulp down where ``Q * scale`` would overflow), codes
``round_half_even(clamp(x / scale, -Q, Q))`` (IEEE division), 0 for a zero step; a tensor (or
channel) holding NaN or Inf gets a NaN step and zero codes. One difference: where the abs-max is
zero, the step is +0.0, while the reference's may be -0.0 (its ``max(amax(x), -amin(x))`` keeps
the sign of a zero depending on the signs and order of the zeros); the two compare equal.

``TRITON_INTERPRET=1`` runs the kernels on CPU tensors (slowly), which is how the tests check them
without a GPU.
"""
import contextlib
import math
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..quantization.quantize import max_code
from .triton_launch import launch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

#: Float dtypes the Triton kernels of mmdaq read and write.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_BLOCK = 1024  # elements per tile
_MAX_PARTIALS = 256  # programs of the abs-max kernel: partial maxima each codes program reduces
_MAX_CODE_PROGRAMS = 4096  # programs of the codes kernel; each loops over its share of tiles
_MAX_DIMS = 5  # dims of the strided traversal after merging; more falls back to a copy

if triton is not None:

    @triton.jit
    def _tile_offsets(t, s1, s2, s3, s4, t0, t1, t2, t3, t4,
                      BLOCK_J: tl.constexpr, BLOCK_C: tl.constexpr):
        # Tile t of a 5-D traversal (sizes s0..s4, input strides t0..t4; s0 is implied): one
        # BLOCK_J x BLOCK_C block of the last two dims at one index of the first three.
        # Returns the input offsets, the offsets in the contiguous output and the mask.
        t = tl.cast(t, tl.int64)
        c_tiles = tl.cdiv(s4, BLOCK_C)
        j_tiles = tl.cdiv(s3, BLOCK_J)
        cb = t % c_tiles
        t = t // c_tiles
        jb = t % j_tiles
        b = t // j_tiles  # flat index over dims 0..2
        b2 = b % s2
        b1 = (b // s2) % s1
        b0 = b // s2 // s1
        j = jb * BLOCK_J + tl.arange(0, BLOCK_J).to(tl.int64)
        c = cb * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
        mask = (j < s3)[:, None] & (c < s4)[None, :]
        src = (b0 * t0 + b1 * t1 + b2 * t2) + j[:, None] * t3 + c[None, :] * t4
        dst = (b * s3 + j[:, None]) * s4 + c[None, :]
        return src, dst, mask

    @triton.jit
    def _abs_or_inf(v):
        # |v| in float32, +inf for NaN: the abs-max is then finite exactly when the data are.
        v = v.to(tl.float32)
        return tl.where(v == v, tl.abs(v), float('inf'))

    @triton.jit
    def _step_from_max(data_max, QMAX: tl.constexpr):
        # clip_to_scale(clip=data_max, data_max, QMAX) for data_max >= 0 (+inf if not finite).
        step = tl.math.div_rn(data_max, QMAX * 1.0)
        # QMAX * step may round past the float32 maximum: take the next float towards zero.
        below = (step.to(tl.int32, bitcast=True) - 1).to(tl.float32, bitcast=True)
        step = tl.where(step * QMAX == float('inf'), below, step)
        return tl.where(data_max < float('inf'), step, float('nan'))

    @triton.jit
    def _codes(v, step, QMAX: tl.constexpr):
        # int8 codes of v (any float dtype) for one step: round_half_even(clamp(v / step)),
        # 0 where the step is not positive (zero or NaN) or v is not finite.
        v = v.to(tl.float32)
        v = tl.where(tl.abs(v) < float('inf'), v, 0.0)  # code 0; no NaN in the float -> int
        usable = step > 0.0
        q = tl.math.div_rn(v, tl.where(usable, step, 1.0))
        q = tl.minimum(tl.maximum(q, -QMAX * 1.0), QMAX * 1.0)
        # Round half to even from exact operations only (floor, a subtraction within one
        # binade, the parity of a small integer), so no rounding mode or fast-math can change it.
        f = tl.floor(q)
        frac = q - f
        odd = (f.to(tl.int32) & 1) != 0
        q = f + ((frac > 0.5) | ((frac == 0.5) & odd)).to(tl.float32)
        return tl.where(usable, q, 0.0).to(tl.int8)

    @triton.jit
    def _abs_max_kernel(x_ptr, part_ptr, num_tiles, s1, s2, s3, s4, t0, t1, t2, t3, t4,
                        BLOCK_J: tl.constexpr, BLOCK_C: tl.constexpr):
        # x: float [traversal s0..s4 with strides t0..t4]; part: float32 [num_programs], the
        # abs-max of the tiles pid, pid + num_programs, ... (+inf if any is NaN or Inf).
        pid = tl.program_id(0)
        acc = tl.zeros((BLOCK_J, BLOCK_C), dtype=tl.float32)
        for t in range(pid, num_tiles, tl.num_programs(0)):
            src, _, mask = _tile_offsets(t, s1, s2, s3, s4, t0, t1, t2, t3, t4, BLOCK_J, BLOCK_C)
            v = tl.load(x_ptr + src, mask=mask, other=0.0)
            acc = tl.maximum(acc, _abs_or_inf(v))
        tl.store(part_ptr + pid, tl.max(acc))

    @triton.jit
    def _codes_kernel(x_ptr, part_ptr, num_partials, codes_ptr, step_ptr, num_tiles,
                      s1, s2, s3, s4, t0, t1, t2, t3, t4, QMAX: tl.constexpr,
                      PARTIALS: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_C: tl.constexpr):
        # part: float32 [num_partials] from _abs_max_kernel; codes: int8, contiguous in the
        # traversal order; step: float32 [], written by program 0.
        pid = tl.program_id(0)
        offs = tl.arange(0, PARTIALS)
        part = tl.load(part_ptr + offs, mask=offs < num_partials, other=0.0)
        step = _step_from_max(tl.max(part), QMAX)
        if pid == 0:
            tl.store(step_ptr, step)
        for t in range(pid, num_tiles, tl.num_programs(0)):
            src, dst, mask = _tile_offsets(t, s1, s2, s3, s4, t0, t1, t2, t3, t4,
                                           BLOCK_J, BLOCK_C)
            v = tl.load(x_ptr + src, mask=mask, other=0.0)
            tl.store(codes_ptr + dst, _codes(v, step, QMAX), mask=mask)

    @triton.jit
    def _row_offsets(i, s2, s3, s4, t1, t2, t3, t4):
        # Input offsets of the flat indices i (int64) of a row traversed as [s1, s2, s3, s4]
        # (s1 implied) with strides t1..t4.
        i4 = i % s4
        i = i // s4
        i3 = i % s3
        i = i // s3
        return (i // s2) * t1 + (i % s2) * t2 + i3 * t3 + i4 * t4

    @triton.jit
    def _per_channel_kernel(w_ptr, codes_ptr, step_ptr, row_len, stride0,
                            s2, s3, s4, t1, t2, t3, t4, QMAX: tl.constexpr,
                            BLOCK: tl.constexpr):
        # One program per output channel (row of w): its abs-max, its step (step[row]) and the
        # codes of its row_len elements (codes: int8 [C_out, row_len], contiguous). The second
        # pass reads the row again, from cache for weight-sized rows.
        row = tl.program_id(0).to(tl.int64)
        base = row * stride0
        acc = tl.zeros((BLOCK, ), dtype=tl.float32)
        for start in range(0, row_len, BLOCK):
            i = start + tl.arange(0, BLOCK).to(tl.int64)
            src = base + _row_offsets(i, s2, s3, s4, t1, t2, t3, t4)
            v = tl.load(w_ptr + src, mask=i < row_len, other=0.0)
            acc = tl.maximum(acc, _abs_or_inf(v))
        step = _step_from_max(tl.max(acc), QMAX)
        tl.store(step_ptr + row, step)
        for start in range(0, row_len, BLOCK):
            i = start + tl.arange(0, BLOCK).to(tl.int64)
            src = base + _row_offsets(i, s2, s3, s4, t1, t2, t3, t4)
            v = tl.load(w_ptr + src, mask=i < row_len, other=0.0)
            tl.store(codes_ptr + row * row_len + i, _codes(v, step, QMAX), mask=i < row_len)


class _Traversal(NamedTuple):
    """A tensor walked as 5 dims (sizes, strides in elements) in tiles of the last two."""
    sizes: Tuple[int, ...]
    strides: Tuple[int, ...]
    block_j: int
    block_c: int

    @property
    def num_tiles(self) -> int:
        s0, s1, s2, s3, s4 = self.sizes
        return s0 * s1 * s2 * triton.cdiv(s3, self.block_j) * triton.cdiv(s4, self.block_c)

    def kernel_args(self) -> Tuple[int, ...]:
        """``s1..s4, t0..t4`` as the kernels take them (``s0`` is implied by the tile count)."""
        return self.sizes[1:] + self.strides


def quantize_per_tensor_triton(x: Tensor, num_bits: int = 8) -> Tuple[Tensor, Tensor]:
    """``quantize(x, num_bits=num_bits)`` (per tensor, nearest) in two Triton launches.

    Bit-identical to :func:`mmdaq.quantization.quantize` in codes and step, including all-zero
    and empty tensors (step 0, codes 0) and tensors holding NaN or Inf (NaN step, codes 0), except
    that a zero step is always +0.0 (the reference's can be -0.0 for data of signed zeros). No
    host sync: the step stays a device tensor.

    Launches: exactly 2 (``_abs_max_kernel``, ``_codes_kernel``), also for an empty ``x``.
    Inputs whose strides do not merge into 5 dims (only possible with 6 or more dims) are first
    copied to the codes' memory format by PyTorch (one extra copy).

    Args:
        x (Tensor[...], float32/float16/bfloat16): Values; any shape, strides and memory format.
        num_bits (int): Bit width, 2 to 8 (``Q = 2**(num_bits - 1) - 1``). Defaults to 8.

    Returns:
        tuple[Tensor, Tensor]:
            - codes (Tensor[...], int8): x's shape, in ``[-Q, Q]``; channels_last in memory for a
              4-D ``x``, channels_last_3d for a 5-D ``x``, contiguous otherwise.
            - scale (Tensor[], float32): The step ``abs_max(x) / Q``, on x's device.
    """
    return _quantize_per_tensor(x, num_bits, torch.empty(
        x.shape, dtype=torch.int8, device=x.device, memory_format=_codes_format(x.dim())))


def quantize_weight_triton(w: Tensor, num_bits: int = 8, per_channel: bool = False,
                           memory_order: Optional[Sequence[int]] = None
                           ) -> Tuple[Tensor, Tensor]:
    """Weight codes and step(s) in Triton: ``quantize(w)`` or ``quantize(w, dim=0)``.

    Bit-identical to :func:`mmdaq.quantization.quantize` (nearest rounding), with its zero and
    non-finite policy per tensor or per output channel, except that a zero step is always +0.0.
    No host sync.

    Launches: 2 per tensor (as :func:`quantize_per_tensor_triton`); 1 per channel (one program
    per output channel), none for a weight with no output channel.

    Args:
        w (Tensor[C_out, ...], float32/float16/bfloat16): Weight; any strides.
        num_bits (int): Bit width, 2 to 8. Defaults to 8.
        per_channel (bool): One step per output channel (dim 0) instead of one per tensor.
            Defaults to False.
        memory_order (Sequence[int], optional): Lay the codes out in memory as w permuted to
            this order (e.g. :data:`.triton_conv.FORWARD_WEIGHT_ORDER`, the order the GEMM
            kernels read without a copy); per tensor only. Defaults to None (contiguous).

    Returns:
        tuple[Tensor, Tensor]:
            - codes (Tensor[C_out, ...], int8): w's shape; contiguous, or a view of a
              contiguous tensor in ``memory_order``.
            - scale (Tensor[] or Tensor[C_out] if ``per_channel``, float32): On w's device.
    """
    if memory_order is not None:
        if per_channel or sorted(memory_order) != list(range(w.dim())):
            raise ValueError(f'memory_order must be a permutation of the {w.dim()} dims of w, '
                             f'per tensor only, but got {memory_order!r} (per_channel='
                             f'{per_channel})')
        inverse = [list(memory_order).index(d) for d in range(w.dim())]
        codes = torch.empty([w.shape[d] for d in memory_order], dtype=torch.int8,
                            device=w.device).permute(inverse)
        return _quantize_per_tensor(w, num_bits, codes)
    if not per_channel:
        return _quantize_per_tensor(w, num_bits, torch.empty(w.shape, dtype=torch.int8,
                                                             device=w.device))
    qmax = max_code(num_bits)
    _check_input(w, 'w')
    if w.dim() == 0:
        raise ValueError('per_channel quantization needs a weight with at least one dim, '
                         'but got a 0-d tensor')
    rows = _merged_dims(w.shape[1:], w.stride()[1:])
    if len(rows) > 4:
        w = w.contiguous()
        rows = _merged_dims(w.shape[1:], w.stride()[1:])
    rows = [(1, 0)] * (4 - len(rows)) + rows
    codes = torch.empty(w.shape, dtype=torch.int8, device=w.device)
    scale = torch.empty(w.shape[0], dtype=torch.float32, device=w.device)
    if w.shape[0] == 0:
        return codes, scale
    row_len = math.prod(w.shape[1:])
    sizes, strides = zip(*rows)
    with _device_of(w):
        launch(_per_channel_kernel, (w.shape[0], ), w, codes, scale, row_len, w.stride(0),
               *sizes[1:], *strides, QMAX=qmax, BLOCK=min(_BLOCK, _next_pow2(row_len)))
    return codes, scale


def _quantize_per_tensor(x: Tensor, num_bits: int, codes: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-tensor codes (into ``codes``, int8 of x's shape, any strides without overlap) and
    step of ``x``: the two launches."""
    qmax = max_code(num_bits)
    _check_input(x, 'x')
    read = _walk_dims(x, _dims_by_stride(x))  # x in (about) its memory order
    write = _walk_dims(x, _dims_by_stride(codes))  # x in the memory order of the codes
    if max(len(read), len(write)) > _MAX_DIMS:
        x = x.contiguous()
        codes_flat = torch.empty(x.shape, dtype=torch.int8, device=x.device)
        step = _quantize_per_tensor(x, num_bits, codes_flat)[1]
        return codes.copy_(codes_flat), step
    read_walk, write_walk = _traversal(read), _traversal(write)
    num_partials = max(1, min(read_walk.num_tiles, _MAX_PARTIALS))
    partials = torch.empty(num_partials, dtype=torch.float32, device=x.device)
    scale = torch.empty((), dtype=torch.float32, device=x.device)
    programs = max(1, min(write_walk.num_tiles, _MAX_CODE_PROGRAMS))
    with _device_of(x):
        launch(_abs_max_kernel, (num_partials, ), x, partials, read_walk.num_tiles,
               *read_walk.kernel_args(), BLOCK_J=read_walk.block_j, BLOCK_C=read_walk.block_c)
        launch(_codes_kernel, (programs, ), x, partials, num_partials, codes, scale,
               write_walk.num_tiles, *write_walk.kernel_args(), QMAX=qmax,
               PARTIALS=_next_pow2(num_partials), BLOCK_J=write_walk.block_j,
               BLOCK_C=write_walk.block_c)
    return codes, scale


def _check_input(x: Tensor, name: str) -> None:
    """Raise a TypeError unless ``x`` is a float32, float16 or bfloat16 tensor."""
    if not isinstance(x, Tensor) or x.dtype not in FLOAT_DTYPES:
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f'{name} must be a float32, float16 or bfloat16 tensor, but got {got}')
    if triton is None:
        raise RuntimeError('quantizing with Triton needs triton installed')


def _codes_format(ndim: int) -> torch.memory_format:
    """Memory format of the activation codes: the NHWC (NDHWC) order the GEMM kernels read."""
    if ndim == 4:
        return torch.channels_last
    if ndim == 5:
        return torch.channels_last_3d
    return torch.contiguous_format


def _dims_by_stride(t: Tensor) -> List[int]:
    """Dims of ``t`` from the largest stride to the smallest (ties keep the dim order)."""
    return sorted(range(t.dim()), key=lambda d: -t.stride(d))


def _walk_dims(x: Tensor, order: List[int]) -> List[Tuple[int, int]]:
    """``(size, stride)`` of x's dims taken in ``order`` (outer to inner), merged."""
    return _merged_dims([x.shape[d] for d in order], [x.stride(d) for d in order])


def _merged_dims(sizes, strides) -> List[Tuple[int, int]]:
    """``(size, stride)`` of the dims, outer to inner, with size-1 dims dropped and neighbours
    merged where the outer stride is the inner one times the inner size.

    Example:
        >>> _merged_dims([2, 3, 4], [12, 4, 1])  # contiguous: one dim
        [(24, 1)]
    """
    if 0 in sizes:
        return [(0, 1)]
    merged: List[Tuple[int, int]] = []
    for size, stride in reversed(list(zip(sizes, strides))):
        if size == 1:
            continue
        if merged and stride == merged[-1][0] * merged[-1][1]:
            merged[-1] = (merged[-1][0] * size, merged[-1][1])
        else:
            merged.append((size, stride))
    return list(reversed(merged)) or [(1, 1)]


def _traversal(dims: List[Tuple[int, int]]) -> _Traversal:
    """Pad ``dims`` (at most 5, outer to inner) to 5 and choose the tile of the last two.

    A unit-stride inner dim gets long tiles along it (coalesced reads and writes); otherwise the
    tile is at most 32 wide there and long along the dim before it (a transpose, e.g. NCHW data
    to NHWC codes: reads along HW, writes along C).
    """
    dims = [(1, 0)] * (_MAX_DIMS - len(dims)) + dims
    sizes, strides = zip(*dims)
    inner_cap = _BLOCK if strides[-1] == 1 else 32
    block_c = min(_next_pow2(sizes[-1]), inner_cap)
    block_j = min(_next_pow2(sizes[-2]), _BLOCK // block_c)
    return _Traversal(tuple(sizes), tuple(strides), block_j, block_c)


def _next_pow2(n: int) -> int:
    """Smallest power of two >= max(n, 1)."""
    return 1 << max(n - 1, 0).bit_length()


def _device_of(x: Tensor):
    """Context that makes x's GPU the current one (Triton launches on the current device)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
