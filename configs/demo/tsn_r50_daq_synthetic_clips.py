# The FP32 video demo (same data, seed and schedule) trained with DAQ INT8: `make demo-video`.
_base_ = ['./tsn_r50_synthetic_clips.py', '../_base_/daq.py']
