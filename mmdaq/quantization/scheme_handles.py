"""Int handles of quantization schemes, for custom ops (whose arguments cannot be objects).

A scheme registers itself when created (and when copied or unpickled); a table holds it
weakly, so a handle never keeps a layer's scheme alive.
"""
import weakref
from typing import Any

_LIVE_SCHEMES: 'weakref.WeakValueDictionary[int, Any]' = weakref.WeakValueDictionary()


def register_scheme_handle(scheme: Any) -> int:
    """Register ``scheme`` and return its handle (``id(scheme)``: unique while it lives)."""
    handle = id(scheme)
    _LIVE_SCHEMES[handle] = scheme
    return handle


def scheme_from_handle(handle: int) -> Any:
    """The scheme registered under ``handle``.

    Raises:
        RuntimeError: No live scheme has this handle.
    """
    scheme = _LIVE_SCHEMES.get(handle)
    if scheme is None:
        raise RuntimeError(f'mmdaq: no live quantization scheme has handle {handle}; the layer '
                           'that owned it was deleted')
    return scheme
