"""One way to launch mmdaq's Triton kernels, so that launches can be counted.

Every Triton kernel of mmdaq is started through :func:`launch`; :class:`count_launches` records
the kernel names started inside it (on CUDA, and on CPU tensors under Triton's interpreter,
``TRITON_INTERPRET=1``). The tests use it to hold the fused layer to its launch budget where the
CUDA profiler is not available.
"""
from typing import Any, List

_RECORDERS: List[List[str]] = []


def kernel_name(kernel: Any) -> str:
    """Name of a ``@triton.jit`` (or autotuned) kernel."""
    fn = getattr(kernel, 'fn', kernel)  # an Autotuner / Heuristics wraps the JIT function
    fn = getattr(fn, 'fn', fn)
    return getattr(fn, '__name__', repr(fn))


def launch(kernel: Any, grid: Any, *args: Any, **kwargs: Any) -> Any:
    """``kernel[grid](*args, **kwargs)``, recorded by every active :class:`count_launches`."""
    name = kernel_name(kernel)
    for names in _RECORDERS:
        names.append(name)
    return kernel[grid](*args, **kwargs)


class count_launches:
    """Context manager: the names of the Triton kernels launched inside it, in order.

    Example:
        >>> with count_launches() as names:
        ...     y = layer(x)
        >>> len(names)
    """

    def __enter__(self) -> List[str]:
        self.names: List[str] = []
        _RECORDERS.append(self.names)
        return self.names

    def __exit__(self, *exc: Any) -> None:
        _RECORDERS.remove(self.names)
