from .daq_hook import DAQHook
from .daq_stats_hook import DAQStatsHook
from .zhuang_hooks import ProgressiveQuantHook, StochasticPrecisionHook, ZhuangQuantHook

__all__ = [
    'DAQHook', 'DAQStatsHook', 'ProgressiveQuantHook', 'StochasticPrecisionHook',
    'ZhuangQuantHook'
]
