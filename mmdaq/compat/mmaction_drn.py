"""Stand-in for ``mmaction.models.localizers.drn``, missing from the mmaction2 1.2.0 wheel.

``mmaction/models/localizers/__init__.py`` imports ``.drn.drn.DRN``, but the
package directory is not shipped, so ``import mmaction.models`` fails. DRN is a
temporal-grounding localizer mmdaq does not use; registering empty modules with
``DRN = None`` lets the rest of ``mmaction.models`` import. The stand-in is only
installed when the real module is absent.
"""
import importlib.util
import os.path as osp
import sys
import types

_DRN = 'mmaction.models.localizers.drn'


def _mmaction_ships_drn() -> bool:
    spec = importlib.util.find_spec('mmaction')
    roots = list(spec.submodule_search_locations or []) if spec else []
    return any(osp.isdir(osp.join(root, 'models', 'localizers', 'drn')) for root in roots)


def install_drn_stub() -> bool:
    """Register the stand-in modules if mmaction2 is installed without them.

    Returns:
        bool: Whether the stand-in was installed (False if mmaction2 is absent or complete).
    """
    if _DRN in sys.modules or importlib.util.find_spec('mmaction') is None:
        return False
    if _mmaction_ships_drn():
        return False
    package = types.ModuleType(_DRN)
    package.__path__ = []  # a package, so that `from .drn import DRN` resolves the submodule
    module = types.ModuleType(f'{_DRN}.drn')
    module.DRN = None
    package.drn = module
    sys.modules[_DRN] = package
    sys.modules[f'{_DRN}.drn'] = module
    return True
