"""The quantized layers, the model conversion, and their registration in the OpenMMLab
registries."""
from .convert import ConversionReport, convert_model, convert_modules, daq_class_for, daq_layers
from .daq_layers import DAQConv2d, DAQConv3d, DAQLayerMixin, DAQLinear
from .l1_norm import L1BatchNorm1d, L1BatchNorm2d, L1BatchNorm3d, integer_l1_statistics
from .layer_selection import DEFAULT_FP32_HEADS, LayerSelection, first_conv, is_prediction_head
from .lowbit_layers import (LowBitConv2d, LowBitConv3d, LowBitLayerMixin, LowBitLinear,
                            lowbit_layers, set_precision)
from .registry import register_daq_layers

register_daq_layers()

__all__ = [
    'ConversionReport', 'DAQConv2d', 'DAQConv3d', 'DAQLayerMixin', 'DAQLinear',
    'DEFAULT_FP32_HEADS', 'L1BatchNorm1d', 'L1BatchNorm2d', 'L1BatchNorm3d', 'LayerSelection',
    'LowBitConv2d', 'LowBitConv3d', 'LowBitLayerMixin', 'LowBitLinear', 'convert_model',
    'convert_modules', 'daq_class_for', 'daq_layers', 'first_conv', 'integer_l1_statistics',
    'is_prediction_head', 'lowbit_layers', 'register_daq_layers', 'set_precision'
]
