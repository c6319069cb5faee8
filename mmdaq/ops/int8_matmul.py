"""INT8 x INT8 matrix product with exact integer accumulation and no int32 overflow.

Every product of two codes in [-127, 127] is at most 127 * 127 = 16129 in size, so
an int32 accumulator holds at most ``(2**31 - 1) // 16129 = 133144`` of them. The
reduction dim K of the weight-gradient GEMM is N*H*W (often millions), so
:func:`int8_matmul` splits K into chunks of :data:`MAX_CHUNK_K` = 2**17 = 131072,
each accumulated exactly in int32, and adds the chunk results in int64.

Backends, chosen per device at run time (``backend='auto'``; :func:`int8_matmul_backend` sets
what ``'auto'`` stands for inside a block):

* ``'int_mm'``: ``torch._int_mm`` (int8 tensor cores on CUDA; oneDNN VNNI/AMX
  kernels on CPUs that have them). On CPUs without VNNI/AMX it falls back to a reference
  loop slower than FP32 GEMM, so it is not used there.
* ``'float_exact'``: float32 GEMM on the integer codes, K split into chunks of
  :data:`MAX_FLOAT_EXACT_K` = 1040 so that every partial sum stays below 2**24 and
  is therefore an exact integer in float32, whatever the summation order. Same
  result as ``'int_mm'``, bit for bit, at FP32 speed.
"""
import contextlib
import warnings
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

#: Largest reduction length accumulated in one int32 GEMM: 2**17 * 127**2 < 2**31.
MAX_CHUNK_K = 1 << 17
#: Largest K whose partial sums stay below 2**24 (exact in float32): 1040 * 127**2 < 2**24.
MAX_FLOAT_EXACT_K = (1 << 24) // (127 * 127)

BACKENDS = ('auto', 'int_mm', 'float_exact')


#: /proc/cpuinfo flags of the instructions that give ``torch._int_mm`` a fast CPU kernel (VNNI,
#: AMX). ``torch.backends.cpu.get_cpu_capability()`` reports the vector ISA torch dispatches to
#: (AVX2, AVX512), not these.
INT8_CPU_FLAGS = frozenset({'avx512_vnni', 'avx_vnni', 'amx_int8'})


def _read_cpuinfo() -> Tuple[str, frozenset]:
    """Model name and :data:`INT8_CPU_FLAGS` of the first CPU in /proc/cpuinfo ('', none if
    unreadable)."""
    model = ''
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name' and not model:
                    model = value.strip()
                elif key.strip() == 'flags':
                    return model, INT8_CPU_FLAGS & frozenset(value.split())
    except OSError:
        pass
    return model, frozenset()


# Read once at import: the dispatch below runs inside traced (torch.compile) code, which cannot
# open files.
_CPU_MODEL, _CPU_INT8_FLAGS = _read_cpuinfo()


def cpu_model_name() -> str:
    """This CPU's model name from /proc/cpuinfo ('' if unreadable)."""
    return _CPU_MODEL


def cpu_isa() -> str:
    """torch's CPU capability and this CPU's int8 flags, for logs: e.g. 'AVX512,avx512_vnni'."""
    return ','.join((torch.backends.cpu.get_cpu_capability(), ) + tuple(sorted(_CPU_INT8_FLAGS)))


def has_fast_int8_cpu() -> bool:
    """Whether ``torch._int_mm`` has a fast (VNNI/AMX) kernel on this CPU."""
    return bool(_CPU_INT8_FLAGS)


_AUTO_BACKEND: Optional[str] = None  # set by int8_matmul_backend


@contextlib.contextmanager
def int8_matmul_backend(backend: str) -> Iterator[None]:
    """``backend='auto'`` stands for ``backend`` inside the block (restored after it).

    E.g. ``'int_mm'`` on a CPU without VNNI, to trace the integer GEMMs that a VNNI CPU or a
    GPU runs (torch's reference int8 kernel computes them there: same results, slowly).
    """
    global _AUTO_BACKEND
    if backend not in BACKENDS[1:]:
        raise ValueError(f'backend must be one of {BACKENDS[1:]}, but got {backend!r}')
    old, _AUTO_BACKEND = _AUTO_BACKEND, backend
    try:
        yield
    finally:
        _AUTO_BACKEND = old


