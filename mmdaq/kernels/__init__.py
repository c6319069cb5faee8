"""The compiled kernels ``torch.ops.mmdaq`` (``mmdaq._ext``, from ``csrc/``), one module per op.

Each module holds, per op, its fake (shapes only, for tracing), a thin public wrapper and the
plain-PyTorch reference the kernel is tested against. This package is the bottom layer: it
imports torch and ``mmdaq._ext`` only, and ``mmdaq.quantization`` (the math) and
``mmdaq.ops`` (the layers) call these wrappers, never ``torch.ops.mmdaq`` directly.
"""
from .channel_stats import CUDA_MAX_BINS, grad_channel_stats, grad_channel_stats_applies
from .epilogue import (channels_first_epilogue, int32_to_channels_first,
                       int32_to_channels_first_reference)
from .extension import (ExtensionNotBuiltError, compiled_op_available, extension_status,
                        is_extension_available, require_extension)
from .grad_codes import daq_grad_codes
from .layout import (UINT8_ZERO_POINT, int8_channels_last, int8_channels_last_reference,
                     int8_im2col, int8_transposed_weight, int8_transposed_weight_reference,
                     int32_to_weight, int32_to_weight_reference)
from .quantize import (clip_to_scale, clip_to_scale_reference, philox_uniform, quantize_int8,
                       quantize_int8_applies, quantize_int8_pair, quantize_int8_reference,
                       quantize_int8_stochastic, quantize_per_tensor_int8,
                       quantize_per_tensor_int8_applies)

is_extension_available()  # load mmdaq._ext if built, so its ops exist in torch.ops.mmdaq

__all__ = [
    'CUDA_MAX_BINS', 'ExtensionNotBuiltError', 'UINT8_ZERO_POINT', 'channels_first_epilogue',
    'clip_to_scale', 'clip_to_scale_reference', 'compiled_op_available', 'daq_grad_codes',
    'extension_status', 'grad_channel_stats', 'grad_channel_stats_applies',
    'int32_to_channels_first', 'int32_to_channels_first_reference', 'int32_to_weight',
    'int32_to_weight_reference', 'int8_channels_last', 'int8_channels_last_reference',
    'int8_im2col', 'int8_transposed_weight', 'int8_transposed_weight_reference',
    'is_extension_available', 'philox_uniform', 'quantize_int8',
    'quantize_int8_applies', 'quantize_int8_pair', 'quantize_int8_reference',
    'quantize_int8_stochastic', 'quantize_per_tensor_int8', 'quantize_per_tensor_int8_applies',
    'require_extension'
]
