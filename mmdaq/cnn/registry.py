"""Registration of the DAQ layers and L1 norms in mmengine's root ``MODELS`` registry.

mmcv's ``build_conv_layer``/``build_linear_layer`` and every downstream registry
(mmdet, mmaction2 are children of the root) find them there, so
``conv_cfg=dict(type='DAQConv2d')`` works in any backbone or neck that builds its
convs through mmcv. The L1 batch norms are registered under their class names and, as
mmcv does for BatchNorm (``BN``, ``BN1d``, ``BN3d``), under ``L1BN`` (2d), ``L1BN1d``,
``L1BN2d`` and ``L1BN3d``, so ``norm_cfg=dict(type='L1BN')`` selects them in any backbone that
builds its norms with ``mmcv.cnn.build_norm_layer``. Without mmengine installed this is a no-op.
"""
import importlib.util

from .daq_layers import DAQConv2d, DAQConv3d, DAQLinear
from .l1_norm import L1BatchNorm1d, L1BatchNorm2d, L1BatchNorm3d

#: Registry names -> L1 norm classes.
L1_NORM_NAMES = {
    'L1BN': L1BatchNorm2d, 'L1BN1d': L1BatchNorm1d, 'L1BN2d': L1BatchNorm2d,
    'L1BN3d': L1BatchNorm3d, 'L1BatchNorm1d': L1BatchNorm1d, 'L1BatchNorm2d': L1BatchNorm2d,
    'L1BatchNorm3d': L1BatchNorm3d
}


def register_daq_layers() -> bool:
    """Register the layers and norms (idempotent). Returns False when mmengine is not installed."""
    if importlib.util.find_spec('mmengine') is None:
        return False
    from mmengine.registry import MODELS
    for cls in (DAQConv2d, DAQConv3d, DAQLinear):
        if MODELS.get(cls.__name__) is not cls:
            MODELS.register_module(name=cls.__name__, module=cls)
    for name, cls in L1_NORM_NAMES.items():
        if MODELS.get(name) is not cls:
            MODELS.register_module(name=name, module=cls)
    return True
