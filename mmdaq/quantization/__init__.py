"""Pure quantization math of mmdaq: quantizers, statistics and clipping rules (torch only)."""
from .clipping import (ClipResult, MCSConfig, magnitude_aware_clip, magnitude_weighted_error,
                       max_clip, solve_optimal_clip)
from .direction_sensitive import DSGCConfig, cosine_distance, dclrs_factor, direction_sensitive_clip
from .distribution import ChannelStats, channel_major, channel_statistics, classify_channels
from .lowbit import LowBitConfig
from .quantize import abs_max, dequantize, fake_quantize, max_code, quantize
from .shift_quant import ShiftQuantResult, shift_quantize, slice_shifts
from .shift_scheme import ShiftQuantScheme

__all__ = [
    'ChannelStats', 'ClipResult', 'DSGCConfig', 'LowBitConfig', 'MCSConfig', 'ShiftQuantResult',
    'ShiftQuantScheme', 'abs_max', 'channel_major', 'channel_statistics', 'classify_channels',
    'cosine_distance', 'dclrs_factor', 'dequantize', 'direction_sensitive_clip', 'fake_quantize',
    'magnitude_aware_clip', 'magnitude_weighted_error', 'max_clip', 'max_code', 'quantize',
    'shift_quantize', 'slice_shifts', 'solve_optimal_clip'
]
