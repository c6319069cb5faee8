"""mmengine integration: DAQHook, the runner helpers of tools/, the stock-model builder."""
from .hooks import DAQHook

__all__ = ['DAQHook']
