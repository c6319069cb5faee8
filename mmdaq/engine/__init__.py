"""mmengine integration: DAQHook, DAQStatsHook, runner helpers of tools/, stock-model builder."""
from .hooks import DAQHook, DAQStatsHook

__all__ = ['DAQHook', 'DAQStatsHook']
