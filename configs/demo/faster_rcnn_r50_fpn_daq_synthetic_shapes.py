# The FP32 demo (same data, seed and schedule) trained with DAQ INT8: `make demo` runs both.
# The FP32 config already has `custom_imports`, and mmengine refuses a key defined by two
# `_base_` files, so the hook of `../_base_/daq.py` is added here directly.
_base_ = './faster_rcnn_r50_fpn_synthetic_shapes.py'
custom_hooks = [dict(type='DAQHook', method='daq')]
