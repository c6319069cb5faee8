# The FP32 video demo (same data, seed and schedule) trained with DAQ INT8: `make demo-video`.
# The hook of `../_base_/daq.py`, added directly (the FP32 config has `custom_imports` already).
_base_ = './tsn_r18_synthetic_clips.py'
custom_hooks = [dict(type='DAQHook', method='daq')]
