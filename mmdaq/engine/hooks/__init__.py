from .daq_hook import DAQHook
from .daq_stats_hook import DAQStatsHook

__all__ = ['DAQHook', 'DAQStatsHook']
