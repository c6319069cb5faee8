"""Gradient capture and quantization-error analysis (no OpenMMLab imports)."""
from .capture import GradientCapture, LayerRecord
from .quant_error import layer_geometry, layer_gradient_errors

__all__ = ['GradientCapture', 'LayerRecord', 'layer_geometry', 'layer_gradient_errors']
