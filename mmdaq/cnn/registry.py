"""Registration of the DAQ layers in mmengine's root ``MODELS`` registry.

mmcv's ``build_conv_layer``/``build_linear_layer`` and every downstream registry
(mmdet, mmaction2 are children of the root) find them there, so
``conv_cfg=dict(type='DAQConv2d')`` works in any backbone or neck that builds its
convs through mmcv. Without mmengine installed this is a no-op.
"""
import importlib.util

from .daq_layers import DAQConv2d, DAQConv3d, DAQLinear


def register_daq_layers() -> bool:
    """Register the layers (idempotent). Returns False when mmengine is not installed."""
    if importlib.util.find_spec('mmengine') is None:
        return False
    from mmengine.registry import MODELS
    for cls in (DAQConv2d, DAQConv3d, DAQLinear):
        if MODELS.get(cls.__name__) is not cls:
            MODELS.register_module(name=cls.__name__, module=cls)
    return True
