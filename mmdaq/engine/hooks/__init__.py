from .daq_hook import DAQHook
from .zhuang_hooks import ProgressiveQuantHook, StochasticPrecisionHook, ZhuangQuantHook

__all__ = ['DAQHook', 'ProgressiveQuantHook', 'StochasticPrecisionHook', 'ZhuangQuantHook']
