from .daq_hook import DAQHook

__all__ = ['DAQHook']
