"""Safe loading of mmengine checkpoints on torch >= 2.6.

mmengine 0.10.7 calls ``torch.load(filename, map_location=...)`` without
``weights_only``. Since torch 2.6 that defaults to ``weights_only=True``, which
refuses the few non-tensor objects a resume checkpoint holds (the MessageHub's
``HistoryBuffer`` and the numpy arrays/dtypes inside it), so ``--resume`` fails.

Turning weights-only loading off would let a checkpoint file run arbitrary code.
Instead, :func:`safe_torch_load` loads with torch's weights-only unpickler and,
for that call only (``torch.serialization.safe_globals``), allows on top of
torch's own allow-list:

* the exact (module, name) pairs in :data:`SAFE_GLOBALS`, found in real mmengine,
  mmdet and mmaction2 checkpoints, and numpy's dtype classes
  (``numpy.dtypes.*DType``, the types of dtype objects);
* ``builtins.getattr``, as :func:`_guarded_getattr`, which only resolves numpy
  dtype classes and the statistics methods of ``HistoryBuffer`` (``getattr``
  itself would reach any attribute of anything allowed).

Anything else raises :class:`UnsafeCheckpointError` before it is called, so a
malicious ``__reduce__`` payload is never executed.
"""
import importlib
import io
import os
import os.path as osp
import pickle
from typing import Any, Callable, List, Tuple

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


def _allowed_globals() -> List[Tuple[Any, str]]:
    """(object, 'module.name') pairs for ``torch.serialization.safe_globals``."""
    allowed = [(_guarded_getattr, 'builtins.getattr')]
    for module, name in SAFE_GLOBALS:
        try:
            allowed.append((getattr(importlib.import_module(module), name), f'{module}.{name}'))
        except (ImportError, AttributeError):  # a package (or numpy layout) not installed here
            continue
    try:
        import numpy as np
        import numpy.dtypes as dtypes
    except ImportError:
        return allowed
    allowed += [(cls, f'numpy.dtypes.{name}') for name, cls in vars(dtypes).items()
                if name.endswith('DType') and isinstance(cls, type) and issubclass(cls, np.dtype)]
    return allowed


def _refusal(f: Any, error: pickle.UnpicklingError) -> UnsafeCheckpointError:
    """What torch's weights-only loader refused, as an :class:`UnsafeCheckpointError`.

    Must run inside the ``safe_globals`` context of the load, so that only the globals outside
    the allow-list are named.
    """
    cause = error.__context__  # torch re-raises the unpickler's error without its type
    while cause is not None:
        if isinstance(cause, UnsafeCheckpointError):  # the guarded getattr refused
            return cause
        cause = cause.__context__
    try:
        if hasattr(f, 'seek'):
            f.seek(0)
        refused = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(f))
    except (ValueError, RuntimeError, OSError):  # not a zip checkpoint: name nothing
        refused = []
    if not refused:
        return UnsafeCheckpointError(f'checkpoint could not be loaded safely: {error}')
    pairs = ', '.join(repr(tuple(key.rsplit('.', 1))) for key in refused)
    return UnsafeCheckpointError(
        f'checkpoint refers to {", ".join(refused)}, which mmdaq does not allow to be loaded (it '
        'could run arbitrary code). If the file is trusted and this global is harmless, add '
        f'{pairs} to mmdaq.compat.safe_checkpoint.SAFE_GLOBALS')


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
        f = io.BytesIO(f.read())  # read again to name what a refused load refers to
    with torch.serialization.safe_globals(_allowed_globals()):
        try:
            return torch.load(f, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            refusal = _refusal(f, e)
    raise refusal


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