def resolve_backend(device: torch.device, backend: str = 'auto') -> str:
    """The backend ``'auto'`` stands for on ``device`` (see module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, but got {backend!r}')
    if backend != 'auto':
        return backend
    if _AUTO_BACKEND is not None:
        return _AUTO_BACKEND
    if device.type == 'cuda' or (device.type == 'cpu' and has_fast_int8_cpu()):
        return 'int_mm'
    return 'float_exact'


def gemm_left_operand(a: Tensor, backend: str = 'auto') -> Tensor:
    """``a`` (Tensor[M, K], int8) as :func:`int8_matmul` takes it as its left operand without a
    copy per call: row-major where oneDNN's integer GEMM runs on CPU (it would copy any other
    layout each call), as it is for the float-exact GEMMs (any strides). For a left operand of
    many GEMMs."""
    if a.device.type == 'cpu' and resolve_backend(a.device, backend) == 'int_mm':
        return a.contiguous()
    return a


def _int_mm_padded(a: Tensor, b: Tensor) -> Tensor:
    """``torch._int_mm`` with the CUDA shape and layout rules met (exact).

    On CUDA: M > 16 and K, N multiples of 8 (zero padding), ``a`` row-major and ``b``
    column-major. cuBLASLt's INT8 tensor-core kernels take only that ("TN") layout; with a
    row-major ``b`` the call fails or runs a generic kernel many times slower.
    """
    m, k = a.shape
    n = b.shape[1]
    if a.device.type != 'cuda':
        return torch._int_mm(a, b)
    pad_m, pad_k, pad_n = max(17 - m, 0), -k % 8, -n % 8
    if pad_m or pad_k:
        a = torch.nn.functional.pad(a, (0, pad_k, 0, pad_m))
    if pad_k or pad_n:
        b = torch.nn.functional.pad(b, (0, pad_n, 0, pad_k))
    a = a.contiguous()
    if b.stride(0) != 1 or b.stride(1) != b.shape[0]:  # not column-major
        b = b.t().contiguous().t()
    try:
        return torch._int_mm(a, b)[:m, :n]
    except RuntimeError as e:
        if 'CUBLAS_STATUS_NOT_SUPPORTED' not in str(e):
            raise
    # Shapes cuBLASLt has no INT8 kernel for: float64 is exact for any K here
    # (|sum| < 2**17 * 127**2 < 2**53) and is never TF32.
    _warn_unsupported_int_mm(a.shape, b.shape)
    return (a[:m, :k].double() @ b[:k, :n].double()).to(torch.int32)


_WARNED_SHAPES: set = set()


def _warn_unsupported_int_mm(a_shape, b_shape) -> None:
    key = (tuple(a_shape), tuple(b_shape))
    if key not in _WARNED_SHAPES:
        _WARNED_SHAPES.add(key)
        warnings.warn(f'torch._int_mm has no cuBLASLt kernel for {tuple(a_shape)} @ '
                      f'{tuple(b_shape)}; this GEMM runs in float64 (exact, slower)')


def _float_exact_mm(a: Tensor, b: Tensor) -> Tensor:
    """int32 ``a @ b`` computed by float32 GEMMs over K chunks that are exact."""
    out: Optional[Tensor] = None
    for k0 in range(0, a.shape[1], MAX_FLOAT_EXACT_K):
        part = a[:, k0:k0 + MAX_FLOAT_EXACT_K].float() @ b[k0:k0 + MAX_FLOAT_EXACT_K].float()
        part = part.to(torch.int32)  # exact: |part| < 2**24
        out = part if out is None else out.add_(part)
    return out


def int8_matmul(a: Tensor, b: Tensor, backend: str = 'auto',
                out: Optional[Tensor] = None) -> Tensor:
    """Exact integer product of two int8 matrices.

    Args:
        a (Tensor[M, K], int8): Left operand (codes in [-127, 127]).
        b (Tensor[K, N], int8): Right operand (codes in [-127, 127]).
        backend (str): 'auto', 'int_mm' or 'float_exact'. Defaults to 'auto'.
        out (Tensor[M, N], int32, optional): Written with the result (K <= :data:`MAX_CHUNK_K`
            only); on CPU ``torch._int_mm`` writes it directly, with no copy.

    Returns:
        Tensor[M, N]: int32 if K <= :data:`MAX_CHUNK_K` (cannot overflow), else int64
        (int32 chunk results added in int64); ``out`` if given.
    """
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise TypeError(f'int8_matmul operands must be int8, but got {a.dtype} and {b.dtype}')
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f'int8_matmul needs [M, K] @ [K, N], but got {tuple(a.shape)} @ '
                         f'{tuple(b.shape)}')
    m, k = a.shape
    n = b.shape[1]
    if out is not None and (out.dtype != torch.int32 or tuple(out.shape) != (m, n)
                            or k > MAX_CHUNK_K):
        raise ValueError(f'int8_matmul: out must be int32 of shape {(m, n)} and K <= '
                         f'{MAX_CHUNK_K}, but got {out.dtype} {tuple(out.shape)}, K = {k}')
    if m == 0 or n == 0 or k == 0:
        zeros = torch.zeros(m, n, dtype=torch.int32, device=a.device)
        return zeros if out is None else out.copy_(zeros)
    use_int_mm = resolve_backend(a.device, backend) == 'int_mm'
    if use_int_mm and a.device.type == 'cpu':
        # oneDNN takes row-major operands (b also column-major); any other strides fall to a
        # reference loop that is orders of magnitude slower.
        a = a.contiguous()
        b = b if b.t().is_contiguous() else b.contiguous()
        if out is not None:
            return torch._int_mm(a, b, out=out)
    mm = _int_mm_padded if use_int_mm else _float_exact_mm
    if k <= MAX_CHUNK_K:
        return mm(a, b) if out is None else out.copy_(mm(a, b))
    out = torch.zeros(m, n, dtype=torch.int64, device=a.device)
    for k0 in range(0, k, MAX_CHUNK_K):
        out += mm(a[:, k0:k0 + MAX_CHUNK_K], b[k0:k0 + MAX_CHUNK_K])
    return out


def int8_matmul_reference(a: Tensor, b: Tensor) -> Tensor:
    """int64 ``a @ b`` in plain integer arithmetic (slow; for tests)."""
    return a.long() @ b.long() if a.device.type == 'cpu' else (a.double() @ b.double()).long()
