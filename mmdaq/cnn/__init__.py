"""DAQ layers, the model conversion, and their registration in the OpenMMLab registries."""
from .convert import ConversionReport, convert_model, convert_modules, daq_class_for, daq_layers
from .daq_layers import DAQConv2d, DAQConv3d, DAQLayerMixin, DAQLinear
from .l1_norm import L1BatchNorm1d, L1BatchNorm2d, L1BatchNorm3d, integer_l1_statistics
from .lowbit_layers import (LowBitConfig, LowBitConv2d, LowBitConv3d, LowBitLayerMixin,
                            LowBitLinear, convert_lowbit, lowbit_layers, set_precision)
from .registry import register_daq_layers

register_daq_layers()

__all__ = [
    'ConversionReport', 'DAQConv2d', 'DAQConv3d', 'DAQLayerMixin', 'DAQLinear', 'L1BatchNorm1d',
    'L1BatchNorm2d', 'L1BatchNorm3d', 'convert_model', 'convert_modules', 'daq_class_for',
    'daq_layers', 'integer_l1_statistics', 'register_daq_layers', 'LowBitConfig',
    'LowBitConv2d', 'LowBitConv3d', 'LowBitLayerMixin', 'LowBitLinear', 'convert_lowbit',
    'lowbit_layers', 'set_precision'
]
