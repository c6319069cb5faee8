"""Safe loading of mmengine checkpoints on torch >= 2.6.

mmengine 0.10.7 calls ``torch.load(filename, map_location=...)`` without
``weights_only``. Since torch 2.6 that defaults to ``weights_only=True``, which
refuses the few non-tensor objects a resume checkpoint holds (the MessageHub's
``HistoryBuffer`` and the numpy arrays/dtypes inside it), so ``--resume`` fails.

Turning weights-only loading off would let a checkpoint file run arbitrary code.
Instead, :func:`safe_torch_load` first tries torch's own weights-only loader and,
only if that refuses a global, unpickles with :class:`RestrictedUnpickler`, which
resolves nothing but:

* the globals torch's weights-only unpickler allows (tensors, storages, dtypes,
  ``OrderedDict`` ...),
* the exact (module, name) pairs in :data:`SAFE_GLOBALS`, found in real mmengine,
  mmdet and mmaction2 checkpoints,
* ``builtins.getattr``, replaced by :func:`_guarded_getattr`, which only resolves
  numpy dtype classes and the statistics methods of ``HistoryBuffer``.

Anything else raises :class:`UnsafeCheckpointError` before it is called, so a
malicious ``__reduce__`` payload is never executed.
"""
import _compat_pickle
import importlib
import io
import os
import os.path as osp
import pickle
from typing import Any, Callable, Dict, Tuple

import torch

#: (module, name) pairs beyond torch's own allow-list that mmengine checkpoints hold.
SAFE_GLOBALS: Tuple[Tuple[str, str], ...] = (
    ('mmengine.logging.history_buffer', 'HistoryBuffer'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', 'scalar'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('_codecs', 'encode'),
    ('builtins', 'slice'),
    ('builtins', 'tuple'),
    ('builtins', 'list'),
    ('builtins', 'dict'),
    ('builtins', 'int'),
    ('builtins', 'float'),
    ('builtins', 'str'),
    ('builtins', 'bool'),
    ('collections', 'defaultdict'),
)

#: What ``getattr`` may resolve while unpickling: (type of the object, attribute names).
_GETATTR_ALLOWED: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ('mmengine.logging.history_buffer.HistoryBuffer', ('min', 'max', 'mean', 'current')),
)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint refers to a global that is not on the allow-list."""


def _torch_allowed_globals() -> Dict[str, Any]:
    from torch import _weights_only_unpickler
    return _weights_only_unpickler._get_allowed_globals()


def _is_numpy_dtype_class(obj: Any, name: str) -> bool:
    import numpy as np
    return (getattr(obj, '__name__', None) == 'numpy.dtypes' and name.endswith('DType')
            and isinstance(getattr(obj, name, None), type)
            and issubclass(getattr(obj, name), np.dtype))


def _guarded_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to numpy dtype classes and HistoryBuffer statistics."""
    if _is_numpy_dtype_class(obj, name):
        return getattr(obj, name)
    qualname = f'{getattr(obj, "__module__", "")}.{getattr(obj, "__qualname__", "")}'
    for allowed_type, names in _GETATTR_ALLOWED:
        if qualname == allowed_type and name in names:
            return getattr(obj, name)
    raise UnsafeCheckpointError(
        f'checkpoint asks for attribute {name!r} of {obj!r}, which is not allowed; '
        'only numpy dtype classes and HistoryBuffer statistics can be resolved')


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals (see module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names of protocol-2 pickles (torch.save's default), mapped as pickle does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) == ('builtins', 'getattr'):
            return _guarded_getattr
        if module == 'numpy.dtypes' and name.endswith('DType'):
            return getattr(importlib.import_module(module), name)
        allowed = _torch_allowed_globals()
        key = f'{module}.{name}'
        if key in allowed:
            return allowed[key]
        if (module, name) in SAFE_GLOBALS:
            return getattr(importlib.import_module(module), name)
        raise UnsafeCheckpointError(
            f'checkpoint refers to {key}, which mmdaq does not allow to be loaded (it could run '
            'arbitrary code). If the file is trusted and this global is harmless, add '
            f'({module!r}, {name!r}) to mmdaq.compat.safe_checkpoint.SAFE_GLOBALS')


class _RestrictedPickleModule:
    """The ``pickle_module`` handed to ``torch.load``: pickle, with the restricted Unpickler."""
    Unpickler = RestrictedUnpickler
    load = staticmethod(lambda f, **kw: RestrictedUnpickler(f, **kw).load())
    __name__ = 'mmdaq.compat.safe_checkpoint'


def safe_torch_load(f: Any, map_location: Any = None) -> Any:
    """Load a checkpoint without ever executing code from it.

    Args:
        f (str | os.PathLike | file-like): The checkpoint.
        map_location: Same as :func:`torch.load`.

    Returns:
        The unpickled checkpoint (usually a dict).

    Raises:
        UnsafeCheckpointError: The file refers to a global outside the allow-list.
    """
    if not isinstance(f, (str, os.PathLike)):
        data = f.read()
        f = io.BytesIO(data)
    try:
        return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        pass
    if hasattr(f, 'seek'):
        f.seek(0)
    return torch.load(f, map_location=map_location, weights_only=False,
                      pickle_module=_RestrictedPickleModule)


def load_from_local(filename: str, map_location: Any = None) -> Any:
    """mmengine's local checkpoint loader, with :func:`safe_torch_load` inside."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location=map_location)


def patch_mmengine_checkpoint_loader() -> Callable:
    """Make mmengine's ``CheckpointLoader`` load local files through :func:`safe_torch_load`.

    Returns:
        The loader that was registered for local paths before.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    previous = CheckpointLoader._schemes.get('')
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    return previous
