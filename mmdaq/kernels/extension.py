"""Loading of the compiled kernels ``mmdaq._ext``, and which of their ops exist per device.

Importing mmdaq never requires the extension: the pure-PyTorch reference paths
work without it. The first call of a compiled kernel raises
:class:`ExtensionNotBuiltError`, which says why the import failed and how to
build it.
"""
import importlib
import warnings
from types import ModuleType
from typing import Dict, Optional, Tuple

import torch

_BUILD_HINT = ('Build it from the repository root with `make install` (or `pip install -e . '
               '--no-build-isolation` in the environment that has torch), then restart Python.')

_module: Optional[ModuleType] = None
_error: Optional[BaseException] = None
_tried = False


class ExtensionNotBuiltError(RuntimeError):
    """The compiled extension ``mmdaq._ext`` is missing or failed to load."""


def _try_load() -> Optional[ModuleType]:
    global _module, _error, _tried
    if not _tried:
        _tried = True
        try:
            _module = importlib.import_module('mmdaq._ext')
        except ImportError as e:  # missing .so, or built against another torch
            _error = e
    return _module


def is_extension_available() -> bool:
    """Whether ``mmdaq._ext`` is built and loads (its ops are then in ``torch.ops.mmdaq``)."""
    return _try_load() is not None


def require_extension(op_name: str) -> ModuleType:
    """Return ``mmdaq._ext`` or raise a clear error naming ``op_name`` and the fix.

    Args:
        op_name (str): The kernel the caller is about to run, for the message.

    Raises:
        ExtensionNotBuiltError: The extension is missing or failed to load.
    """
    module = _try_load()
    if module is None:
        raise ExtensionNotBuiltError(
            f'mmdaq kernel {op_name!r} needs the compiled extension mmdaq._ext, which could not '
            f'be imported ({type(_error).__name__}: {_error}). {_BUILD_HINT}')
    return module


def extension_status() -> str:
    """One line for logs: whether the extension loaded, and with which devices."""
    module = _try_load()
    if module is None:
        return f'mmdaq._ext not available: {_error}'
    devices = 'CPU+CUDA' if getattr(module, 'with_cuda', False) else 'CPU'
    return f'mmdaq._ext loaded ({devices} kernels)'


def register_fake_if_built(op_name: str):
    """``torch.library.register_fake(op_name)`` when the extension has the op.

    Without the extension the op's schema is not defined; the decorated fake is then
    returned unregistered, and the op's public wrapper raises on first use instead. An
    extension built from older sources, without the op, gets a warning that says to rebuild
    (the op's wrapper then takes its reference path or raises, as without the extension).
    """
    def decorator(fn):
        if is_extension_available():
            if compiled_op_available(op_name.split('::', 1)[1]):
                torch.library.register_fake(op_name)(fn)
            else:
                warnings.warn(f'mmdaq._ext has no op {op_name}: it was built from older '
                              f'sources. {_BUILD_HINT}')
        return fn
    return decorator


_COMPILED_OPS: Dict[Tuple[str, Optional[str]], bool] = {}
_KERNEL_DEVICE_TYPES = {'cpu': 'CPU', 'cuda': 'CUDA'}


def compiled_op_available(name: str, device: Optional[torch.device] = None) -> bool:
    """Whether ``torch.ops.mmdaq.<name>`` exists (registered by importing mmdaq._ext if built).

    Args:
        name (str): Op name in the ``mmdaq`` namespace.
        device (torch.device, optional): Also require a kernel for this device's type (the
            extension built without CUDA has CPU kernels only). Defaults to None.

    The answer is cached per op and device type: it cannot change once the extension is loaded
    or not.
    """
    if device is not None:
        # The hot path (a call per kernel launch): a torch.device's type read, not a new device.
        device = device.type if isinstance(device, torch.device) else torch.device(device).type
    key = (name, device)
    found = _COMPILED_OPS.get(key)
    if found is None:
        _try_load()
        try:
            getattr(torch.ops.mmdaq, name)
            found = True
        except (AttributeError, RuntimeError):
            found = False
        if found and device is not None:
            dispatch_key = _KERNEL_DEVICE_TYPES.get(device)
            found = dispatch_key is not None and \
                torch._C._dispatch_has_kernel_for_dispatch_key(f'mmdaq::{name}', dispatch_key)
        _COMPILED_OPS[key] = found
    return found
