"""Autograd functions and ``torch.library`` ops (``torch.ops.mmdaq``) of the INT8 layers."""
from .channel_stats import grad_channel_stats
from .extension import (ExtensionNotBuiltError, extension_status, is_extension_available,
                        require_extension)
from .quantize import quantize_int8, quantize_int8_reference

is_extension_available()  # load mmdaq._ext if built, so its ops exist in torch.ops.mmdaq

__all__ = [
    'ExtensionNotBuiltError', 'extension_status', 'grad_channel_stats', 'is_extension_available',
    'require_extension', 'quantize_int8', 'quantize_int8_reference'
]
