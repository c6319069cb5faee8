"""Pure quantization math of mmdaq: quantizers, statistics and clipping rules (torch only)."""
from .clip_strategies import (CLIP_STRATEGIES, ClipResult, ClipStrategy, get_clip_strategy,
                              max_clip, register_clip_strategy)
from .clipping import MCSConfig, magnitude_aware_clip, magnitude_weighted_error, solve_optimal_clip
from .direction_sensitive import DSGCConfig, cosine_distance, dclrs_factor, direction_sensitive_clip
from .distribution import ChannelStats, channel_major, channel_statistics, classify_channels
from .lowbit import LowBitConfig
from .quantize import abs_max, dequantize, fake_quantize, max_code, quantize
from .shift_quant import ShiftQuantResult, shift_quantize, slice_shifts
from .shift_scheme import ShiftQuantScheme

__all__ = [
    'CLIP_STRATEGIES', 'ChannelStats', 'DSGCConfig', 'cosine_distance', 'dclrs_factor',
    'direction_sensitive_clip', 'ClipResult', 'ClipStrategy', 'LowBitConfig', 'MCSConfig',
    'abs_max', 'channel_major', 'channel_statistics', 'classify_channels', 'dequantize',
    'fake_quantize', 'get_clip_strategy', 'magnitude_aware_clip', 'magnitude_weighted_error',
    'max_clip', 'max_code', 'quantize', 'register_clip_strategy', 'solve_optimal_clip',
    'ShiftQuantResult', 'ShiftQuantScheme', 'shift_quantize', 'slice_shifts'
]
