"""Per-shape choice between INT8 convolution kernels that give the same floats, by measurement.

On CPUs with VNNI both the GEMM path (im2col + ``torch._int_mm`` + fused epilogue) and
oneDNN's convolution (:mod:`.onednn_conv`) are exact and return bit-identical results, but
which is faster depends on the shape: oneDNN avoids im2col and the layout passes, while it
re-packs the weight on every call (deep layers at small batches lose). Like
``torch.backends.cudnn.benchmark``, the first call of a shape times each kernel (one warm-up
run, then the best of :data:`TIMED_RUNS`) and keeps the fastest for later calls.
Since the kernels agree bit for bit, the choice changes speed only, never the training run.

``MMDAQ_CPU_CONV``: ``auto`` (default, measured), ``onednn`` or ``gemm`` (forced; ``onednn``
falls back to ``gemm`` where oneDNN does not apply).
"""
import contextlib
import os
import time
from typing import Callable, Dict, Hashable, Iterator, Mapping, Tuple

from torch import Tensor

#: Timed runs per kernel on a shape's first call (after one warm-up run).
TIMED_RUNS = 2
MODES = ('auto', 'onednn', 'gemm')

_choices: Dict[Hashable, str] = {}
_timings: Dict[Hashable, Dict[str, float]] = {}


def cpu_conv_mode() -> str:
    """``MMDAQ_CPU_CONV`` (read on every call, so tests and benchmarks can switch it)."""
    mode = os.environ.get('MMDAQ_CPU_CONV', 'auto')
    if mode not in MODES:
        raise ValueError(f'MMDAQ_CPU_CONV must be one of {MODES}, but got {mode!r}')
    return mode


@contextlib.contextmanager
def cpu_conv_kernel(mode: str) -> Iterator[None]:
    """``MMDAQ_CPU_CONV=mode`` inside the block (restored after it)."""
    if mode not in MODES:
        raise ValueError(f'the CPU conv kernel must be one of {MODES}, but got {mode!r}')
    old = os.environ.get('MMDAQ_CPU_CONV')
    os.environ['MMDAQ_CPU_CONV'] = mode
    try:
        yield
    finally:
        if old is None:
            del os.environ['MMDAQ_CPU_CONV']
        else:
            os.environ['MMDAQ_CPU_CONV'] = old


def shape_bucket(n: int) -> int:
    """Power-of-two bucket of a size (position counts vary with image sizes in detection)."""
    return max(int(n), 1).bit_length()


def fastest(key: Hashable, kernels: Mapping[str, Callable[[], Tensor]]) -> Tensor:
    """Run the kernel chosen for ``key``; on the first call of ``key``, time them all.

    Args:
        key: What identifies a shape (kind of GEMM, channels, kernel, bucket of positions...).
        kernels: name -> zero-argument function, all returning the same tensor.

    Returns:
        The chosen kernel's result.
    """
    name = _choices.get(key)
    if name is not None and name in kernels:
        return kernels[name]()
    out = None
    timings = {}
    for name, run in kernels.items():
        out = run()  # warm-up (oneDNN creates its primitive on the first call)
        best = float('inf')
        for _ in range(TIMED_RUNS):
            t0 = time.perf_counter()
            out = run()
            best = min(best, time.perf_counter() - t0)
        timings[name] = best
    _choices[key] = min(timings, key=timings.get)
    _timings[key] = timings
    return out


def autotune_choices() -> Dict[Hashable, Tuple[str, Dict[str, float]]]:
    """key -> (chosen kernel, {kernel: best seconds}) of the shapes measured so far."""
    return {k: (_choices[k], dict(_timings[k])) for k in _choices}


def reset_autotune() -> None:
    """Forget every choice (the next call of each shape measures again)."""
    _choices.clear()
    _timings.clear()
