# The DAQ twin of tsn_r18_synthetic_clips_finetune.py: the same continuation with the
# convolutions and the classifier trained in INT8 (DAQHook converts them when training starts;
# the FP32 checkpoint loads first, strictly, into the float layers).
_base_ = './tsn_r18_synthetic_clips_finetune.py'

custom_hooks = [dict(type='DAQHook', method='daq')]
