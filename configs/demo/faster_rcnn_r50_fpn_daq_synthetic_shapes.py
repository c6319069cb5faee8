# The FP32 demo (same data, seed and schedule) trained with DAQ INT8: `make demo` runs both.
_base_ = ['./faster_rcnn_r50_fpn_synthetic_shapes.py', '../_base_/daq.py']
