"""Fixes that make the pinned OpenMMLab stack work on current Python/PyTorch.

Applied once when :mod:`mmdaq` is imported (so also by a config's
``custom_imports = dict(imports=['mmdaq'])``). Each fix is small, documented in
its module and tested in ``tests/test_compat``:

* :mod:`.mmaction_drn`: ``import mmaction.models`` fails on mmaction2 1.2.0
  because the ``drn`` localizer package is missing from the wheel.
* :mod:`.safe_checkpoint`: mmengine 0.10.7 cannot resume on torch >= 2.6
  (``weights_only`` loading); fixed with an allow-list, never by turning the
  safety off.
* :mod:`.distributed`: mmengine's pytorch launcher and DDP wrapper assume CUDA;
  CPU multi-process training goes through gloo instead.

numpy 2 breaks mmaction2 (``np.Inf``); it is pinned below 2 in the requirements
rather than patched.
"""
import importlib.util

from .mmaction_drn import install_drn_stub
from .safe_checkpoint import UnsafeCheckpointError, safe_torch_load

__all__ = ['apply_compat_fixes', 'install_drn_stub', 'safe_torch_load', 'UnsafeCheckpointError']

_applied = False


def apply_compat_fixes() -> None:
    """Apply every fix whose target package is installed; safe to call repeatedly."""
    global _applied
    if _applied:
        return
    install_drn_stub()
    if importlib.util.find_spec('mmengine') is not None:
        from .safe_checkpoint import patch_mmengine_checkpoint_loader
        patch_mmengine_checkpoint_loader()
    _applied = True
